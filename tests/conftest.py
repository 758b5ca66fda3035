import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["slurm_cluster"]  # the one-node SLURM test cluster fixtures

# Small, fast cells: the first 300 mnist1d samples, a few epochs.
FAST = ["data.n_train=300", "trainer.max_epochs=2"]


def zoo_train(root: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    """`zoo-train` through its real entry point, all outputs under `root`."""
    flags = [o for o in overrides if o.startswith("-")]  # argparse wants flags before overrides
    values = [o for o in overrides if not o.startswith("-")]
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.cli.train", *flags, f"paths.root={root}", *values], capture_output=True, text=True
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"zoo-train failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


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
