"""Exit codes and bad values (#16): values checked when the config is composed, for every command;
a sweep in which models failed exits non-zero with one line per cause; zoo-run stops at the first
stage that has nothing to work on."""

import subprocess
import sys

import pytest
from conftest import zoo_train

from zoo.config import ConfigError
from zoo.sweep import cell_configs, compose_config

# A reference zoo with no data: every model fails the same way.
NO_DATA = ["zoo=cifar10_resnet18", "+smoke=on", "model.width=2,4", "data.batch_size=8", "seed=0"]


@pytest.mark.parametrize(
    "override", ["optim.lr=nan", "optim.lr=inf", "landscape.bezier.lr=-inf", "phases.mc_epsilon=nan", "model.width=-3"]
)
def test_composing_refuses_bad_values_naming_the_key(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cell_configs(["zoo=demo", override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose_config(["zoo=demo", override])


def test_zoo_train_refuses_a_non_finite_lr_before_training(tmp_path):
    proc = zoo_train(
        tmp_path,
        "-m",
        "zoo=demo",
        "model.width=4",
        "data.batch_size=8",
        "seed=0",
        "optim.lr=nan",
        "hydra/launcher=basic",
        check=False,
    )
    assert proc.returncode == 2 and "optim.lr=nan is not a finite number" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "runs" / "demo" / "models").exists()


def test_a_sweep_whose_models_fail_exits_1_with_one_line_per_cause(tmp_path):
    proc = zoo_train(tmp_path, "-m", *NO_DATA, f"paths.data={tmp_path / 'nodata'}", "hydra/launcher=basic", check=False)
    lines = [line for line in proc.stderr.splitlines() if "model(s) failed" in line]
    assert proc.returncode == 1 and len(lines) == 1
    assert lines[0].startswith("2 model(s) failed: DatasetNotFound: CIFAR-10 not found") and "error.log" in lines[0]
    hint = proc.stderr.splitlines()[-1]  # where to find each model, and that a rerun retrains only these
    assert hint.startswith("zoo-status --failed ") and f"paths.data={tmp_path / 'nodata'}" in hint


def test_zoo_run_stops_when_no_model_trained(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.cli.run", *NO_DATA, f"paths.root={tmp_path}", f"paths.data={tmp_path / 'nodata'}"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no model of the sweep finished ok" in proc.stdout and "2 model(s) failed" in proc.stdout
    assert "== landscape" not in proc.stdout and not (tmp_path / "shards").exists()


def test_zoo_run_names_a_bad_value_without_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.cli.run", "model.width=-3", f"paths.root={tmp_path}"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "model.width=-3 is not a positive integer" in proc.stderr
    assert "Traceback" not in proc.stderr
