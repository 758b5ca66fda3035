"""Enumerating a sweep's cells fast (one composition per structural override set, values set in
place) gives the same configs and ids as composing every cell on its own."""

import random

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from zoo.config import CONF_DIR
from zoo.sweep import cell_configs, cell_overrides, cell_views, compose_cells
from zoo.train.ids import with_identity

ZOOS = sorted(p.stem for p in (CONF_DIR / "zoo").glob("*.yaml"))


def test_fast_enumeration_equals_composing_each_cell():
    rng = random.Random(0)
    for zoo in ZOOS:
        cells = cell_overrides([f"zoo={zoo}", "cluster=example_gpu"] + (["apply.apps=[lmc]"] if zoo == "demo" else []))
        sample = rng.sample(cells, 5) + [cells[-1]]  # cells that share compositions, one after the other
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            fast = compose_cells(sample)
            slow = [with_identity(compose("train", cell)) for cell in sample]
        for cell, f, s in zip(sample, fast, slow):
            assert OmegaConf.to_container(f) == OmegaConf.to_container(s), (zoo, cell)


def test_dict_values_merge_per_cell_not_across_cells():
    fast = cell_configs(
        ["zoo=demo", "seed=0", "data.batch_size=8", "model.width=2", "landscape.bezier={steps:5},{lr:0.5}"]
    )
    assert [(c.landscape.bezier.steps, c.landscape.bezier.lr) for c in fast] == [(5, 0.01), (1000, 0.5)]


def test_interpolations_follow_the_swept_values_they_refer_to():
    """`model.in_dim: ${data.in_dim}` and `zoo.prefix` are read again per cell; the views zoo-plan and
    zoo-status read equal the configs."""
    overrides = ["zoo=demo", "seed=0", "model.width=2,4", "data.batch_size=8", "data.in_dim=40,20"]
    cfgs, views = cell_configs(overrides), cell_views(overrides)
    assert [(c.model.width, c.model.in_dim) for c in cfgs] == [(2, 40), (2, 20), (4, 40), (4, 20)]
    assert [c.id.rsplit("-", 1)[0] for c in cfgs] == ["mlp-w2-b8-s0", "mlp-w2-b8-s0", "mlp-w4-b8-s0", "mlp-w4-b8-s0"]
    assert [OmegaConf.to_container(c) for c in cfgs] == views and views[1].model.in_dim == 20
