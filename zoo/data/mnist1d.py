"""MNIST-1D (Greydanus 2020): 4,000 train / 1,000 test sequences of length 40, built offline.

Generated once with the package's default arguments and cached as `.npz` (no pickle),
so every worker of a sweep reads the same bytes. Other generator arguments (`generator`: e.g. more
noise, scale or shear, another seed) make a shifted domain, cached under a name of their own.
"""

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from zoo.atomic import atomic_write


def load_mnist1d(root: str | Path, generator: Mapping | None = None) -> dict[str, np.ndarray]:
    """Arrays `x_train, y_train, x_test, y_test`, generating `root/mnist1d.npz` on first use;
    `generator` overrides arguments of `mnist1d.data.get_dataset_args` (`mnist1d-<hash>.npz`)."""
    generator = dict(generator or {})
    tag = hashlib.sha256(json.dumps(generator, sort_keys=True).encode()).hexdigest()[:8]
    path = Path(root) / (f"mnist1d-{tag}.npz" if generator else "mnist1d.npz")
    if not path.exists():
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        unknown = sorted(set(generator) - set(vars(args)))
        if unknown:
            raise ValueError(f"unknown mnist1d generator argument(s) {unknown}; known: {sorted(vars(args))}")
        vars(args).update(generator)
        data = make_dataset(args)
        arrays = {"x_train": data["x"], "y_train": data["y"], "x_test": data["x_test"], "y_test": data["y_test"]}
        with atomic_write(path) as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
