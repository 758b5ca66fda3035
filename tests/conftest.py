"""Fixtures shared by the test modules (helpers they share: helpers.py)."""

import json
import os
from pathlib import Path

import pytest
from helpers import MERGING_GRID

pytest_plugins = ["slurm_cluster"]  # the one-node SLURM test cluster fixtures


@pytest.fixture(scope="session", autouse=True)
def zoo_root(tmp_path_factory):
    """paths.root's default (ZOO_ROOT) is a temp folder: a zoo the user trained in the checkout
    (runs/, shards/) can change no test's outcome, and no test writes there."""
    previous = os.environ.get("ZOO_ROOT")
    os.environ["ZOO_ROOT"] = str(tmp_path_factory.mktemp("zoo_root"))
    yield
    if previous is None:
        del os.environ["ZOO_ROOT"]
    else:
        os.environ["ZOO_ROOT"] = previous


@pytest.fixture(scope="module")
def one_thread():
    """For thousands of tiny steps or HVPs: with 2 threads on a busy 2-core machine they ran 5-50x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """One mnist1d cache for the whole session (generating it takes seconds)."""
    from zoo.data.mnist1d import load_mnist1d

    root = tmp_path_factory.mktemp("data")
    load_mnist1d(root)
    return root


@pytest.fixture(scope="session")
def merging_zoo(tmp_path_factory, data_root):
    """6 demo models (widths 8 and 64, 3 seeds, checkpoints at epochs 0, 5, 8, 10; trained here, as
    one `zoo-train -m` would) with the phase labels zoo-phases would write: the merging apps' zoo
    (test_align, test_prune_transfer). Returns (root, overrides, cell configs)."""
    from zoo.sweep import cell_configs
    from zoo.train.run import train_model

    root = tmp_path_factory.mktemp("merging")
    overrides = [f"paths.root={root}", f"paths.data={data_root}", *MERGING_GRID]
    cfgs = cell_configs(overrides)
    assert all(train_model(cfg).state == "ok" for cfg in cfgs)
    labels = {8: "I", 64: "IV-B"}  # model id -> phase, so figures and tables show them
    (root / "runs" / "demo" / "phases.json").write_text(json.dumps({c.id: labels[c.model.width] for c in cfgs}))
    return root, overrides, cfgs


@pytest.fixture(scope="session")
def net_data_root(tmp_path_factory) -> Path:
    """Tiny CIFAR-10 and OpenWebText files in their real formats, for ResNet/ViT/GPT cells (NET_CELLS)."""
    import zoo_files

    root = tmp_path_factory.mktemp("datasets")
    zoo_files.write_cifar10(root, per_file=8)
    zoo_files.write_openwebtext(root)
    return root
