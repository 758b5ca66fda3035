"""Helpers shared by the test modules (fixtures live in conftest.py; test modules never import each other)."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from zoo.sweep import cell_configs, compose_config
from zoo.train.run import train_model
from zoo.train.rundir import list_runs, run_dir

# -- training ---------------------------------------------------------------------------------------
# Small, fast cells: the first 300 mnist1d samples, a few epochs.
FAST = ["data.n_train=300", "trainer.max_epochs=2"]
TINY = [*FAST, "data.batch_size=32"]  # checkpoints at epochs 0, 1, 2

# The hand-written population kernels reproduce one-by-one training bit for bit on the CPU kernels of
# torch 2.13; other versions are held to float tolerance (the tests without this mark).
BITWISE = pytest.mark.skipif(
    torch.__version__.split("+")[0] != "2.13.0" or torch.cuda.is_available(),
    reason="bitwise equality measured for torch 2.13 CPU kernels only",
)

# Demo population cells: 300 samples, batch 64 (the last batch of each epoch is short: 44).
SMALL = ["zoo=demo", "data.n_train=300", "data.batch_size=64", "trainer.max_epochs=3"]


def zoo_train(root: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    """`zoo-train` through its real entry point, all outputs under `root`."""
    flags = [o for o in overrides if o.startswith("-")]  # argparse wants flags before overrides
    values = [o for o in overrides if not o.startswith("-")]
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.cli.train", *flags, f"paths.root={root}", *values], capture_output=True, text=True
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"zoo-train failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def train_tiny_zoo(root, data_root, cells) -> list:
    """Train each cell (overrides) of the demo zoo in-process for 2 epochs into `root/runs/demo`."""
    for overrides in cells:
        train_model(compose_config([f"paths.root={root}", f"paths.data={data_root}", *TINY, *overrides]))
    return list_runs(root / "runs", "demo")


def run_cli(main: Callable, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """A console script's `main(argv)` in this process, its exit code, stdout and stderr captured as
    from a subprocess: the script's own behaviour without the ~6 s of CPU a fresh Python spends
    importing torch and Lightning. (Start-up itself is tested in test_cli.py, zoo-train's Hydra app
    in subprocesses: Hydra's main owns sys.argv, logging and the working directory.)"""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
            code = 0
        except SystemExit as stop:  # console scripts end with sys.exit(code)
            code = 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
    proc = subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"{main.__module__} failed ({code}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def configs(root, data_root, *overrides):
    """The demo population cells (SMALL) of `overrides`, under `root`."""
    return cell_configs([*SMALL, f"paths.root={root}", f"paths.data={data_root}", *overrides])


# A process that dies as if killed (os._exit: no cleanup, no lock released by hand) right after it
# wrote the metrics line of epoch CRASH_EPOCH, before that epoch's resume checkpoint: the worst place.
CRASH = """
import os, sys
from zoo.train.rundir import RunDir
append, CRASH_EPOCH = RunDir.append_metrics, int(sys.argv.pop(1))
def append_then_die(self, row):
    append(self, row)
    if row["epoch"] == CRASH_EPOCH:
        os._exit(137)
RunDir.append_metrics = append_then_die
"""


def crash_after_epoch(epoch: int, code: str, *args: str) -> None:
    """Run `code` (argv: `args`) in a fresh Python that dies as if killed once a metrics line of
    `epoch` is written (crash injection: a deterministic stand-in for SIGKILL at a lucky moment)."""
    proc = subprocess.run([sys.executable, "-c", CRASH + code, str(epoch), *args], capture_output=True, text=True)
    assert proc.returncode == 137, f"no crash after epoch {epoch} ({proc.returncode}):\n{proc.stderr[-3000:]}"


# -- run dirs ---------------------------------------------------------------------------------------
def files(run):
    """A run dir's files, without the resume state (per model one-by-one, per population here)."""
    return sorted(str(p.relative_to(run.path)) for p in run.path.rglob("*") if p.is_file() and p.name != "last.ckpt")


def without(row, *keys):
    return {k: v for k, v in row.items() if k not in keys}


def strip(rows, *keys):
    """Metrics lines without their wall time (and `keys`)."""
    return [without(r, "seconds", *keys) for r in rows]


def assert_complete(cfg, epochs: int) -> None:
    run = run_dir(cfg)
    assert run.status() == ("ok", "") and run.is_done(), run.path
    assert [r["epoch"] for r in run.metrics()] == list(range(epochs + 1))
    assert max(run.checkpoints()) == epochs


def assert_same_run(run, ref) -> None:
    """Two run dirs of one model: the same metrics (wall time aside) and checkpoints, bit for bit."""
    assert strip(run.metrics()) == strip(ref.metrics())
    assert run.checkpoints().keys() == ref.checkpoints().keys()
    for epoch, path in run.checkpoints().items():
        ours, theirs = load_file(path), load_file(ref.ckpt_path(epoch))
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), f"weights differ at epoch {epoch}"


# -- waiting ----------------------------------------------------------------------------------------
def wait_for(predicate, timeout: float, what: str, poll: float = 0.2) -> None:
    """Poll `predicate` until it holds; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


# -- merging (zoo-apply) -----------------------------------------------------------------------------
# The merging zoo (conftest's `merging_zoo`): 2 widths x 3 seeds, checkpoints at epochs 0, 5, 8, 10.
MERGING_GRID = [
    "zoo=demo",
    "model.width=8,64",
    "data.batch_size=32",
    "seed=0,1,2",
    "data.n_train=300",
    "trainer.max_epochs=10",
    "checkpoint.epochs=[0,5,8,10]",
    "apply.workers=1",  # one spawned worker: the parallel stage runner is tested in test_landscape_stage
]


def apply_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`zoo-apply` (its `main`, in this process)."""
    from zoo.cli.apply import main

    return run_cli(main, *args, check=check)


