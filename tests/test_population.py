"""Population training: the same run dirs as one-by-one training, member for member."""

import pytest
import torch
import torch.nn.functional as F
from helpers import BITWISE, SMALL, assert_same_run, configs, crash_after_epoch, files, strip, without, zoo_train
from safetensors.torch import load_file

from zoo.config import ConfigError, population_setting
from zoo.data import load
from zoo.sweep import cell_configs
from zoo.train.grouping import population_key, populations
from zoo.train.optim import build_optimizer
from zoo.train.population import population_dir, train_population
from zoo.train.population.mlp import MLPPopulation, cross_entropy
from zoo.train.population.stacked import schedule
from zoo.train.run import train_model
from zoo.train.rundir import run_dir


@pytest.fixture(scope="module")
def pair(tmp_path_factory, data_root):
    """The same cells trained one-by-one and as one population: widths 8 (padded to 16) and 16,
    two learning rates, two momenta (OneCycle's cycling off), two weight decays."""
    overrides = [
        "model.width=8,16",
        "seed=0",
        "optim.lr=0.05,0.2",
        "optim.momentum=0.8,0.9",
        "optim.weight_decay=0,0.01",
        "optim.scheduler.cycle_momentum=false",
    ]
    alone = configs(tmp_path_factory.mktemp("alone"), data_root, *overrides)
    together = configs(tmp_path_factory.mktemp("together"), data_root, *overrides)
    for cfg in alone:
        train_model(cfg)
    results = train_population(together)
    return alone, together, results


def test_population_writes_the_run_dirs_of_one_by_one_training(pair):
    alone, together, results = pair
    assert len(together) == 16 and [r.state for r in results] == ["ok"] * 16
    for a, b in zip(alone, together):
        ra, rb = run_dir(a), run_dir(b)
        assert ra.id == rb.id and rb.status() == ("ok", "") and rb.is_done()
        assert files(ra) == files(rb)
        assert without(ra.config(), "paths") == without(rb.config(), "paths")
        assert [r["epoch"] for r in rb.metrics()] == [0, 1, 2, 3]


@BITWISE
def test_unpadded_members_match_one_by_one_bitwise(pair):
    alone, together, _ = pair
    for a, b in zip(alone, together):
        if a.model.width != 16:
            continue
        ra, rb = run_dir(a), run_dir(b)
        # train_loss is a per-batch mean, which torch sums in a cascade: it may differ in the last bit.
        assert strip(ra.metrics(), "train_loss") == strip(rb.metrics(), "train_loss")
        for x, y in zip(ra.metrics(), rb.metrics()):
            assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-6)
        for epoch, path in ra.checkpoints().items():
            wa, wb = load_file(path), load_file(rb.ckpt_path(epoch))
            assert all(torch.equal(wa[k], wb[k]) for k in wa), (a.id, epoch)


def test_members_match_one_by_one_within_float_tolerance(pair):
    alone, together, _ = pair
    for a, b in zip(alone, together):
        ra, rb = run_dir(a), run_dir(b)
        for x, y in zip(ra.metrics(), rb.metrics()):
            assert without(y, "seconds") == pytest.approx(without(x, "seconds"), rel=1e-4, abs=1e-5)
        for epoch, path in ra.checkpoints().items():
            wa, wb = load_file(path), load_file(rb.ckpt_path(epoch))
            assert wa.keys() == wb.keys()
            assert all(wa[k].shape == wb[k].shape for k in wa)
            assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa), (a.id, epoch)


