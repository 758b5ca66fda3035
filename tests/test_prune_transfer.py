"""The pruning and transfer apps of zoo-apply, on real trained demo models (conftest's merging_zoo)."""

import csv
import json
import re

import pytest
import torch
from helpers import apply_cli, run_cli, trained_bench
from omegaconf import OmegaConf

from zoo import data as datasets
from zoo.apply import prune, transfer
from zoo.apply.stage import apply_dir, apply_items, apply_packed
from zoo.apply.training import recipe, train_steps
from zoo.cli.pack import main as pack_main
from zoo.config import ConfigError
from zoo.data import TensorData
from zoo.landscape.stage import checkpoint
from zoo.models import build
from zoo.sweep import cell_configs
from zoo.train.rundir import run_dir

# Budgets small enough for a test; merging_zoo saves epochs 0, 5, 8, 10.
FAST = [
    "apply.prune.sparsities=[0.5,0.9]",
    "apply.prune.finetune_steps=5",
    "apply.prune.tickets.sparsities=[0.5,0.8]",
    "apply.prune.tickets.rewind_epoch=5",
    "apply.prune.tickets.epochs=1",
    "apply.transfer.epochs=1",
    "+apply.transfer.target.mnist1d.generator.num_samples=1000",
]


def test_global_magnitude_masks_have_exact_sparsity():
    gen = torch.Generator().manual_seed(0)
    # Integer-valued weights: many ties in |w|, which a threshold would keep too many of.
    state = {
        "a.weight": torch.randint(-3, 4, (30, 20), generator=gen).float(),
        "b.weight": torch.randint(-3, 4, (7, 30), generator=gen).float(),
    }
    n = 30 * 20 + 7 * 30
    keep = None
    for s in (0.5, 0.8, 0.9, 0.95, 0.98):
        masks = prune.magnitude_masks(state, list(state), s, keep)
        assert sum(int(m.sum()) for m in masks.values()) == round((1 - s) * n)
        assert prune.sparsity(masks) == pytest.approx(s, abs=0.5 / n)
        kept = torch.cat([state[k].abs()[masks[k]] for k in state])
        dropped = torch.cat([state[k].abs()[~masks[k]] for k in state])
        assert kept.min() >= dropped.max()  # global: the largest magnitudes over both layers survive
        if keep is not None:  # an IMP round prunes only among the survivors of the previous one
            assert all(not (masks[k] & ~keep[k]).any() for k in state)
        keep = masks
    with pytest.raises(ValueError, match="must increase"):
        prune.magnitude_masks(state, list(state), 0.5, keep)


def test_finetuning_keeps_pruned_weights_exactly_zero(merging_zoo, one_thread):
    _, _, cfgs = merging_zoo
    cfg, b = trained_bench(cfgs, 64)
    final = checkpoint(run_dir(cfg), 10)
    masks = prune.magnitude_masks(final, prune.prunable(b.model), 0.9)
    data = datasets.load(cfg.data, cfg.paths.data)
    tuned = prune.finetune(b, cfg, data, prune.masked(final, masks), masks, steps=20)  # SGD: momentum + decay
    for name, mask in masks.items():
        assert torch.equal(tuned[name][~mask], torch.zeros(int((~mask).sum())))
        assert not torch.equal(tuned[name][mask], final[name][mask])  # the survivors did train


