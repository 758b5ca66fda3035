"""Importing a zoo in the reference study's layout (per-model folders of torch.save'd state dicts)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoo.load import open_zoo
from zoo.models import build
from zoo.pack import import_reference, verify

EPOCHS = (0, 1, 5)


class Payload:
    """Unpickling this would run code: torch.load(weights_only=True) must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def write_model(root: Path, name: str, params: dict, *, diverge: bool = False) -> dict[int, dict]:
    """One model folder as the reference zoos ship it; returns the saved state dicts by epoch."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(params))
    rows = [
        {
            "training_iteration": e,
            "train_loss": math.nan if diverge and e == 5 else 1.0 / (e + 1),
            "test_acc": 0.1 * e,
            "config": params,
        }
        for e in EPOCHS
    ]
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.manual_seed(params["seed"])
    states = {}
    for epoch in EPOCHS:
        model = build({"name": "mlp", "in_dim": 40, "out_dim": 10, "width": params["model::width"]})
        (folder / f"checkpoint_{epoch:06d}").mkdir()
        torch.save(model.state_dict(), folder / f"checkpoint_{epoch:06d}" / "checkpoints")
        states[epoch] = model.state_dict()
    return states


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    src = root / "zoo"
    states = {}
    for i, (width, seed) in enumerate([(4, 0), (8, 0), (8, 1)]):
        params = {"model::type": "mlp", "model::width": width, "seed": seed, "optim::lr": 0.1}
        states[(width, seed)] = write_model(src, f"NN_tune_trainable_{i:05d}_seed={seed},lr=0.1", params)
    write_model(
        src,
        "NN_tune_trainable_00003_diverged",
        {"model::type": "mlp", "model::width": 4, "seed": 2, "optim::lr": 10.0},
        diverge=True,
    )
    return root, src, states


def test_import_converts_every_checkpoint_and_its_results(reference):
    root, src, states = reference
    manifest = import_reference(src, "ref", root / "shards", root / "ref.json")
    assert manifest["counts"]["models"] == 4 and manifest["counts"]["packed_models"] == 3
    assert manifest["counts"]["status"] == {"diverged": 1, "ok": 3}
    assert manifest["grid"]["axes"] == ["model::width", "seed", "optim::lr"]
    assert manifest["counts"]["samples"] == 9 and verify(root / "ref.json") == []
    seen = set()
    for weights, meta in open_zoo(root / "ref.json", view="state_dict"):
        expected = states[(meta["config"]["model::width"], meta["config"]["seed"])][meta["epoch"]]
        assert list(weights) == list(expected)  # module order kept
        assert all(torch.equal(weights[k], expected[k]) for k in expected)
        assert meta["id"].startswith("ref-") and "." not in meta["id"]
        assert (
            meta["arch"] == "mlp"
            and meta["status"] == "ok"
            and meta["phase"] == "unlabeled"
            and meta["landscape"] == {"measured": False}
        )
        assert meta["grid"] == {k: meta["config"][k] for k in ("model::width", "seed", "optim::lr")}
        assert meta["metrics"]["test_acc"] == pytest.approx(0.1 * meta["epoch"])
        assert "config" not in meta["metrics"]
        seen.add((meta["config"]["model::width"], meta["config"]["seed"], meta["epoch"]))
    assert seen == {(w, s, e) for w, s in states for e in EPOCHS}


def test_a_pickle_with_code_is_refused_and_never_run(reference, tmp_path):
    root, _, _ = reference
    src = tmp_path / "zoo"
    write_model(src, "model", {"model::type": "mlp", "model::width": 4, "seed": 0})
    marker = tmp_path / "code-ran"
    torch.save({"layers.0.weight": Payload(marker)}, src / "model" / "checkpoint_000001" / "checkpoints")
    with pytest.raises(ValueError, match=r"checkpoint_000001/checkpoints: not loadable with torch.load\(weights_only"):
        import_reference(src, "evil", tmp_path / "shards", tmp_path / "evil.json")
    assert not marker.exists()
    assert not (tmp_path / "evil.json").exists()


def test_cli_imports(reference, tmp_path):
    _, src, _ = reference
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "zoo.cli.importer",
            f"src={src}",
            "zoo.name=ref",
            f"paths.root={tmp_path}",
            "pack.include_failed=true",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"imported 4 models, 12 samples into 1 shards in {tmp_path}/shards/ref" in proc.stdout
    assert verify(tmp_path / "manifests" / "ref.json") == []