def test_padded_units_stay_exactly_zero(data_root, tmp_path):
    cfgs = configs(tmp_path, data_root, "model.width=2,16", "seed=0")
    pop = MLPPopulation(cfgs, load(cfgs[0].data, data_root))
    for step in range(15):  # 3 epochs of 5 steps
        idx = torch.stack([torch.randperm(300)[:64] for _ in cfgs])
        acts = pop.layer_inputs(pop.x_train[idx])
        grads = pop.gradients(acts, cross_entropy(acts[-1], pop.y_train[idx])[2])
        pop.sgd_step(grads, step)
    w0, w1, w2 = (w[0] for w in pop.w)  # the width-2 member, padded to 16
    assert w0[2:].abs().sum() == 0 and w1[2:].abs().sum() == 0 and w1[:, 2:].abs().sum() == 0
    assert w2[:, 2:].abs().sum() == 0
    assert all(v[0].count_nonzero() == pop.w[i][0].count_nonzero() for i, v in enumerate(pop.v))
    assert w1[:2, :2].abs().sum() > 0, "the member's own units do train"


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_gradients_are_autograds(activation, data_root, tmp_path):
    """The oracle: the hand-written batched backward against torch.func.grad of each member alone."""
    cfgs = configs(
        tmp_path, data_root, "model.width=4,16", "seed=0,1", f"model.activation={activation}", "model.bias=true"
    )
    pop = MLPPopulation(cfgs, load(cfgs[0].data, data_root))
    idx = torch.stack([torch.randperm(300)[:64] for _ in cfgs])
    x, y = pop.x_train[idx], pop.y_train[idx]
    acts = pop.layer_inputs(x)
    loss, _, grad = cross_entropy(acts[-1], y)
    grads = pop.gradients(acts, grad)
    n = len(pop.w)
    for k in range(len(cfgs)):
        model = pop.member(k)
        params = dict(model.named_parameters())

        def member_loss(p, model=model, x=x[k], y=y[k]):
            return F.cross_entropy(torch.func.functional_call(model, p, (x,)), y)

        expected = torch.func.grad(member_loss)(params)
        assert loss[k].item() == pytest.approx(member_loss(params).item(), rel=1e-6)
        linears = [name.rsplit(".", 1)[0] for name in params if name.endswith("weight")]
        for i, name in enumerate(linears):
            w = expected[f"{name}.weight"]
            assert torch.allclose(grads[i][(k, *map(slice, w.shape))], w, atol=1e-6), (k, name)
            assert grads[i][k].abs().sum() == pytest.approx(w.abs().sum().item(), rel=1e-5), "padding gets 0"
            b = expected[f"{name}.bias"]
            assert torch.allclose(grads[n + i][k, 0, : len(b)], b, atol=1e-6), (k, name)


@pytest.mark.parametrize("cycle", [True, False])
def test_schedule_is_torchs_onecycle(cycle, tmp_path, data_root):
    (cfg,) = configs(tmp_path, data_root, "model.width=8", "seed=0", f"optim.scheduler.cycle_momentum={cycle}")
    steps = 50
    opt, scheduler = build_optimizer([torch.zeros(1, requires_grad=True)], cfg.optim, steps)
    expected = []
    for _ in range(steps):
        expected.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
        opt.step()
        scheduler.step()
    expected.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
    assert schedule(cfg.optim, steps).tolist() == [list(row) for row in expected]
    momenta = [m for _, m in expected]
    assert (min(momenta), max(momenta)) == ((pytest.approx(0.85), 0.95) if cycle else (0.9, 0.9))


def test_divergence_stops_only_that_member(tmp_path, data_root):
    overrides = ["model.width=16", "seed=0", "optim.lr=0.05,1e5"]
    cfgs = configs(tmp_path / "pop", data_root, *overrides)
    results = {cfg.optim.lr: r for cfg, r in zip(cfgs, train_population(cfgs))}
    assert results[1e5].state == "diverged" and "epoch 1" in results[1e5].reason
    assert results[0.05].state == "ok"
    (healthy,) = configs(tmp_path / "alone", data_root, *overrides[:2], "optim.lr=0.05")
    train_model(healthy)
    bad, good = run_dir(cfgs[1]), run_dir(cfgs[0])
    assert bad.is_done() and [r["epoch"] for r in bad.metrics()] == [0]
    for x, y in zip(good.metrics(), run_dir(healthy).metrics(), strict=True):
        assert without(y, "seconds") == pytest.approx(without(x, "seconds"), rel=1e-5, abs=1e-6)
    final = load_file(good.ckpt_path(3)), load_file(run_dir(healthy).ckpt_path(3))
    assert all(torch.allclose(final[0][k], final[1][k], atol=1e-6) for k in final[0]), "trained as if alone"


def test_grouping_of_the_demo_zoo():
    cfgs = cell_configs(["zoo=demo"])
    groups = populations(cfgs, workers=2, memory=8 * 2**30)
    assert sorted(cfg.id for g in groups for cfg in g) == sorted(cfg.id for cfg in cfgs)
    shapes = sorted((g[0].data.batch_size, tuple(sorted({c.model.width for c in g})), len(g)) for g in groups)
    expected = [
        (bs, widths, k)
        for bs in (8, 32, 128, 512, 1000)
        for widths, k in (((2, 4, 8, 16, 32), 10), ((64,), 2), ((128,), 2), ((256,), 2))
    ]
    assert shapes == sorted(expected)
    assert all(len({(c.data.batch_size, c.trainer.max_epochs) for c in g}) == 1 for g in groups)


