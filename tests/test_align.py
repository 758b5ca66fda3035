"""Weight matching, merging and the zoo-apply stage, on real trained demo models."""

import csv
import json
import os
import re

import pytest
import torch
from helpers import apply_cli, run_cli, sequential_cnn, trained_bench

from zoo.align.matching import align, weight_matching
from zoo.align.merging import average, barrier, greedy_soup
from zoo.align.permutation import apply, heads, random_perms, resnet_spec, spec_for
from zoo.apply import apps
from zoo.apply.stage import apply_dir, apply_items, apply_packed
from zoo.cli.pack import main as pack_main
from zoo.config import ConfigError
from zoo.landscape.stage import checkpoint
from zoo.models import build
from zoo.sweep import cell_configs
from zoo.train.rundir import run_dir


def images(*shape):
    return lambda n: torch.randn(n, *shape)


VIT = {"name": "vit", "image_size": 8, "patch_size": 4, "width": 16, "depth": 2, "head_dim": 4, "mlp_ratio": 2}
GPT = {"name": "gpt", "vocab_size": 50, "context": 8, "depth": 2, "width": 16, "head_dim": 4, "bias": True}
MODELS = {  # arch, module, inputs
    "mlp": ("mlp", lambda: build({"name": "mlp", "in_dim": 40, "out_dim": 10, "width": 32, "depth": 3}), images(40)),
    "cnn": ("sequential", sequential_cnn, images(3, 8, 8)),
    "resnet18": ("resnet", lambda: build({"name": "resnet", "depth": 18, "width": 4}), images(3, 16, 16)),
    "resnet50": ("resnet", lambda: build({"name": "resnet", "depth": 50, "width": 2, "bias": True}), images(3, 16, 16)),
    "vit": ("vit", lambda: build(VIT), images(3, 8, 8)),
    "gpt": ("gpt", lambda: build(GPT), lambda n: torch.randint(0, 50, (n, 8))),
}
CONFIGS = {"vit": VIT, "gpt": GPT}


@pytest.mark.parametrize("name", MODELS)
def test_weight_matching_recovers_a_known_permutation(name):
    """Transformers: heads permuted as units, q/k and v channels within heads (head count from the config)."""
    arch, make, inputs = MODELS[name]
    torch.manual_seed(0)
    model = make()
    model.train()
    model(inputs(16))  # BatchNorm statistics that are not the identity
    model.eval()
    weights = model.state_dict()
    spec = spec_for(arch, weights, heads=heads(CONFIGS.get(name, {})))
    perms = random_perms(spec, weights, torch.Generator().manual_seed(1))
    permuted = apply(spec, perms, weights)
    if name in CONFIGS:  # attention is permuted too: 4 heads of 4 channels, heads moved as units
        assert [h for h, _, _ in spec.heads] == [4, 4]
        assert all(not torch.equal(perms[p], torch.arange(16)) for _, qk, v in spec.heads for p in (qk, v))
    twin = make()
    twin.load_state_dict(permuted)
    x = inputs(4)
    assert any(not torch.equal(permuted[k], weights[k]) for k in weights)
    assert torch.allclose(twin.eval()(x), model(x), atol=1e-5)  # function-preserving

    recovered, matching = align(spec, weights, permuted)
    assert all(torch.equal(recovered[k], weights[k]) for k in weights)
    assert 1 < matching.iterations < 100


def test_spec_names_what_does_not_fit():
    mlp = build({"name": "mlp", "in_dim": 40, "out_dim": 10, "width": 8})
    with pytest.raises(ValueError, match="layers.0.weight: not part of the resnet layout"):
        resnet_spec(mlp.state_dict())
    with pytest.raises(ValueError, match="supports"):
        spec_for("pinn", mlp.state_dict())
    other = build({"name": "mlp", "in_dim": 40, "out_dim": 10, "width": 16}).state_dict()
    with pytest.raises(ValueError, match="differ in width"):
        weight_matching(spec_for("mlp", other), mlp.state_dict(), other)


def test_barrier_and_average():
    assert barrier([1.0, 1.5, 2.0]) == 0  # on the chord: linearly connected
    assert barrier([1.0, 3.0, 1.0]) == pytest.approx(2.0)
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(7)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(9)}
    assert torch.equal(average([a, b])["w"], torch.tensor([2.0, 4.0]))
    assert average([a, b])["n"] == 7  # integer buffers come from the first model


def test_lmc_barrier_vanishes_after_aligning_a_permuted_copy(merging_zoo):
    _, _, cfgs = merging_zoo
    cfg, b = trained_bench(cfgs, 64)
    weights = checkpoint(run_dir(cfg), 10)
    permuted = apply(b.spec, random_perms(b.spec, weights, torch.Generator().manual_seed(0)), weights)
    result = apps.lmc(b, [weights, permuted], n_points=11)
    assert result["barrier_loss_train"] > 0.1 and result["barrier_err_test"] > 0.02
    assert abs(result["barrier_loss_train_aligned"]) < 1e-6
    assert abs(result["barrier_err_test_aligned"]) < 1e-6


