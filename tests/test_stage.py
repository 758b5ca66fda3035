"""The stage interface (zoo.stage): results record their inputs; changed inputs mean recompute."""

import json

from zoo.stage import Item, is_done, read_result, run_item, run_stage


def square(item: Item) -> dict:
    return {"value": item.settings["x"] ** 2, "models": item.models}


def make(tmp_path, models=("a", "b"), epochs=(10,), **settings) -> Item:
    return Item(
        "demo-stage",
        tuple(str(tmp_path / "runs" / m) for m in models),
        epochs,
        str(tmp_path / "out" / "cell.json"),
        {"x": 3, "workers": 2} | settings,
    )


def test_result_records_inputs_and_is_done(tmp_path):
    item = make(tmp_path)
    assert not is_done(item)
    run_item(square, item)
    stored = json.loads(open(item.out).read())
    assert stored["inputs"] == {"stage": "demo-stage", "models": ["a", "b"], "epochs": [10], "settings": {"x": 3}}
    assert stored["value"] == 9 and is_done(item) and read_result(item)["value"] == 9


def test_changed_models_epochs_or_settings_make_a_result_stale(tmp_path):
    """A cell retrained with other settings (new model ids), measured at other epochs or with other
    stage settings is recomputed; how many workers ran it is not an input."""
    run_item(square, make(tmp_path))
    assert is_done(make(tmp_path, workers=7))
    for stale in (make(tmp_path, models=("a2", "b2")), make(tmp_path, epochs=(3,)), make(tmp_path, x=4)):
        assert not is_done(stale) and read_result(stale) is None


def test_run_stage_computes_only_what_is_missing_or_stale(tmp_path):
    items = [make(tmp_path)]
    assert run_stage(square, items, stage="demo", workers=1) == {"items": 1, "computed": 1, "failed": 0}
    assert run_stage(square, items, stage="demo", workers=1) == {"items": 1, "computed": 0, "failed": 0}
    changed = [make(tmp_path, x=5)]
    assert run_stage(square, changed, stage="demo", workers=1)["computed"] == 1
    assert read_result(changed[0])["value"] == 25


def test_an_apps_inputs_leave_out_other_apps_sections():
    """Changing apply.prune.* or the list of apps to run must not make lmc's results stale."""
    from zoo.apply.stage import app_settings
    from zoo.sweep import compose_config

    base = compose_config(["zoo=demo"]).apply
    other = compose_config(["zoo=demo", "apply.prune.margin=0.3", "apply.apps=[lmc]"]).apply
    assert app_settings(base, "lmc") == app_settings(other, "lmc")
    assert "prune" not in app_settings(base, "lmc") and "apps" not in app_settings(base, "lmc")
    assert app_settings(base, "prune") != app_settings(other, "prune")