def test_grouping_limits():
    capped = populations(cell_configs(["zoo=demo", "data.batch_size=32", "runtime.population=4"]), memory=8 * 2**30)
    assert sorted(len(g) for g in capped) == [2, 2, 2, 3, 3, 4]  # the 10 narrow ones split evenly
    wide = cell_configs(["zoo=demo", "data.batch_size=32", "model.width=256", "seed=range(40)"])
    assert sorted(len(g) for g in populations(wide, memory=8 * 2**30)) == [10, 10, 10, 10]  # cache cap: 13
    assert max(len(g) for g in populations(wide, memory=40 * 2**20)) < 10  # memory cap
    off = cell_configs(["zoo=demo", "data.batch_size=32", "runtime.population=off"])
    assert [len(g) for g in populations(off)] == [1] * 16 and population_key(off[0]) is None
    yaml_off = cell_configs(["zoo=demo", "data.batch_size=32", "model.width=8", "runtime.population=false"])
    assert population_key(yaml_off[0]) is None, "`population: off` in a YAML file is read as false"
    assert population_setting(yaml_off[0]) == "off" and population_setting(off[0]) == "off"
    with pytest.raises(ConfigError, match="runtime.population"):
        population_setting(
            cell_configs(["zoo=demo", "seed=0", "model.width=8", "data.batch_size=32", "runtime.population=sometimes"])[
                0
            ]
        )
    adam = cell_configs(["zoo=demo", "data.batch_size=32", "model.width=8", "optim.name=adamw"])
    assert [len(g) for g in populations(adam)] == [1, 1], "what the population cannot train trains alone"


def test_crashed_population_resumes_without_duplicates(tmp_path, data_root):
    """The population's process dies as if killed right after the first member's metrics line of
    epoch 2: members are an epoch apart, the resume state is epoch 1's. The rerun ends as if never
    interrupted."""
    overrides = ["model.width=16,32", "seed=0", "trainer.max_epochs=4", "checkpoint.epochs=[0,4]"]
    killed, straight = (configs(tmp_path / name, data_root, *overrides) for name in ("killed", "straight"))
    script = "from zoo.sweep import cell_configs; from zoo.train.population import train_population; "
    script += "train_population(cell_configs(sys.argv[1:]))"
    crash_after_epoch(2, script, *SMALL, f"paths.root={tmp_path / 'killed'}", f"paths.data={data_root}", *overrides)
    assert [len(run_dir(cfg).metrics()) for cfg in killed] == [3, 2]
    assert population_dir(killed).last_ckpt.exists() and not run_dir(killed[0]).is_done()
    train_population(killed)
    train_population(straight)
    for a, b in zip(killed, straight):
        assert [r["epoch"] for r in run_dir(a).metrics()] == list(range(5)), (
            "epochs continuous, none lost or duplicated"
        )
        assert_same_run(run_dir(a), run_dir(b))
    assert not list((tmp_path / "killed" / "runs" / "demo" / "populations").iterdir()), "resume state removed"


def test_population_launcher_trains_and_skips(tmp_path, data_root):
    grid = ["-m", "hydra/launcher=population", *SMALL, "model.width=4,8", "seed=0,1", f"paths.data={data_root}"]
    proc = zoo_train(tmp_path, *grid)
    assert "population K=4" in proc.stderr + proc.stdout
    cfgs = cell_configs([f"paths.root={tmp_path}", *grid[2:]])
    assert all(run_dir(cfg).status() == ("ok", "") and run_dir(cfg).is_done() for cfg in cfgs)
    again = zoo_train(tmp_path, *grid)
    assert (again.stderr + again.stdout).count("already done (ok), skipped") == 4


def test_plan_counts_populations_in_device_hours():
    from zoo.plan import format_plan, plan_zoo

    grid = ["zoo=demo", "model.width=2,4,8", "data.batch_size=32", "seed=0,1"]
    shared, alone = plan_zoo(grid), plan_zoo([*grid, "runtime.population=off"])
    assert [c.population for c in shared.cells] == [6] * 6 and [c.population for c in alone.cells] == [1] * 6
    assert sum(map(shared.hours, shared.cells)) < sum(map(alone.hours, alone.cells))
    assert "populations: 6 models in 1 populations" in format_plan(shared)
    assert "populations: none" in format_plan(alone)


def test_a_population_of_one_trains_alone(tmp_path, data_root, caplog):
    """A cell that could share but is left alone (memory, an odd count) trains as train_model trains
    it: no stacked module for one member, and no population resume state."""
    from zoo.train.grouping import train_group

    (cfg,) = configs(tmp_path, data_root, "model.width=16", "seed=0")
    assert population_key(cfg) is not None
    with caplog.at_level("INFO"):
        (result,) = train_group([cfg])
    assert result.state == "ok" and "population of" not in caplog.text
    assert not (tmp_path / "runs" / "demo" / "populations").exists()