def trained_bench(cfgs, width):
    """The first cell of `width` and its merging bench (model, data, spec)."""
    from zoo.apply.stage import bench

    cfg = next(c for c in cfgs if c.model.width == width)
    return cfg, bench(cfg, dict(cfg.apply), cfg.paths.data)


def sequential_cnn() -> nn.Module:
    """A plain nn.Sequential CNN with BatchNorm (no zoo architecture): permutation by layer order."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5),
        nn.ReLU(),
        nn.Linear(5, 3),
    )


# -- SLURM (the one-node test cluster: slurm_cluster.py) -------------------------------------------
# cpus_per_task=1: two tasks at once on the 2-CPU node; poll squeue often.
SLURM = ["hydra/launcher=slurm", "cluster=local", "cluster.cpus_per_task=1", "cluster.poll_s=0.5"]
SLURM_TINY = ["zoo=demo", "data.n_train=200", "data.batch_size=64", "trainer.max_epochs=2"]


def records(root: Path) -> list:
    """The SLURM job records of the demo zoo's training under `root`."""
    from zoo.slurm import jobs

    return jobs.read_records(root / "runs" / "demo", "train")


def restarts(cluster, job_id: str) -> int:
    out = cluster.run("scontrol", "-o", "show", "job", job_id).stdout
    return int(out.split("Restarts=")[1].split()[0])


# -- network populations (ResNet, ViT, GPT) ------------------------------------------------------
# Tiny cells on tiny files, 2 epochs of 2 steps, 2 seeds. Tiny ResNets amplify float rounding
# (BatchNorm over few samples): they train at a gentle lr on batches of 16.
TINY_RESNET = ["model.width=4", "data.n_train=32", "data.batch_size=16", "optim.lr=0.01"]
NET_CELLS = {
    "resnet18": ["zoo=cifar10_resnet18", *TINY_RESNET],
    "resnet50": ["zoo=cifar10_resnet50", *TINY_RESNET, "data.n_train=16", "trainer.max_epochs=1"],  # one step
    "vit": ["zoo=cifar10_vit", "model.width=12", "model.depth=2", "data.n_train=8", "data.batch_size=4"],
    "gpt": [
        "zoo=owt_gpt2",
        "+smoke=on",
        "model.width=32",
        "model.depth=2",
        "data.context=16",
        "data.batch_size=2",
        "trainer.precision=32",
        "trainer.gradient_clip_val=null",
    ],
}


def net_configs(root, data_root, name, *overrides):
    """Two seeds of a tiny NET_CELLS cell, one population of 2 (data: conftest's net_data_root)."""
    return cell_configs(
        [
            "trainer.max_epochs=2",
            *NET_CELLS[name],
            "seed=0,1",
            "runtime.population=2",
            f"paths.root={root}",
            f"paths.data={data_root}",
            *overrides,
        ]
    )


def assert_same_training(alone, together, rtol=1e-4, atol=1e-5):
    """Models trained two ways (one-by-one and as a population, eager and captured) end alike."""
    for a, b in zip(alone, together, strict=True):
        ra, rb = run_dir(a), run_dir(b)
        assert ra.id == rb.id and ra.status() == rb.status() == ("ok", ""), (ra.status(), rb.status())
        assert files(ra) == files(rb)
        for epoch, path in ra.checkpoints().items():
            wa, wb = load_file(path), load_file(rb.ckpt_path(epoch))
            assert wa.keys() == wb.keys() and all(wa[k].shape == wb[k].shape for k in wa)
            # weights and BatchNorm running statistics, all together within rtol (relative L2)
            x, y = (torch.cat([w[k].float().flatten() for k in sorted(w)]) for w in (wa, wb))
            assert (x - y).norm() <= rtol * x.norm(), (a.id, epoch, ((x - y).norm() / x.norm()).item())
        # where rounding moves the weights by ~1%, a few argmaxes flip: compare losses only
        acc = ("train_acc", "test_acc") if rtol >= 1e-2 else ()
        rows_a, rows_b = strip(ra.metrics(), *acc), strip(rb.metrics(), *acc)
        assert [r["epoch"] for r in rows_b] == list(range(a.trainer.max_epochs + 1))
        for x, y in zip(rows_a, rows_b, strict=True):
            assert y == pytest.approx(x, rel=rtol, abs=atol)


def preempt_then_resume(cfgs, monkeypatch) -> None:
    """Train the population `cfgs` until it is preempted (an exception) right after its first epoch's
    resume state is written, check it failed and kept that state, then train it again to the end."""
    from zoo.train.population import PopulationWriter, population_dir, train_population

    end_epoch = PopulationWriter.on_train_epoch_end

    def crash_after_first_epoch(self, trainer, pop):
        end_epoch(self, trainer, pop)
        if trainer.current_epoch == 0:
            raise RuntimeError("simulated preemption")

    monkeypatch.setattr(PopulationWriter, "on_train_epoch_end", crash_after_first_epoch)
    assert {r.state for r in train_population(cfgs)} == {"failed"}
    assert population_dir(cfgs).last_ckpt.exists()
    assert [r["epoch"] for r in run_dir(cfgs[0]).metrics()] == [0, 1]
    monkeypatch.setattr(PopulationWriter, "on_train_epoch_end", end_epoch)
    assert {r.state for r in train_population(cfgs)} == {"ok"}
