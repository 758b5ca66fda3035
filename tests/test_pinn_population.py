"""PINN populations (zoo.train.population.pinn): the run dirs of one-by-one training, member for member."""

import pytest
import torch
from helpers import BITWISE, files, preempt_then_resume, strip
from safetensors.torch import load_file

from zoo.sweep import cell_configs
from zoo.train.grouping import describe, population_key, populations, train_cells
from zoo.train.population import population_dir, train_population
from zoo.train.run import train_model
from zoo.train.rundir import run_dir

# Smoke-sized convection PINNs (64 points a step), 2 epochs of 10 full-batch Adam steps.
SMALL = ["zoo=convection_pinn", "+smoke=on", "data.steps_per_epoch=10", "trainer.max_epochs=2"]
# Members differ in beta, lr and schedule (OneCycle also cycles Adam's beta1: per-member betas).
GRID = [
    "data.beta=1,30",
    "optim.lr=1e-3,1e-2",
    "optim.scheduler.name=constant,onecycle",
    "optim.scheduler.cycle_momentum=true",
    "seed=0",
]


def configs(root, *overrides):
    return cell_configs([*SMALL, f"paths.root={root}", *overrides])


def assert_close(rows_a, rows_b):
    """Metrics lines equal up to float rounding (seconds aside)."""
    for x, y in zip(strip(rows_a), strip(rows_b), strict=True):
        assert y == pytest.approx(x, rel=1e-5, abs=1e-7)


def final_weights(cfg):
    return load_file(run_dir(cfg).ckpt_path(cfg.trainer.max_epochs))


@pytest.fixture(scope="module")
def pair(tmp_path_factory, one_thread):
    """The same 8 cells trained one by one (Lightning, PINN module) and as populations (train_cells)."""
    alone = configs(tmp_path_factory.mktemp("alone"), *GRID)
    together = configs(tmp_path_factory.mktemp("together"), *GRID)
    for cfg in alone:
        train_model(cfg)
    assert [len(g) for g in populations(together)] == [8], "one population"
    results = train_cells(together, n_jobs=1)
    return alone, together, results


def test_population_writes_the_run_dirs_of_one_by_one_training(pair):
    alone, together, results = pair
    assert len(together) == 8 and [r.state for r in results] == ["ok"] * 8
    for a, b in zip(alone, together):
        ra, rb = run_dir(a), run_dir(b)
        assert ra.id == rb.id and ra.status() == rb.status() == ("ok", "") and rb.is_done()
        assert files(ra) == files(rb)
        rows = rb.metrics()
        assert [r["epoch"] for r in rows] == [0, 1, 2]
        assert (
            set(rows[-1])
            == set(ra.metrics()[-1])
            >= {"train_loss", "train_residual", "train_initial", "train_boundary", "test_loss", "test_rel_l2", "lr"}
        )
    populations = run_dir(together[0]).path.parent.parent / "populations"
    assert not populations.exists() or not list(populations.iterdir()), "resume state removed"


def test_members_match_one_by_one_within_float_tolerance(pair):
    alone, together, _ = pair
    for a, b in zip(alone, together):
        ra, rb = run_dir(a), run_dir(b)
        assert_close(ra.metrics(), rb.metrics())
        for epoch, path in ra.checkpoints().items():
            wa, wb = load_file(path), load_file(rb.ckpt_path(epoch))
            assert wa.keys() == wb.keys() and all(wa[k].shape == wb[k].shape for k in wa)
            assert all(torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6) for k in wa), (a.id, epoch)


@BITWISE
def test_members_match_one_by_one_bitwise_on_cpu(pair):
    """What zoo.train.population.pinn's stacked layers and Adam are written for (measured on CPU, torch 2.13)."""
    alone, together, _ = pair
    for a, b in zip(alone, together):
        ra, rb = run_dir(a), run_dir(b)
        assert strip(ra.metrics()) == strip(rb.metrics()), a.id
        for epoch, path in ra.checkpoints().items():
            wa, wb = load_file(path), load_file(rb.ckpt_path(epoch))
            assert all(torch.equal(wa[k], wb[k]) for k in wa), (a.id, epoch)


def test_divergence_freezes_only_that_member(pair, tmp_path, one_thread):
    alone, _, _ = pair
    cfgs = configs(
        tmp_path,
        "data.beta=1,30",
        "optim.lr=1e-3,1e30",
        "optim.scheduler.name=constant",
        "optim.scheduler.cycle_momentum=true",
        "seed=0",
    )
    results = {(cfg.data.beta, cfg.optim.lr): r for cfg, r in zip(cfgs, train_population(cfgs))}
    assert [results[beta, 1e30].state for beta in (1, 30)] == ["diverged"] * 2
    assert "epoch 1" in results[1, 1e30].reason
    for cfg in cfgs:
        run = run_dir(cfg)
        assert run.is_done()
        if cfg.optim.lr == 1e30:
            assert [r["epoch"] for r in run.metrics()] == [0] and sorted(run.checkpoints()) == [0]
            continue
        (same,) = [a for a in alone if a.id == cfg.id]  # trained alone in `pair`
        assert results[cfg.data.beta, cfg.optim.lr].state == "ok"
        assert_close(run.metrics(), run_dir(same).metrics())
        wa, wb = final_weights(cfg), final_weights(same)
        assert all(torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6) for k in wa), "the rest trained as if alone"


def test_interrupted_population_resumes(pair, tmp_path, monkeypatch, one_thread):
    _, together, _ = pair
    cfgs = configs(tmp_path, *GRID)
    preempt_then_resume(cfgs, monkeypatch)
    for a, b in zip(cfgs, together):
        assert a.id == b.id
        rows = run_dir(a).metrics()
        assert [r["epoch"] for r in rows] == [0, 1, 2], "epochs continuous, none lost or duplicated"
        assert_close(rows, run_dir(b).metrics())
        wa, wb = final_weights(a), final_weights(b)
        assert all(torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6) for k in wa)
    assert not population_dir(cfgs).path.exists(), "resume state removed"


def test_grouping_puts_a_beta_lr_row_in_one_population():
    grid = ["zoo=convection_pinn", "data.beta=1,5,50", "optim.lr=1e-3,1e-1", "seed=0,1"]
    row = cell_configs(grid)
    other_width = cell_configs([*grid[:2], "optim.lr=1e-3", "seed=0", "model.width=20"])
    groups = populations(row + other_width, workers=1, memory=8 * 2**30)
    assert sorted(len(g) for g in groups) == [3, 12]
    (whole,) = [g for g in groups if len(g) == 12]
    assert sorted(c.id for c in whole) == sorted(c.id for c in row), "all betas, lrs and seeds of one architecture"
    assert "population K=12 pinn mlp width 50 betas [1, 5, 50] lrs [0.001, 0.1]" in describe(groups)
    halves = populations(row, workers=2, memory=8 * 2**30)
    assert sorted(len(g) for g in halves) == [6, 6], "one population per worker"
    assert len(populations(row, workers=1, memory=100 * 2**20)) > 1, "split to fit memory"
    capped = cell_configs([*grid, "runtime.population=5"])
    assert sorted(len(g) for g in populations(capped, memory=8 * 2**30)) == [4, 4, 4]
    one = [grid[0], "data.beta=1", "optim.lr=1e-3", "seed=0"]
    (off,) = cell_configs([*one, "runtime.population=off"])
    (sgd,) = cell_configs([*one, "optim=sgd"])
    assert population_key(off) is None and population_key(sgd) is None, "what the population cannot train trains alone"
