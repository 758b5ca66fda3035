"""The main job: every stage of a zoo in order, each idempotent, with per-stage wall time."""

import subprocess
import sys
import time

from zoo.config import population_setting
from zoo.slurm.items import slurm_settings
from zoo.summary import cell_table, status_counts
from zoo.sweep import cell_configs
from zoo.train.grouping import train_cells
from zoo.train.rundir import run_dir


def stages(apps) -> list[tuple[str, list[str]]]:
    """After training, in order; each CLI takes the same overrides as `zoo-train -m`."""
    return [("landscape", ["zoo.cli.landscape"]),
            ("phases", ["zoo.cli.phases"]),
            *((f"apply {app}", ["zoo.cli.apply", f"app={app}"]) for app in apps),
            ("pack", ["zoo.cli.pack"]),
            ("verify", ["zoo.cli.pack", "verify"]),
            ("hdf5", ["zoo.cli.pack", "hdf5"])]


def run_stage(name: str, argv: list[str]) -> None:
    """Run one stage's CLI as a user would; raises if it fails."""
    print(f"\n== {name}: {' '.join(argv)}", flush=True)
    subprocess.run([sys.executable, "-m", *argv], check=True)


def run_pipeline(overrides: list[str]) -> int:
    """train → landscape → phases → apply (`apply.apps`) → pack → verify → hdf5 for the zoo the
    overrides select; exit code 1 if any model failed."""
    timings = {}
    start = time.perf_counter()
    cfgs = cell_configs(overrides)
    todo = [cfg for cfg in cfgs if not run_dir(cfg).is_done()]
    print(f"zoo {cfgs[0].zoo.name}: {len(cfgs)} models, {len(todo)} to train "
          f"(runs in {run_dir(cfgs[0]).path.parent})", flush=True)
    if todo and population_setting(cfgs[0]) != "off" and slurm_settings(overrides) is None:
        # Same-shaped cells as vectorized populations: same run dirs, ~6x faster on the demo.
        print("\n== train: populations (runtime.population=off trains one by one)", flush=True)
        train_cells(cfgs)
    elif todo:
        run_stage("train", ["zoo.cli.train", "-m", *overrides])
    timings["train"] = time.perf_counter() - start

    print(f"\n== summary\n\n{cell_table(cfgs)}")
    counts = status_counts(cfgs)
    for stage, argv in stages(cfgs[0].apply.apps):
        start = time.perf_counter()
        run_stage(stage, [*argv, *overrides])
        timings[stage] = time.perf_counter() - start
    print("\nstatus:", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print("wall time per stage:", ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    if counts["failed"]:
        print(f"{counts['failed']} model(s) failed: see error.log in their run dirs; rerun to retry them.")
    return 1 if counts["failed"] or counts["missing"] or counts["running"] else 0