def test_greedy_soup_is_never_worse_than_its_best_ingredient(merging_zoo):
    _, _, cfgs = merging_zoo
    cfg, b = trained_bench(cfgs, 64)
    seeds = [checkpoint(run_dir(c), 10) for c in cfgs if c.model.width == 64]
    noisy = {
        k: v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(0)) for k, v in seeds[0].items()
    }
    ingredients = [*seeds, noisy, b.align(seeds[0], seeds[1])]
    score = lambda s: b.acc(s, "val")  # noqa: E731
    soup, chosen, soup_score = greedy_soup(ingredients, [score(s) for s in ingredients], score)
    assert soup_score >= max(score(s) for s in ingredients)
    assert score(soup) == soup_score and chosen[0] == max(range(4), key=lambda i: score(ingredients[i]))


@pytest.mark.parametrize("app", ["averaging", "lmc", "soup"])
def test_zoo_apply_writes_every_cell_then_skips_them(merging_zoo, app):
    root, overrides, cfgs = merging_zoo
    proc = apply_cli(*overrides, f"app={app}")
    assert "2 cells, 2 computed now, 0 failed" in proc.stdout
    items = apply_items(cfgs, app)
    results = [json.loads(open(item.out).read()) for item in items]
    assert len(results) == 2 and all(len(r["models"]) == 3 for r in results)
    with open(apply_dir(cfgs[0], app) / "by_phase.csv") as f:
        assert [row["phase"] for row in csv.DictReader(f)] == ["I", "IV-B"]
    figures = root / "runs" / "demo" / "figures"
    assert (figures / f"{app}_by_phase.png").stat().st_size > 0
    assert len(list(figures.glob(f"{app}_*.png"))) >= 4

    if app == "averaging":
        assert all(r["epochs_averaged"] == [5, 8, 10] for r in results)
    if app == "soup":
        assert all(r["greedy_soup_val_acc"] >= r["best_ingredient_val_acc"] for r in results)
        assert all(r["greedy_soup_val_acc_aligned"] >= r["best_ingredient_val_acc"] for r in results)
    if app == "lmc":  # aligning seeds lowers the loss barrier between them
        assert all(r["barrier_loss_train_aligned"] < r["barrier_loss_train"] for r in results)
        assert (figures / "lmc_curves.png").stat().st_size > 0

    before = {item.out: os.stat(item.out).st_mtime_ns for item in items}
    assert "0 computed now" in apply_cli(*overrides, f"app={app}").stdout
    assert {item.out: os.stat(item.out).st_mtime_ns for item in items} == before


def test_zoo_apply_asks_for_an_app(merging_zoo):
    _, overrides, _ = merging_zoo
    proc = apply_cli(*overrides, check=False)
    assert proc.returncode != 0 and "zoo-apply needs app=<averaging|lmc|soup|prune|transfer>" in proc.stderr


def test_apply_over_a_packed_zoo_matches_the_run_dirs(merging_zoo):
    root, overrides, cfgs = merging_zoo
    run_cli(pack_main, *overrides)
    apply_cli(*overrides, "app=lmc")
    rows = apply_packed(root / "manifests" / "demo.json", "lmc", cfgs[0].paths.data, dict(cfgs[0].apply))
    assert [(r["model.width"], r["phase"]) for r in rows] == [(8, "I"), (64, "IV-B")]
    for row, item in zip(rows, apply_items(cfgs, "lmc")):
        stored = json.loads(open(item.out).read())
        assert row["models"] == stored["models"]
        assert row["barrier_loss_train_aligned"] == stored["barrier_loss_train_aligned"]
        assert row["pairs"][0]["curve"] == stored["pairs"][0]["curve"]
    with pytest.raises(ValueError, match=r"no sample with status ok matches where=\{'model.width': 3\}; nothing"):
        apply_packed(root / "manifests" / "demo.json", "lmc", cfgs[0].paths.data, where={"model.width": 3})


@pytest.mark.parametrize(
    "override, message",
    [
        ("apply.val_fraction=1.0", "apply.val_fraction=1.0 is not a fraction"),
        ("apply.n_points=1", "apply.n_points=1 is not an integer of at least 2"),
        ("apply.last_k=0", "apply.last_k=0 is not a positive integer"),
    ],
)
def test_bad_apply_settings_name_their_key(merging_zoo, override, message):
    _, overrides, _ = merging_zoo
    with pytest.raises(ConfigError, match=re.escape(message)):
        apply_items(cell_configs([*overrides, override]), "soup")
