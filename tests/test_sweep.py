"""Enumerating a sweep's cells fast (one composition per structural override set, values set in
place) gives the same configs and ids as composing every cell on its own."""

import random

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from zoo.config import CONF_DIR
from zoo.sweep import cell_configs, cell_overrides
from zoo.train.ids import with_identity

ZOOS = [p.stem for p in (CONF_DIR / "zoo").glob("*.yaml")]


def test_fast_enumeration_equals_composing_each_cell():
    rng = random.Random(0)
    for zoo in ZOOS:
        # seed=0: every structural variant of the zoo, in a fraction of its cells
        overrides = [f"zoo={zoo}", "cluster=example_gpu", "seed=0"] + (["apply.apps=[lmc]"] if zoo == "demo" else [])
        cells = cell_overrides(overrides)
        fast = cell_configs(overrides)
        assert len(fast) == len(cells) and len({c.id for c in fast}) == len(fast), zoo
        for i in sorted(rng.sample(range(len(cells)), 3)) + [len(cells) - 1]:
            with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
                slow = with_identity(compose("train", cells[i]))
            assert OmegaConf.to_container(fast[i]) == OmegaConf.to_container(slow), (zoo, cells[i])


def test_dict_values_merge_per_cell_not_across_cells():
    fast = cell_configs(["zoo=demo", "seed=0", "data.batch_size=8", "model.width=2", "landscape.bezier={steps:5},{lr:0.5}"])
    assert [(c.landscape.bezier.steps, c.landscape.bezier.lr) for c in fast] == [(5, 0.01), (1000, 0.5)]
