"""Vectorized populations on SLURM (`hydra/launcher=slurm` with runtime.population=auto): one array
task per population, queued members never submitted twice, a requeued population resumes from its
own last.ckpt, and every member ends as one-by-one training leaves it.

Run: bash slurm/testcluster/install.sh && python -m pytest tests/test_slurm_population.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import SLURM, SLURM_TINY, assert_complete, records, restarts, wait_for, zoo_train
from safetensors.torch import load_file

from zoo.config import task_memory
from zoo.slurm.launcher import array_tasks
from zoo.sweep import cell_configs
from zoo.train.population import population_dir
from zoo.train.rundir import run_dir


def local_sweep(root: Path, *overrides: str) -> subprocess.Popen:
    """A reference sweep trained on this machine, alongside the SLURM jobs (its stderr: <root>.err)."""
    with root.with_suffix(".err").open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "zoo.cli.train", "-m", f"paths.root={root}", *overrides],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def assert_same_model(cfg, ref, exact: bool) -> None:
    """`cfg`'s model has the id, metrics and weights of `ref`'s: weights bitwise if `exact`, else
    (padded members) to float tolerance, as tests/test_population.py checks them; metrics to float
    tolerance (a population sums an epoch's train loss in another order)."""
    assert cfg.id == ref.id
    ours, theirs = run_dir(cfg), run_dir(ref)
    assert len(ours.metrics()) == len(theirs.metrics())
    for x, y in zip(ours.metrics(), theirs.metrics()):
        del x["seconds"], y["seconds"]
        assert x == pytest.approx(y, rel=1e-4, abs=1e-5), cfg.id
    assert ours.checkpoints().keys() == theirs.checkpoints().keys()
    for epoch, path in ours.checkpoints().items():
        a, b = load_file(path), load_file(theirs.ckpt_path(epoch))
        assert a.keys() == b.keys()
        same = torch.equal if exact else lambda u, v: u.shape == v.shape and torch.allclose(u, v, atol=1e-5)
        assert all(same(a[k], b[k]) for k in a), (cfg.id, epoch)


def test_array_tasks_are_populations_then_models_that_train_alone(tmp_path):
    """Cells that can share go out as populations (configs), most expensive first; the others (here:
    gradient clipping) keep the one-by-one path, `group_size` per task in sweep order."""
    cfgs = cell_configs(
        [
            "zoo=demo",
            "model.width=4,8,64",
            "data.batch_size=64",
            "seed=0,1",
            "trainer.gradient_clip_val=null,1",
            f"paths.root={tmp_path}",
        ]
    )
    work = [(cfg.id, (cfg, [f"cell={i}"], 10 + i)) for i, cfg in enumerate(cfgs)]
    tasks = array_tasks(work, group_size=4, memory=task_memory(cfgs[0]))

    shared = [c for c in cfgs if c.trainer.gradient_clip_val is None]
    alone = [i for i, c in enumerate(cfgs) if c.trainer.gradient_clip_val is not None]
    assert (
        [[item for _, item in task] for task in tasks]
        == [
            [c for c in shared if c.model.width == 64],  # unpadded, compute-bound: the more expensive
            [c for c in shared if c.model.width < 64],  # small models, padded to width 8
            *([([f"cell={i}"], 10 + i) for i in alone[j : j + 4]] for j in (0, 4)),
        ]
    )
    assert [key for task in tasks[2:] for key, _ in task] == [cfgs[i].id for i in alone]
    assert task_memory(cfgs[0]) == 4 * 2**30  # cluster=local: mem_gb 4, no GPU


@pytest.mark.slurm
@pytest.mark.slow
def test_sweep_sends_one_task_per_population_and_matches_one_by_one_training(slurm_cluster, tmp_path, data_root):
    """6 models: widths 4 and 8 padded into one population, width 64's seeds another, so 2 tasks. A
    relaunch while they are queued submits nothing; the models end as one-by-one training leaves them."""
    sweep = [*SLURM_TINY, "model.width=4,8,64", "seed=0,1", f"paths.data={data_root}"]
    overrides = [*sweep, *SLURM]
    reference = tmp_path / "reference"
    one_by_one = local_sweep(reference, *sweep, "hydra/launcher=basic", "runtime.population=off")
    held = zoo_train(
        tmp_path, "-m", *overrides, "hydra.launcher.wait=false", "+cluster.additional_parameters.hold=true"
    )  # sbatch --hold: queued until released
    assert "train: 6 to do: 0 already queued, 6 submitted" in held.stdout
    again = zoo_train(tmp_path, "-m", *overrides, "hydra.launcher.wait=false")
    assert "train: 6 to do: 6 already queued, 0 submitted" in again.stdout
    [record] = records(tmp_path)
    slurm_cluster.run("scontrol", "release", record.job_id)
    waited = zoo_train(tmp_path, "-m", *overrides)  # waits for the queued tasks, submits nothing
    # Released, the tiny tasks may finish before this launch has composed its sweep (~5 s): then
    # it finds them done. Either way nothing is submitted again (the records below).
    assert (
        "6 already queued, 0 submitted" in waited.stdout
        and "train: 6 models: ok 6" in waited.stdout
        or "train: 6 models, 6 done" in waited.stdout
    ), waited.stdout

    cfgs = cell_configs([f"paths.root={tmp_path}", *overrides])
    assert records(tmp_path) == [record]
    assert record.tasks == [[c.id for c in cfgs if c.model.width == 64], [c.id for c in cfgs if c.model.width < 64]]
    assert slurm_cluster.job_states(record.job_id) == {f"{record.job_id}_{i}": "COMPLETED" for i in range(2)}
    for cfg in cfgs:
        assert_complete(cfg, epochs=2)
    assert not any((tmp_path / "runs" / "demo" / "populations").glob("*"))  # resume states go when done

    assert one_by_one.wait(timeout=120) == 0, reference.with_suffix(".err").read_text()
    for cfg, ref in zip(cfgs, cell_configs([f"paths.root={reference}", *sweep])):
        assert_same_model(cfg, ref, exact=cfg.model.width == 64)  # the narrow ones are padded


@pytest.mark.slurm
@pytest.mark.slow
def test_requeued_population_resumes_from_its_last_ckpt(slurm_cluster, tmp_path, data_root):
    """A population of 2 gets SLURM's warning signal (USR2) mid-training: submitit requeues the task,
    which resumes from runs/<zoo>/populations/<hash>/last.ckpt and ends with the metrics and weights of
    an uninterrupted population trained here."""
    sweep = [
        "zoo=demo",
        "model.width=64",
        "data.batch_size=8",
        "data.n_train=4000",
        "trainer.max_epochs=60",
        "seed=0,1",
        f"paths.data={data_root}",
    ]
    reference = tmp_path / "reference"
    uninterrupted = local_sweep(reference, *sweep, "hydra/launcher=population")
    zoo_train(tmp_path, "-m", *sweep, *SLURM, "hydra.launcher.wait=false")
    cfgs = cell_configs([f"paths.root={tmp_path}", *sweep])
    [record] = records(tmp_path)
    assert record.tasks == [[c.id for c in cfgs]]
    job_id, state = record.job_id, population_dir(cfgs)

    wait_for(lambda: len(run_dir(cfgs[0]).metrics()) >= 5, 120, "5 epochs")
    slurm_cluster.run("scancel", "--signal=USR2", job_id)
    wait_for(lambda: restarts(slurm_cluster, job_id) == 1, 30, "submitit to requeue the task")
    assert slurm_cluster.wait(job_id, timeout=120) == {job_id: "COMPLETED"}
    assert restarts(slurm_cluster, job_id) == 1
    log = record.log(0).read_text()
    assert f"population of 2: resuming from {state.last_ckpt}" in log
    assert not state.path.exists()  # removed once the population is done

    assert uninterrupted.wait(timeout=120) == 0, reference.with_suffix(".err").read_text()
    for cfg in cfgs:
        assert_complete(cfg, epochs=60)
    for cfg, ref in zip(cfgs, cell_configs([f"paths.root={reference}", *sweep])):
        assert_same_model(cfg, ref, exact=True)
