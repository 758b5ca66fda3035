"""The package as a user installs it: a wheel, installed into a fresh venv, runs from an empty folder
with the configs and schema it ships and the user's own configs from ZOO_CONFIG_DIR."""

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
USER_ZOO = """# @package _global_
zoo:
  name: mine
  axes: [model.width, data.batch_size]
  prefix: mine-w${model.width}-b${data.batch_size}-s${seed}
hydra:
  sweeper:
    params:
      model.width: 4,8
      data.batch_size: 32
      seed: 0
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the sources: setuptools' in-tree build/ keeps files deleted since."""
    out, src = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("src") / "zoo"
    outputs = {".git", ".venv", "build", "runs", "data", "shards", "outputs", "multirun", ".pytest_cache"}
    shutil.copytree(
        ROOT,
        src,
        ignore=lambda folder, names: [
            n for n in names if n == "__pycache__" or n.endswith(".egg-info") or (Path(folder) == ROOT and n in outputs)
        ],
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, src],
        check=True,
        capture_output=True,
    )
    return next(out.glob("zoo-*.whl"))


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed offline; its dependencies come from this interpreter's
    site-packages (a .pth line adds them without activating this checkout's editable install)."""
    path = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", path], check=True)
    purelib = Path(
        subprocess.run(
            [path / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            path / "bin" / "python",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            wheel,
        ],
        check=True,
        capture_output=True,
        env=clean_env(),
    )
    # After installing: pip would take this checkout's editable install, visible through it, for the wheel.
    (purelib / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return path


def clean_env() -> dict[str, str]:
    """This environment without what points at the checkout (PYTHONPATH also shows pip its zoo.egg-info)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ZOO_ROOT", "ZOO_CONFIG_DIR")}


def run_installed(venv: Path, cwd: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    """A console script of the venv, run from `cwd` with no trace of this checkout in the environment."""
    return subprocess.run(
        [venv / "bin" / argv[0], *argv[1:]], cwd=cwd, env={**clean_env(), **env}, capture_output=True, text=True
    )


def test_wheel_ships_configs_schema_and_plugins(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"zoo/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert shipped and shipped <= names
    assert "zoo/manifests/schema.json" in names and "zoo/manifests/demo.json" not in names
    assert {
        "hydra_plugins/zoo_population/population_launcher.py",
        "hydra_plugins/zoo_slurm_launcher/slurm_launcher.py",
    } <= names


def test_installed_package_finds_its_configs_and_the_users(venv, tmp_path):
    user = tmp_path / "myconf"
    (user / "zoo").mkdir(parents=True)
    (user / "zoo" / "mine.yaml").write_text(USER_ZOO)
    probe = (
        "import zoo.config as c; from zoo.sweep import cell_configs; "
        "print(c.CONF_DIR); print(c.SCHEMA_PATH.is_file()); print(*[x.id for x in cell_configs(['zoo=mine'])])"
    )
    proc = run_installed(venv, tmp_path, "python", "-c", probe, ZOO_CONFIG_DIR=str(user))
    assert proc.returncode == 0, proc.stderr
    conf_dir, schema_found, ids = proc.stdout.splitlines()
    assert Path(conf_dir).is_relative_to(venv) and schema_found == "True"
    assert [i.rsplit("-", 1)[0] for i in ids.split()] == ["mine-w4-b32-s0", "mine-w8-b32-s0"]


@pytest.mark.slow
def test_installed_zoo_run_from_an_empty_folder(venv, tmp_path):
    """~2 min quiet (each stage is a new process importing torch); mostly start-up, not training."""
    proc = run_installed(
        venv,
        tmp_path,
        "zoo-run",
        "zoo=demo",
        "model.width=8",
        "data.batch_size=128",
        "seed=0,1",
        "trainer.max_epochs=2",
        "landscape.bezier.steps=10",
        "landscape.hessian.n_samples=100",
        "apply.apps=[]",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "manifests" / "demo.json").read_text())
    assert manifest["counts"]["packed_models"] == 2 and manifest["counts"]["samples"] == 6
    assert "all shards verified" in proc.stdout and (tmp_path / "shards" / "demo.h5").is_file()
