"""CIFAR-10 / CIFAR-100 from the official *binary* distribution (no pickle).

Each record is the label byte(s) then 3,072 pixel bytes: 1,024 red, 1,024 green, 1,024 blue, row-major.
CIFAR-10 (`cifar-10-batches-bin/`): 1 label byte, `data_batch_1..5.bin` + `test_batch.bin`.
CIFAR-100 (`cifar-100-binary/`): coarse then fine label byte, `train.bin` + `test.bin`; we use the fine label.
The pickled "python version" is not read: the project loads no pickle from others.
"""

from pathlib import Path

import numpy as np

from zoo.data.missing import DatasetNotFound, require

PIXELS = 3 * 32 * 32
SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html (the *binary version*)"
LAYOUT = {  # name: (title, folder, train files, test files, label bytes, folder of the pickled version)
    "cifar10": ("CIFAR-10", "cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)],
                ["test_batch.bin"], 1, "cifar-10-batches-py"),
    "cifar100": ("CIFAR-100", "cifar-100-binary", ["train.bin"], ["test.bin"], 2, "cifar-100-python"),
}


def read_cifar(name: str, root: Path, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images `(n, 3, 32, 32)` uint8 and labels `(n,)` int64 of `split`; the first `limit` records if given."""
    title, folder, train, test, label_bytes, pickled = LAYOUT[name]
    record = label_bytes + PIXELS
    images, labels, left = [], [], limit
    for file in train if split == "train" else test:
        path = _path(root, title, folder, file, pickled)
        raw = np.fromfile(path, dtype=np.uint8, count=-1 if left is None else left * record)
        if raw.size % record:
            raise ValueError(f"{path}: {raw.size} bytes is not a whole number of {record}-byte CIFAR records")
        raw = raw.reshape(-1, record)
        labels.append(raw[:, label_bytes - 1].astype(np.int64))
        images.append(raw[:, label_bytes:].reshape(-1, 3, 32, 32))
        if left is not None:
            left -= len(raw)
            if left <= 0:
                break
    return np.concatenate(images), np.concatenate(labels)


def _path(root: Path, title: str, folder: str, file: str, pickled: str) -> Path:
    try:
        return require(root / folder / file, root, title, f"the binary distribution's {folder}/{file}", SOURCE)
    except DatasetNotFound as err:
        if (root / pickled).exists():  # what torchvision downloads
            raise DatasetNotFound(f"{err} ({root / pickled} is the pickled python version: zoo reads only the "
                                  "binary version, as it loads no pickle from others.)") from None
        raise
