"""zoo-run, every stage, on the `+smoke=on` variants of the language-model and PINN reference zoos
(tiny data in their real formats): landscape, phases, the three merging apps, pack, verify, HDF5."""

import csv
import json
import subprocess
import sys

import pytest
import zoo_files

from zoo.sweep import cell_configs
from zoo.train.rundir import run_dir

SMOKE = {  # two cells of two seeds each, the cheapest corner of the grid
    "owt_gpt2": ["model.width=32", "data.batch_size=512,1024", "seed=0,1"],
    "convection_pinn": ["data.beta=1,50", "optim.lr=1e-3", "seed=0,1"],
}
QUICK = ["landscape.bezier.steps=20", "landscape.hessian.max_iter=10", "landscape.workers=1", "apply.workers=1"]
# GPT-2's 50,304 logits per token make every LM pass costly on CPU: few windows and points (the Hessian
# still sums two batches' HVPs one graph at a time, as conf/zoo/owt_gpt2.yaml measures).
LM_QUICK = [
    "landscape.hessian.n_samples=2",
    "landscape.hessian.batch_size=1",
    "landscape.hessian.max_iter=4",
    "landscape.bezier.batch_size=1",
    "landscape.bezier.n_points=5",
    "apply.bn_samples=4",
    "apply.n_points=5",
]
QUICK_OF = {"owt_gpt2": QUICK + LM_QUICK, "convection_pinn": QUICK}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["owt_gpt2", "convection_pinn"])
def test_zoo_run_measures_phases_and_merges_the_smoke_zoo(name, tmp_path):
    data = tmp_path / "data"
    zoo_files.write_openwebtext(data)
    overrides = [
        f"zoo={name}",
        "+smoke=on",
        f"paths.root={tmp_path}",
        f"paths.data={data}",
        *SMOKE[name],
        *QUICK_OF[name],
    ]
    proc = subprocess.run([sys.executable, "-m", "zoo.cli.run", *overrides], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("landscape", "phases", "apply averaging", "apply lmc", "apply soup", "pack", "verify", "hdf5"):
        assert f"== {stage}" in proc.stdout
    zoo = tmp_path / "runs" / name
    cfgs = cell_configs(overrides)
    for cfg in cfgs:
        landscape = json.loads((run_dir(cfg).path / "landscape.json").read_text())["1"]
        assert landscape["hessian_top"] > 0 and landscape["hessian_n_hvp"] > 0
        if name == "owt_gpt2":  # its max_basis_gb (16 GiB) holds the whole basis at width 32: no restart
            assert 0 < landscape["hessian_basis_vectors"] <= 4 and landscape["hessian_restarts"] == 0
    pairs = sorted((zoo / "pairs").iterdir())
    assert len(pairs) == 2 and all(-1 <= json.loads(p.read_text())["1"]["cka"] <= 1 + 1e-6 for p in pairs)
    with open(zoo / "phases.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(r["phase"] in {"I", "II", "III", "IV-A", "IV-B"} for r in rows)
    for app, key in (
        ("averaging", "seed_avg_gain_aligned"),
        ("lmc", "barrier_loss_train_aligned"),
        ("soup", "greedy_soup_gain"),
    ):
        with open(zoo / "apply" / app / "table.csv") as f:
            assert all(r[key] != "" for r in csv.DictReader(f))