def test_rewinding_restores_the_early_weights_and_continues_the_schedule(merging_zoo):
    _, _, cfgs = merging_zoo
    cfg, b = trained_bench(cfgs, 64)
    run = run_dir(cfg)
    early, final = checkpoint(run, 5), checkpoint(run, 10)
    masks = prune.magnitude_masks(final, prune.prunable(b.model), 0.8)
    rewound = b.module(prune.masked(early, masks)).state_dict()
    for name, value in early.items():
        kept = masks.get(name, torch.ones_like(value, dtype=torch.bool))
        assert torch.equal(rewound[name][kept], value[kept]) and not rewound[name][~kept].any()
    # The lr a rewound model retrains with is the one its training had logged after epoch 5.
    per_epoch = -(-cfg.data.n_train // cfg.data.batch_size)
    opt, _ = recipe(b.model.parameters(), cfg.optim, steps=5 * per_epoch, offset=5 * per_epoch)
    assert opt.param_groups[0]["lr"] == pytest.approx(run.metrics()[5]["lr"], rel=1e-9)


def test_linear_probe_leaves_the_features_bitwise_frozen():
    torch.manual_seed(0)
    model = build({"name": "resnet", "depth": 18, "width": 4, "num_classes": 10})  # BatchNorm everywhere
    data = TensorData(
        torch.randn(64, 3, 8, 8), torch.randint(0, 5, (64,)), torch.randn(8, 3, 8, 8), torch.randint(0, 5, (8,))
    )
    transfer.new_head(model, 5, seed=1)
    assert transfer.head_name(model) == "fc" and model.fc.out_features == 5
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optim = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "scheduler": {"name": "constant"}}
    train_steps(model, data, optim, steps=6, batch_size=16, seed=0, trainable=list(model.fc.parameters()))
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before if not k.startswith("fc."))
    assert not torch.equal(after["fc.weight"], before["fc.weight"])  # the head did train


@pytest.mark.parametrize("app", ["prune", "transfer"])
def test_zoo_apply_writes_a_row_per_phase(merging_zoo, app):
    root, overrides, cfgs = merging_zoo
    proc = apply_cli(*overrides, *FAST, f"app={app}")
    assert "2 cells, 2 computed now, 0 failed" in proc.stdout
    items = apply_items(cell_configs([*overrides, *FAST]), app)
    results = [json.loads(open(item.out).read()) for item in items]
    with open(apply_dir(cfgs[0], app) / "by_phase.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["phase"] for row in rows] == ["I", "IV-B"]
    figures = root / "runs" / "demo" / "figures"
    assert (figures / f"{app}_by_phase.png").stat().st_size > 0
    if app == "prune":  # one cell per phase gets lottery tickets: here both
        assert all(len(r["ticket_acc"]) == 2 and len(r["acc_finetuned"]) == 2 for r in results)
        assert all(float(row["ticket_gain"]) == float(row["ticket_gain"]) for row in rows)  # not NaN/empty
        assert (figures / "prune_curves.png").stat().st_size > 0 and (figures / "prune_tickets.png").exists()
    else:
        assert all(r["target"]["generator"]["seed"] == 1 and len(r["per_model"]) == 3 for r in results)
        assert all(0 <= r[m] <= 1 for r in results for m in ("probe_acc", "finetune_acc", "scratch_acc"))


@pytest.mark.parametrize("app", ["prune", "transfer"])
def test_packed_zoo_gives_the_run_dirs_results(merging_zoo, app, one_thread):
    root, overrides, cfgs = merging_zoo
    if not (root / "manifests" / "demo.json").exists():
        run_cli(pack_main, *overrides)
    cfgs = cell_configs([*overrides, *FAST])
    apply_cli(*overrides, *FAST, f"app={app}")
    rows = apply_packed(
        root / "manifests" / "demo.json", app, cfgs[0].paths.data, OmegaConf.to_container(cfgs[0].apply, resolve=True)
    )
    assert [(r["model.width"], r["phase"]) for r in rows] == [(8, "I"), (64, "IV-B")]
    for row, item in zip(rows, apply_items(cfgs, app)):
        stored = json.loads(open(item.out).read())
        assert row["models"] == stored["models"]
        assert row["per_model"] == stored["per_model"]


def test_language_model_zoos_are_refused_by_name():
    with pytest.raises(ConfigError, match=re.escape("zoo owt_gpt2 is a lm zoo")):
        apply_items(cell_configs(["zoo=owt_gpt2", "+smoke=on"]), "prune")


@pytest.mark.parametrize(
    "override, message",
    [
        ("apply.prune.margin=1.5", "apply.prune.margin=1.5 is not a fraction"),
        ("apply.transfer.epochs=0", "apply.transfer.epochs=0 is not a positive"),
    ],
)
def test_bad_prune_and_transfer_settings_name_their_key(merging_zoo, override, message):
    _, overrides, _ = merging_zoo
    with pytest.raises(ConfigError, match=re.escape(message)):
        apply_items(cell_configs([*overrides, override]), "prune")
