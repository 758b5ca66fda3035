"""The console scripts' common front: --help everywhere (without importing torch), one-line errors
with meaningful exit codes, full tracebacks on request, user configs through --config-dir."""

import os
import subprocess
import sys

import pytest

SCRIPTS = {
    "train": "zoo-train",
    "run": "zoo-run",
    "landscape": "zoo-landscape",
    "phases": "zoo-phases",
    "apply": "zoo-apply",
    "pack": "zoo-pack",
    "importer": "zoo-import",
    "status": "zoo-status",
    "plan": "zoo-plan",
}
HEAVY = ("torch", "lightning", "matplotlib", "scipy")


def script(module: str, *args: str, **env) -> subprocess.CompletedProcess:
    code = (
        f"import sys\nfrom zoo.cli import {module}\ntry:\n    {module}.main({list(args)!r})\nfinally:\n"
        f"    print('heavy:', *[m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env})


@pytest.mark.parametrize("module", SCRIPTS)
def test_help_of_every_script_without_heavy_imports(module):
    proc = script(module, "--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(f"usage: {SCRIPTS[module]} ") and "examples:" in out and "exit codes:" in out
    assert "zoo " in out and "demo" in out and "--config-dir DIR" in out  # config groups and their options
    assert proc.stderr.strip() == "heavy:"


def test_errors_are_one_line_with_exit_codes_and_full_with_debug():
    bad = script("status", "model.widht=3")
    assert bad.returncode == 2 and "zoo-status: error:" in bad.stderr and "model.widht" in bad.stderr
    assert "Traceback" not in bad.stderr
    debug = script("status", "model.widht=3", "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert "Traceback" in script("status", "model.widht=3", ZOO_DEBUG="1").stderr
    unknown = script("plan", "--bogus")
    assert unknown.returncode == 2 and "unknown option --bogus" in unknown.stderr
    assert script("pack", "verify", "manifest=/nowhere.json").returncode == 2


def test_train_checks_shared_values_before_hydra_runs():
    proc = script("train", "model.width=abc")
    assert proc.returncode == 2 and "model.width='abc' is not a positive integer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_config_dir_adds_a_users_zoo(tmp_path):
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "mine.yaml").write_text(
        "# @package _global_\nzoo:\n  name: mine\n  axes: [model.width, seed]\n"
        "  prefix: mine-w${model.width}-s${seed}\n"
    )
    proc = script("status", "--config-dir", str(tmp_path), "zoo=mine", f"paths.root={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert "total" in proc.stdout and proc.stderr.strip() == "heavy:"
    assert "mine" in script("status", "--help", ZOO_CONFIG_DIR=str(tmp_path)).stdout
