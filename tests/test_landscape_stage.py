"""zoo-landscape and zoo-phases end to end on a tiny real zoo, through the CLI entry points (in-process)."""

import csv
import json
import os

import pytest
from helpers import run_cli

from zoo.cli.landscape import main as landscape_main
from zoo.cli.phases import main as phases_main
from zoo.landscape.stage import landscape_items
from zoo.stage import is_done
from zoo.sweep import cell_configs
from zoo.train.run import train_model
from zoo.train.rundir import run_dir

GRID = [
    "zoo=demo",
    "model.width=4,32",
    "data.batch_size=100",
    "seed=0,1",
    "data.n_train=300",
    "trainer.max_epochs=3",
    "landscape.bezier.steps=60",
    "landscape.hessian.n_samples=300",
    "landscape.workers=2",  # the one default-run test of a stage on several workers
]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, data_root):
    """4 tiny models (trained here, as zoo-train -m would), then zoo-landscape with 2 workers."""
    root = tmp_path_factory.mktemp("landscape")
    overrides = [f"paths.root={root}", f"paths.data={data_root}", *GRID]
    cfgs = cell_configs(overrides)
    assert all(train_model(cfg).state == "ok" for cfg in cfgs)
    run_cli(landscape_main, *overrides)
    return root, overrides, cfgs


def test_landscape_writes_every_item(zoo):
    root, _, cfgs = zoo
    items = landscape_items(cfgs)
    assert len(items) == 4 + 2  # 4 models, 1 seed pair in each of 2 cells
    assert all(is_done(item) for item in items)
    for cfg in cfgs:
        result = json.loads((run_dir(cfg).path / "landscape.json").read_text())["3"]
        assert result["hessian_trace_std"] >= 0 and result["hessian_n_hvp"] > 0
    pairs = sorted((root / "runs" / "demo" / "pairs").iterdir())
    assert len(pairs) == 2
    pair = json.loads(pairs[0].read_text())["3"]
    assert -1 <= pair["cka"] <= 1.0 + 1e-6
    assert {"mc_loss_train", "mc_err_train", "mc_loss_test", "mc_err_test"} <= set(pair)


def test_landscape_rerun_does_nothing(zoo):
    _, overrides, cfgs = zoo
    before = {item.out: os.stat(item.out).st_mtime_ns for item in landscape_items(cfgs)}
    proc = run_cli(landscape_main, *overrides)
    assert "0 measured now" in proc.stdout
    assert {item.out: os.stat(item.out).st_mtime_ns for item in landscape_items(cfgs)} == before


def test_phases_table_and_figures(zoo):
    root, overrides, _ = zoo
    proc = run_cli(phases_main, *overrides)
    assert "phase counts:" in proc.stdout
    zoo_dir = root / "runs" / "demo"
    with open(zoo_dir / "phases.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["model.width"]) for r in rows] == [4, 32]
    assert all(r["phase"] in {"I", "II", "III", "IV-A", "IV-B"} for r in rows)
    assert set(json.loads((zoo_dir / "phases.json").read_text()).values()) <= {r["phase"] for r in rows}
    for name in ("phase_map", "train_loss", "hessian_top", "cka", "mc_loss_train"):
        assert (zoo_dir / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_phases_relabels_a_published_table(tmp_path):
    table = tmp_path / "published.csv"
    table.write_text(
        "model.width,data.batch_size,train_loss,mc_loss_train,cka\n"
        "2,8,1.9,-0.3,0.5\n2,1000,1.2,0.4,0.6\n256,8,0.01,-0.4,0.99\n"
        "256,1000,0.01,0.0,0.80\n64,32,0.02,0.01,0.97\n"
    )
    proc = run_cli(phases_main, f"metrics_csv={table}")
    with open(tmp_path / "published_phases.csv") as f:
        assert [r["phase"] for r in csv.DictReader(f)] == ["I", "II", "III", "IV-A", "IV-B"]
    assert (tmp_path / "published_figures" / "phase_map.png").exists()
    assert "IV-B 1" in proc.stdout


def test_phases_hides_columns_no_cell_has(tmp_path):
    """A PINN zoo has no accuracy: its all-NaN test_acc column is left out of the printed table."""
    table = tmp_path / "pinn.csv"
    table.write_text(
        "model.width,data.batch_size,train_loss,test_acc,test_rel_l2,mc_loss_train,cka\n"
        "2,8,1.9,nan,0.9,-0.3,0.5\n256,8,0.01,nan,0.02,-0.4,0.99\n"
    )
    header = run_cli(phases_main, f"metrics_csv={table}").stdout.splitlines()[0]
    assert "test_rel_l2" in header and "phase" in header and "test_acc" not in header
