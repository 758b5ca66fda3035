"""zoo-plan: its figures come from the shipped cost table exactly as torch measures them, it prints
what the SLURM launcher submits (checked against the launcher itself, with a stand-in `sbatch`),
and it runs without importing torch."""

import json
import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from zoo import plan_costs
from zoo.plan import format_plan, plan_zoo
from zoo.train import grouping

HEAVY = ("torch", "lightning")


def remeasure(kind: str, key: str):
    """The figure `kind` of a table key, measured again with torch."""
    if kind == "params":
        return grouping._n_params.__wrapped__(key)
    if kind == "layer_sizes":
        model, sample, dtype = json.loads(key)
        return list(grouping._layer_sizes.__wrapped__(json.dumps(model, sort_keys=True), tuple(sample), dtype))
    from zoo import plan_measure

    model, *args = json.loads(key)
    args = [tuple((tuple(shape), dtype) for shape, dtype in a) if isinstance(a, list) else a for a in args]
    return json.loads(json.dumps(getattr(plan_measure, kind)(json.dumps(model, sort_keys=True), *args)))


def test_shipped_table_holds_what_torch_measures():
    table = json.loads(plan_costs.SHIPPED.read_text())
    assert set(table) == {"size", "step", "forward_flops", "params", "layer_sizes"}
    rng = random.Random(0)
    for kind, figures in table.items():
        small = sorted(figures, key=len)[: max(4, len(figures) // 4)]  # the cheaper to measure
        for key in rng.sample(small, 1):
            assert remeasure(kind, key) == figures[key], (kind, key)


def cell_figures(plan) -> list[tuple]:
    return [
        (c.cfg.id, c.params, c.weight_bytes, c.flops, c.steps, c.fixed_bytes, c.sample_bytes, c.population)
        for c in plan.cells
    ]


@pytest.mark.parametrize(
    "overrides",
    [["zoo=demo"], pytest.param(["zoo=cifar10_resnet18", "cluster=example_gpu"], marks=pytest.mark.slow)],
)
def test_plan_from_the_table_equals_the_plan_measured_with_torch(overrides):
    fast = plan_zoo(overrides)
    with plan_costs.measuring() as measured:
        slow = plan_zoo(overrides)
    assert measured.measured, "nothing was measured"
    assert cell_figures(fast) == cell_figures(slow)
    assert format_plan(fast) == format_plan(slow)


def test_a_figure_the_table_lacks_is_measured_once_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(plan_costs, "_shipped", None)
    monkeypatch.setattr(plan_costs, "_new", {})
    assert plan_costs.figure("size", "mine", lambda: (3, 12)) == [3, 12]
    plan_costs.save()
    assert json.loads((tmp_path / "zoo" / "plan_costs.json").read_text()) == {"size": {"mine": [3, 12]}}
    monkeypatch.setattr(plan_costs, "_shipped", None)  # a new process: read from the user's cache
    assert plan_costs.figure("size", "mine", lambda: pytest.fail("measured again")) == [3, 12]


def test_population_names_are_what_the_trainers_implement():
    from zoo.train.population import mlp, pinn

    assert set(grouping.MLP_ACTIVATIONS) == set(mlp.ACTIVATION_BACKWARD)
    assert set(grouping.PINN_ACTIVATIONS) == set(pinn.ACTIVATIONS)
    assert set(grouping.PINN_OPTIMIZERS) == set(pinn.OPTIMIZERS)


def run(*command: str, **env) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.parametrize("module", ["plan", "status"])
def test_plan_and_status_of_the_demo_import_no_torch(module, tmp_path):
    code = (
        f"import sys\nfrom zoo.cli import {module}\ntry:\n    {module}.main(['zoo=demo', 'paths.root={tmp_path}'])\n"
        f"finally:\n    print('heavy:', *[m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)"
    )
    proc = run(sys.executable, "-c", code, XDG_CACHE_HOME=str(tmp_path / "cache"))
    assert proc.stderr.strip().splitlines()[-1] == "heavy:"


def stand_in(bin_dir, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def slurm_grid(root) -> list[str]:
    """A small demo sweep whose populations fill two arrays of at most 3 tasks."""
    return [
        "zoo=demo",
        "model.width=2,4,64",
        "data.batch_size=32,128",
        f"paths.root={root}",
        "cluster.max_array_size=3",
    ]


def stand_ins(root, max_array_size: int = 1001) -> Path:
    """Stand-ins for SLURM's commands in root/bin: `sbatch` keeps the scripts it is given in
    root/scripts (job ids 0, 1, ...), `squeue` prints root/queue.txt, `scontrol` a MaxArraySize."""
    bin_dir, scripts = root / "bin", root / "scripts"
    bin_dir.mkdir(exist_ok=True), scripts.mkdir(exist_ok=True)
    stand_in(bin_dir, "squeue", f'cat "{root}/queue.txt" 2>/dev/null; exit 0')
    stand_in(bin_dir, "srun", "exit 0")
    stand_in(bin_dir, "scontrol", f'echo "MaxArraySize            = {max_array_size}"')
    stand_in(bin_dir, "sbatch", f'n=$(ls "{scripts}" | wc -l); cp "$1" "{scripts}/$n"; echo "Submitted batch job $n"')
    return bin_dir


def launch(plan, root, max_array_size: int = 1001) -> tuple[list[str], list[list[str]]]:
    """`zoo-train -m <plan's overrides> hydra/launcher=slurm` against `stand_ins`. Returns the scripts
    and array tasks (model ids, from the launcher's records) of this launch."""
    from zoo.slurm import jobs

    bin_dir, scripts = stand_ins(root, max_array_size), root / "scripts"
    before = len(list(scripts.iterdir()))
    run(
        sys.executable,
        "-m",
        "zoo.cli.train",
        "-m",
        *plan.submission.overrides,
        "hydra/launcher=slurm",
        "hydra.launcher.wait=false",
        PATH=f"{bin_dir}:{os.environ['PATH']}",
    )
    submitted = [(scripts / str(i)).read_text() for i in range(before, len(list(scripts.iterdir())))]
    records = [r for r in jobs.read_records(root / "runs" / "demo", "train") if int(r.job_id) >= before]
    return submitted, [task for r in records for task in r.tasks]


def test_plan_prints_what_the_launcher_submits_and_leaves_out_what_it_leaves_out(tmp_path, monkeypatch):
    """The same array tasks, arrays and sbatch scripts as `zoo-train -m ... hydra/launcher=slurm`; on a
    relaunch, after some models are DONE (in their run dirs) and one task of the first array is still
    pending, neither zoo-plan nor the launcher counts those, and the rest is regrouped alike."""
    from zoo.train.rundir import run_dir

    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")  # zoo-plan asks the stand-in squeue
    overrides = slurm_grid(tmp_path)
    fresh = plan_zoo(overrides)
    assert not fresh.done and not fresh.queued and fresh.queue_note is None
    submitted, tasks = launch(fresh, tmp_path)
    assert submitted == fresh.submission.scripts and len(submitted) == 2  # an array of 3 tasks, one job
    assert tasks == fresh.submission.tasks
    text = format_plan(fresh)
    assert "array tasks: 4 in 2 array(s) (MaxArraySize 3): 4 population(s) of 2..4 models" in text
    assert "to submit: 12 models (0 done, 0 held by pending or running SLURM tasks)" in text

    cfgs = {c.cfg.id: c.cfg for c in fresh.cells}
    done = [*fresh.submission.tasks[0], fresh.submission.tasks[1][0]]  # a population and one member of another
    for key in done:
        run = run_dir(cfgs[key])
        run.write_status("ok")
        run.mark_done()
    (tmp_path / "queue.txt").write_text("0|1|COMPLETED|None\n0|2|PENDING|Priority\n")  # job 0: tasks 0-2
    plan = plan_zoo(overrides)
    assert plan.done == set(done) and plan.queued == dict.fromkeys(fresh.submission.tasks[2], "0")
    todo = set(cfgs) - set(done) - set(plan.queued)
    assert todo and sorted(key for task in plan.submission.tasks for key in task) == sorted(todo)
    text = format_plan(plan)
    assert f"to submit: {len(todo)} models ({len(done)} done, {len(plan.queued)} held by pending" in text
    assert f"device-hours of the {len(todo)} to submit" in text
    submitted, tasks = launch(plan, tmp_path)
    assert (submitted, tasks) == (plan.submission.scripts, plan.submission.tasks)

    for key in todo | set(plan.queued):  # all trained: nothing is left to submit
        run_dir(cfgs[key]).mark_done()
    text = format_plan(plan_zoo(overrides))
    assert "array tasks: none (nothing left to submit)" in text and "submits nothing" in text
    assert "device-hours: none left to spend" in text


def test_the_peak_follows_the_cells_precision():
    """example_gpu: 16-bit mixed precision runs on the tensor cores' bf16/fp16 peak, twice TF32's,
    so the FLOP term halves; the per-step overhead and the FLOPs themselves stay."""
    grid = ["zoo=demo", "cluster=example_gpu", "runtime.population=off"]
    fp32, bf16 = (plan_zoo([*grid, f"trainer.precision={p}"]) for p in ("32-true", "bf16-mixed"))
    for a, b in zip(fp32.cells, bf16.cells, strict=True):
        assert (a.flops, a.steps) == (b.flops, b.steps)
        assert b.flops and bf16.flop_hours(b) == pytest.approx(fp32.flop_hours(a) / 2, rel=1e-12)
        assert bf16.hours(b) - bf16.flop_hours(b) == pytest.approx(fp32.hours(a) - fp32.flop_hours(a), rel=1e-12)
    assert "at 156 TFLOP/s for 32-true (cluster.tflops) x MFU 0.3" in format_plan(fp32)
    assert "at 312 TFLOP/s for bf16-mixed (cluster.tflops_16bit) x MFU 0.3" in format_plan(bf16)


def test_a_precision_without_a_peak_is_refused_naming_the_key():
    from zoo.config import ConfigError

    with pytest.raises(ConfigError, match="trainer.precision=64-true.*cluster example_gpu"):
        format_plan(plan_zoo(["zoo=demo", "cluster=example_gpu", "trainer.precision=64-true"]))


def test_the_float32_peak_follows_runtime_tf32():
    """example_gpu: with runtime.tf32=false float32 matmuls and convolutions run in IEEE fp32
    (cluster.tflops_fp32, 19.5 on an A100) instead of TF32 (cluster.tflops, 156)."""
    grid = ["zoo=demo", "cluster=example_gpu", "runtime.population=off"]
    tf32, ieee = (plan_zoo([*grid, f"runtime.tf32={on}"]) for on in ("true", "false"))
    for a, b in zip(tf32.cells, ieee.cells, strict=True):
        assert ieee.flop_hours(b) == pytest.approx(tf32.flop_hours(a) * 156 / 19.5, rel=1e-12)
    assert "at 19.5 TFLOP/s for 32-true (cluster.tflops_fp32) x MFU 0.3" in format_plan(ieee)


def test_plan_splits_arrays_below_the_clusters_max_array_size(tmp_path, monkeypatch):
    """The cluster's MaxArraySize (scontrol) caps the arrays below the profile's, for zoo-plan as for the launcher."""
    monkeypatch.setenv("PATH", f"{stand_ins(tmp_path, max_array_size=3)}:{os.environ['PATH']}")
    plan = plan_zoo([o for o in slurm_grid(tmp_path) if not o.startswith("cluster.max_array_size")])
    assert "array tasks: 4 in 2 array(s) (MaxArraySize 3)" in format_plan(plan)
    assert launch(plan, tmp_path, max_array_size=3) == (plan.submission.scripts, plan.submission.tasks)
