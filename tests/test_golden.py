"""Behaviour unchanged: a small demo zoo-run, every stage, gives the recorded phases, apply tables and
shard bytes (tests/golden/demo_small.json). A refactor must leave them as they are; a change that
means to alter results rewrites the record (`ZOO_UPDATE_GOLDEN=1`) and says why in its commit.

Bytes are compared where the kernels allow it: with the torch version and CPU capability the record was
made with. Elsewhere floats are compared to 1e-3 (other SIMD paths round differently) and the phase
labels exactly."""

import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).parent / "golden" / "demo_small.json"
ZOO = [
    "zoo=demo",
    "model.width=4,32",
    "data.batch_size=32,1000",
    "seed=0,1",
    "trainer.max_epochs=5",
    "apply.prune.tickets.epochs=2",
    "landscape.bezier.steps=10",
    "landscape.hessian.n_samples=100",
]


def environment() -> dict:
    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}


def record(root: Path) -> dict:
    """What the run produced that a user reads: the phase table, each app's table, the shards' hashes."""
    zoo_dir = root / "runs" / "demo"
    tables = {"phases.csv": (zoo_dir / "phases.csv").read_text()}
    for table in sorted((zoo_dir / "apply").glob("*/table.csv")):
        tables[str(table.relative_to(zoo_dir))] = table.read_text()
    manifest = json.loads((root / "manifests" / "demo.json").read_text())
    shards = {s["name"]: s["sha256"] for s in manifest["shards"]}
    return {"environment": environment(), "tables": tables, "shards": shards}


def rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def close(a: str, b: str) -> bool:
    try:
        x, y = float(a), float(b)
    except ValueError:
        return a == b  # labels, ids
    return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-3, abs_tol=1e-6)


@pytest.mark.slow
def test_a_small_demo_run_gives_the_recorded_phases_tables_and_shards(tmp_path):
    """~4 min quiet: 8 models, every stage of zoo-run."""
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.cli.run", *ZOO, f"paths.root={tmp_path}"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = record(tmp_path)
    if os.environ.get("ZOO_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert sorted(got["tables"]) == sorted(want["tables"])
    if got["environment"] == want["environment"]:
        assert got == want, "results changed: if that is meant, rerun with ZOO_UPDATE_GOLDEN=1 and say why"
        return
    for name, text in want["tables"].items():
        ours, theirs = rows(got["tables"][name]), rows(text)
        assert [list(r) for r in ours] == [list(r) for r in theirs], name
        for a, b in zip(ours, theirs):
            different = {k: (a[k], b[k]) for k in b if not close(a[k], b[k])}
            assert not different, f"{name}: {different}"
