"""Model ids (zoo.train.ids): an allowlist of what changes the trained weights."""

import hashlib

from zoo.sweep import cell_configs

# sha256 of the demo zoo's 80 ids joined by spaces, as every release so far has named them:
# packed shards and published run dirs are keyed by these ids.
DEMO_IDS_SHA256 = "709a3427a65a5707b04c83754a30ba49af29fdf2586ca79f3352972407814b2a"


def ids(*overrides: str) -> list[str]:
    return [cfg.id for cfg in cell_configs(["zoo=demo", "model.width=4,8", *overrides])]


def test_demo_ids_never_change():
    demo = [cfg.id for cfg in cell_configs(["zoo=demo"])]
    assert len(demo) == 80 and demo[0] == "mlp-w2-b8-s0-d418e773"
    assert hashlib.sha256(" ".join(demo).encode()).hexdigest() == DEMO_IDS_SHA256


def test_a_new_config_group_or_run_settings_leave_ids_unchanged():
    base = ids()
    assert ids("+telemetry.enabled=true", "+notes.owner=me") == base
    assert (
        ids(
            "paths.root=/elsewhere",
            "runtime.threads=2",
            "landscape.bezier.steps=5",
            "checkpoint.epochs=[0,1]",
            "apply.last_k=2",
            "cluster=example_gpu",
        )
        == base
    )


def test_what_changes_the_weights_changes_the_id():
    base = ids()
    for override in ("optim.lr=0.05", "trainer.max_epochs=7", "data.n_train=500", "model.bias=true"):
        changed = ids(override)
        assert all(a != b for a, b in zip(base, changed)), override


def test_populations_of_different_members_resume_from_different_dirs():
    from zoo.train.population import population_dir

    cfgs = cell_configs(["zoo=demo", "model.width=4,8"])
    assert population_dir(cfgs[:2]).path != population_dir(cfgs[2:4]).path
    assert population_dir(cfgs[:2]).path == population_dir(cfgs[1::-1]).path  # member order does not matter
