"""SVHN, cropped digits ("format 2"): `train_32x32.mat` / `test_32x32.mat` (MATLAB v5, read by scipy, no pickle).

`X` is `(32, 32, 3, n)` uint8, `y` is `(n, 1)` with labels 1..10 where 10 is the digit 0.
"""

from pathlib import Path

import numpy as np
from scipy.io import loadmat

from zoo.data.missing import require

SOURCE = "http://ufldl.stanford.edu/housenumbers/ (format 2: cropped digits)"


def read_svhn(root: Path, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images `(n, 3, 32, 32)` uint8 and labels `(n,)` int64 in 0..9; the first `limit` if given."""
    name = f"{split}_32x32.mat"
    path = require(root / "svhn" / name, root, "SVHN", f"the format-2 file svhn/{name}", SOURCE)
    mat = loadmat(path, variable_names=["X", "y"])
    x, y = mat["X"][..., :limit], mat["y"].ravel()[:limit]
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), (y % 10).astype(np.int64)
