"""The code base stays ruff-clean (lint and format, configured in pyproject.toml; pre-commit runs the same)."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ruff(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert exe, "ruff is in the test extra: pip install -e '.[test]'"
    return subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True)


def test_lint_clean():
    proc = ruff("check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_format_clean():
    proc = ruff("format", "--check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_test_modules_import_no_other_test_module():
    """Shared helpers live in tests/helpers.py and fixtures in conftest.py: a test module imported by
    another runs its module-scoped fixtures twice and is collected under two names."""
    offenders = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            offenders += [f"{path.name}: {name}" for name in names if name.startswith("test_") or name == "conftest"]
    assert not offenders, "import from tests/helpers.py instead: " + ", ".join(offenders)
