"""Zoos on the one-node SLURM test cluster through `hydra/launcher=slurm`: job arrays, preemption and
resume, failed models and resubmission, array splitting (populations: test_slurm_population.py).

Run: bash slurm/testcluster/install.sh && python -m pytest -m slurm tests/test_slurm_launch.py
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import zoo_train
from safetensors.torch import load_file
from slurm_cluster import wait_for

from zoo.apply.stage import apply_items
from zoo.landscape.stage import landscape_items
from zoo.slurm import jobs
from zoo.stage import is_done
from zoo.sweep import cell_configs
from zoo.train.rundir import run_dir

pytestmark = [pytest.mark.slurm, pytest.mark.slow]  # end to end on the real cluster: minutes

# cpus_per_task=1: two tasks at once on the 2-CPU node; poll squeue often.
SLURM = ["hydra/launcher=slurm", "cluster=local", "cluster.cpus_per_task=1", "cluster.poll_s=0.5"]
TINY = ["zoo=demo", "data.n_train=200", "data.batch_size=64", "trainer.max_epochs=2"]
ONE_BY_ONE = "runtime.population=off"  # every model through Hydra's run_job, `group_size` per task


def records(root: Path) -> list[jobs.Record]:
    return jobs.read_records(root / "runs" / "demo", "train")


def zoo_status(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "zoo.cli.status", *args], capture_output=True, text=True, check=True)
    return proc.stdout


def totals(report: str) -> list[str]:
    return next(line.split() for line in report.splitlines() if line.startswith("total"))


def assert_complete(cfg, epochs: int) -> None:
    run = run_dir(cfg)
    assert run.status() == ("ok", "") and run.is_done(), run.path
    assert [r["epoch"] for r in run.metrics()] == list(range(epochs + 1))
    assert max(run.checkpoints()) == epochs


def restarts(cluster, job_id: str) -> int:
    out = cluster.run("scontrol", "-o", "show", "job", job_id).stdout
    return int(out.split("Restarts=")[1].split()[0])


def test_zoo_run_sends_training_then_landscape_as_arrays(slurm_cluster, tmp_path, data_root):
    """zoo-run on SLURM: the grid goes out as one population (one task), the landscape items
    (4 models + 2 seed pairs) as an array (2 per task) once training is done, phases run here,
    the merging app's cells go out as an array, and packing runs here."""
    overrides = [
        *TINY,
        "model.width=4,8",
        "seed=0,1",
        f"paths.root={tmp_path}",
        f"paths.data={data_root}",
        *SLURM,
        "hydra.launcher.group_size=2",
        "landscape.bezier.steps=50",
        "landscape.hessian.n_samples=200",  # a quick landscape
        "apply.apps=[lmc]",
    ]
    proc = subprocess.run([sys.executable, "-m", "zoo.cli.run", *overrides], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert out.index("== train") < out.index("train: 4 models: ok 4") < out.index("== landscape")
    assert (
        out.index("landscape: 6/6 items computed")
        < out.index("== phases")
        < out.index("== apply lmc")
        < out.index("apply-lmc: 2/2 items computed")
        < out.index("lmc: 2 cells, 2 computed now")
        < out.index("== pack")
    )

    cfgs = cell_configs(overrides)
    ids = [cfg.id for cfg in cfgs]
    [train] = records(tmp_path)
    assert train.tasks == [ids]  # widths 4 and 8, padded into one population
    assert slurm_cluster.job_states(train.job_id) == {train.job_id: "COMPLETED"}
    for cfg in cfgs:
        assert_complete(cfg, epochs=2)
    [landscape] = jobs.read_records(tmp_path / "runs" / "demo", "landscape")
    items = landscape_items(cfgs)
    assert sorted(sum(landscape.tasks, [])) == sorted(item.out for item in items) and len(items) == 6
    assert all(map(is_done, items))
    [lmc] = jobs.read_records(tmp_path / "runs" / "demo", "apply-lmc")  # one array task: 2 cells, group_size 2
    assert lmc.tasks == [[item.out for item in apply_items(cfgs, "lmc")]]
    assert (tmp_path / "runs" / "demo" / "phases.csv").exists()
    assert totals(zoo_status(*overrides)) == ["total", "4", "4", "0", "0", "0", "0", "0"]


def test_preempted_and_requeued_task_resumes_with_continuous_metrics(slurm_cluster, tmp_path, data_root):
    """One model is interrupted twice mid-training, as SLURM does it: a preemption (SIGTERM, then
    submitit's USR2: the task requeues itself) and an `scontrol requeue`. It ends with the metrics
    and weights of an uninterrupted run."""
    cell = [
        "zoo=demo",
        "model.width=64",
        "data.batch_size=8",
        "data.n_train=4000",
        "trainer.max_epochs=14",
        "seed=0",
        f"paths.data={data_root}",
        ONE_BY_ONE,
    ]
    reference, errors = tmp_path / "reference", tmp_path / "reference.err"
    with errors.open("w") as err:  # trained here, alongside the SLURM job
        uninterrupted = subprocess.Popen(
            [sys.executable, "-m", "zoo.cli.train", f"paths.root={reference}", *cell],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    zoo_train(tmp_path, "-m", *cell, *SLURM, "hydra.launcher.wait=false")
    [cfg] = cell_configs([f"paths.root={tmp_path}", *cell])
    run = run_dir(cfg)
    job_id = records(tmp_path)[0].job_id

    def epochs() -> int:
        return len(run.metrics())

    wait_for(lambda: epochs() >= 3, 120, "3 epochs")
    slurm_cluster.run("scancel", "--signal=TERM", job_id)  # a preemption: SIGTERM first ...
    time.sleep(1)  # (Lightning would stop at the next batch here if it handled SIGTERM)
    slurm_cluster.run("scancel", "--signal=USR2", job_id)  # ... then the warning signal: requeue
    wait_for(lambda: restarts(slurm_cluster, job_id) == 1, 30, "submitit to requeue the task")
    seen = epochs()
    wait_for(lambda: epochs() >= seen + 2, 120, "the requeued task to train on")
    assert not run.is_done()
    slurm_cluster.run("scontrol", "requeue", job_id)
    assert slurm_cluster.wait(job_id, timeout=180) == {job_id: "COMPLETED"}
    assert restarts(slurm_cluster, job_id) == 2

    assert uninterrupted.wait(timeout=180) == 0, errors.read_text()
    [ref] = cell_configs([f"paths.root={reference}", *cell])
    assert ref.id == cfg.id
    assert_complete(cfg, epochs=14)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(run.metrics()) == strip(run_dir(ref).metrics())
    for epoch, path in run.checkpoints().items():
        ours, theirs = load_file(path), load_file(run_dir(ref).ckpt_path(epoch))
        assert all(ours[k].equal(theirs[k]) for k in theirs), f"weights differ at epoch {epoch}"
    log = records(tmp_path)[0].log(0).with_suffix(".out").read_text()  # the task's stdout
    # SLURM may truncate the log when it requeues (open-mode), so at least the last resume shows.
    assert log.count("resuming from") >= 1


def test_failed_model_is_reported_and_resubmitted_alone(slurm_cluster, tmp_path, data_root):
    # Each seed reads its own data dir (so each is a population of one); seed 2's holds a corrupt file.
    for seed in (0, 1, 2):
        (tmp_path / f"data-s{seed}").mkdir()
        shutil.copy(data_root / "mnist1d.npz", tmp_path / f"data-s{seed}")
    (tmp_path / "data-s2" / "mnist1d.npz").write_bytes(b"not an npz file")
    overrides = [*TINY, "model.width=4", "seed=0,1,2", "paths.data=${paths.root}/data-s${seed}", *SLURM]
    first = zoo_train(tmp_path, "-m", *overrides, check=False)
    cfgs = cell_configs([f"paths.root={tmp_path}", *overrides])
    bad = cfgs[2]
    assert run_dir(bad).status()[0] == "failed"
    assert first.returncode == 1 and "1 model(s) failed: ValueError" in first.stderr  # one line per cause
    assert (first.stdout + first.stderr).count("model(s) failed") == 1, "the failure is reported once"
    assert "zoo-status --failed" in first.stderr.splitlines()[-1]
    for cfg in cfgs[:2]:
        assert_complete(cfg, epochs=2)

    report = zoo_status("--failed", f"paths.root={tmp_path}", *overrides)
    assert totals(report) == ["total", "3", "2", "0", "1", "0", "0", "0"], report
    assert f"  {bad.id}  model.width=4 data.batch_size=64 seed=2: " in report
    assert "pickle" in report  # the reason: numpy refuses the file
    assert report.splitlines()[-1].strip() == shlex.join(["zoo-train", "-m", f"paths.root={tmp_path}", *overrides])

    finished = {cfg.id: run_dir(cfg).metrics_path.stat().st_mtime_ns for cfg in cfgs[:2]}
    shutil.copy(data_root / "mnist1d.npz", tmp_path / "data-s2")  # fix the cause, run the same command
    zoo_train(tmp_path, "-m", *overrides)
    assert [r.tasks for r in records(tmp_path)] == [[[c.id] for c in cfgs], [[bad.id]]]
    assert_complete(bad, epochs=2)
    assert finished == {cfg.id: run_dir(cfg).metrics_path.stat().st_mtime_ns for cfg in cfgs[:2]}


def test_groups_split_into_arrays_below_max_array_size(slurm_cluster_small_arrays, tmp_path, data_root):
    """MaxArraySize=4: 12 models, 2 per task, are 6 tasks in two arrays of 4 and 2, each numbered from 0."""
    overrides = [
        *TINY,
        "model.width=2,4,8,16",
        "seed=0,1,2",
        f"paths.data={data_root}",
        *SLURM,
        "hydra.launcher.group_size=2",
        ONE_BY_ONE,
    ]
    zoo_train(tmp_path, "-m", *overrides)
    cfgs = cell_configs([f"paths.root={tmp_path}", *overrides])
    ids = [cfg.id for cfg in cfgs]
    first, second = records(tmp_path)
    assert first.tasks == [ids[0:2], ids[2:4], ids[4:6], ids[6:8]]
    assert second.tasks == [ids[8:10], ids[10:12]]
    assert slurm_cluster_small_arrays.job_states(second.job_id) == {
        f"{second.job_id}_{i}": "COMPLETED" for i in range(2)
    }
    for cfg in cfgs:
        assert_complete(cfg, epochs=2)
