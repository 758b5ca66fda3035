"""The main job: every stage of a zoo in order, each idempotent, with per-stage wall time."""

import subprocess
import sys
import time

from zoo.config import population_setting
from zoo.slurm.items import slurm_settings
from zoo.summary import cell_table, failure_causes, status_counts
from zoo.sweep import cell_configs
from zoo.train.grouping import train_cells
from zoo.train.rundir import run_dir


def stages(apps) -> list[tuple[str, list[str]]]:
    """After training, in order; each CLI takes the same overrides as `zoo-train -m`."""
    return [
        ("landscape", ["zoo.cli.landscape"]),
        ("phases", ["zoo.cli.phases"]),
        *((f"apply {app}", ["zoo.cli.apply", f"app={app}"]) for app in apps),
        ("pack", ["zoo.cli.pack"]),
        ("verify", ["zoo.cli.pack", "verify"]),
        ("hdf5", ["zoo.cli.pack", "hdf5"]),
    ]


def run_stage(name: str, argv: list[str]) -> int:
    """Run one stage's CLI as a user would; returns its exit code."""
    print(f"\n== {name}: {' '.join(argv)}", flush=True)
    return subprocess.run([sys.executable, "-m", *argv]).returncode


def run_pipeline(overrides: list[str]) -> int:
    """train → landscape → phases → apply (`apply.apps`) → pack → verify → hdf5 for the zoo the
    overrides select. Stops at the first stage that fails, or after training when no model
    finished `ok`; exit code 1 then, and also when any model failed (one line per cause)."""
    timings = {}
    start = time.perf_counter()
    cfgs = cell_configs(overrides)
    todo = [cfg for cfg in cfgs if not run_dir(cfg).is_done()]
    print(
        f"zoo {cfgs[0].zoo.name}: {len(cfgs)} models, {len(todo)} to train (runs in {run_dir(cfgs[0]).path.parent})",
        flush=True,
    )
    if todo and population_setting(cfgs[0]) != "off" and slurm_settings(overrides) is None:
        # Same-shaped cells as vectorized populations: same run dirs, ~6x faster on the demo.
        print("\n== train: populations (runtime.population=off trains one by one)", flush=True)
        train_cells(cfgs)
    elif todo:
        run_stage("train", ["zoo.cli.train", "-m", *overrides])  # its exit code says what the counts say
    timings["train"] = time.perf_counter() - start

    print(f"\n== summary\n\n{cell_table(cfgs)}")
    counts, causes = status_counts(cfgs), failure_causes(cfgs)
    if not counts["ok"]:
        print("\nzoo-run: no model of the sweep finished ok: nothing to measure or pack.", *causes, sep="\n")
        return 1
    for stage, argv in stages(cfgs[0].apply.apps):
        start = time.perf_counter()
        code = run_stage(stage, [*argv, *overrides])
        timings[stage] = time.perf_counter() - start
        if code:
            print(
                f"\nzoo-run: stage {stage} failed (exit {code}): fix what it says and rerun zoo-run "
                "(finished work is kept)",
                *causes,
                sep="\n",
            )
            return code
    print("\nstatus:", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print("wall time per stage:", ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    if causes:
        print(*causes, "rerun zoo-run to retry the failed models.", sep="\n")
    return 1 if causes or counts["missing"] or counts["running"] else 0
