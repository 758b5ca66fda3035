"""Docs that hold: README's Python snippets run against a small packed zoo; the keys slurm/README.md
names exist; the example's usage names only its own flags."""

import json
import re
from pathlib import Path

import pytest

from zoo.pack import pack_zoo
from zoo.sweep import compose_config
from zoo.train.run import train_model
from zoo.train.rundir import list_runs

ROOT = Path(__file__).resolve().parent.parent


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def demo_pack(tmp_path_factory, data_root) -> Path:
    """Where README's snippets run: manifests/demo.json and its shards (two seeds of one demo cell,
    2 epochs, labelled IV-B with a landscape result at the final epoch) and data/ (mnist1d)."""
    root = tmp_path_factory.mktemp("readme")
    (root / "data").symlink_to(data_root)
    for seed in (0, 1):
        train_model(
            compose_config(
                [
                    f"paths.root={root}",
                    "model.width=8",
                    "data.batch_size=32",
                    f"seed={seed}",
                    "data.n_train=300",
                    "trainer.max_epochs=2",
                ]
            )
        )
    runs = list_runs(root / "runs", "demo")
    for run in runs:
        (run.path / "landscape.json").write_text(json.dumps({"2": {"hessian_top": 1.0}}))
    (root / "runs" / "demo" / "phases.json").write_text(json.dumps({run.id: "IV-B" for run in runs}))
    pack_zoo(root / "runs", "demo", root / "shards" / "demo", root / "manifests" / "demo.json")
    return root


@pytest.mark.parametrize("index", range(len(python_blocks(ROOT / "README.md"))))
def test_readme_python_snippet_runs(index, demo_pack, monkeypatch):
    """Each snippet as a script in a fresh namespace, from the folder README's paths are relative to."""
    monkeypatch.chdir(demo_pack)
    exec(compile(python_blocks(ROOT / "README.md")[index], f"README.md python block {index}", "exec"), {})


def test_slurm_readme_names_only_keys_that_exist():
    sources = "".join(
        p.read_text() for pattern in ("conf/**/*.yaml", "zoo/**/*.py", "slurm/**/*.sh") for p in ROOT.glob(pattern)
    )
    named = set(re.findall(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)+)`", (ROOT / "slurm" / "README.md").read_text()))
    assert named and not [key for key in sorted(named) if key not in sources]


def test_example_usage_names_its_own_flags():
    for example in (ROOT / "examples").glob("*.py"):
        text = example.read_text()
        usage_flags = set(re.findall(r"\[(--[a-z-]+)", text.split('"""')[1]))
        assert usage_flags <= set(re.findall(r'add_argument\("(--[a-z-]+)"', text)), example.name
