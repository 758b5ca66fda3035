"""TinyImageNet as distributed (`tiny-imagenet-200/`): 200 classes of 64x64 JPEGs, decoded with Pillow.

    wnids.txt                                 the 200 class ids; label = line index, as the reference study's
                                              loader (scripts/tinyimagenet_resnet18_wide/tiny_imagenet_helpers.py)
    train/<wnid>/images/*.JPEG                500 per class
    val/images/*.JPEG + val/val_annotations.txt   (file, wnid, box) per line; our test split
Decoding 110k JPEGs takes a while, so the full splits are cached once as `tinyimagenet_<split>_wnids.npz`
(no pickle) beside the folder; smoke runs decode only the first few files and cache nothing.
"""

from pathlib import Path

import numpy as np

from zoo.atomic import atomic_write
from zoo.data.missing import require

SOURCE = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def read_tinyimagenet(root: Path, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images `(n, 3, 64, 64)` uint8 and labels `(n,)` int64 of `split`; the first `limit` files if given."""
    if limit is not None:
        return _decode(_files(root, split)[:limit])
    cache = root / f"tinyimagenet_{split}_wnids.npz"  # _wnids: labels in wnids.txt order (older caches: sorted)
    if not cache.exists():
        x, y = _decode(_files(root, split))
        with atomic_write(cache) as f:
            np.savez(f, x=x, y=y)
    with np.load(cache, allow_pickle=False) as f:
        return f["x"], f["y"]


def _files(root: Path, split: str) -> list[tuple[Path, int]]:
    base = root / "tiny-imagenet-200"
    wnids = require(base / "wnids.txt", root, "TinyImageNet", "the official folder tiny-imagenet-200/", SOURCE)
    label = {wnid: i for i, wnid in enumerate(wnids.read_text().split())}
    if split == "train":
        return [(path, i) for wnid, i in label.items()
                for path in sorted((base / "train" / wnid / "images").glob("*.JPEG"))]
    annotations = require(base / "val" / "val_annotations.txt", root, "TinyImageNet", "the val labels", SOURCE)
    rows = (line.split("\t") for line in annotations.read_text().splitlines() if line)
    return [(base / "val" / "images" / row[0], label[row[1]]) for row in rows]


def _decode(files: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image  # comes with matplotlib

    def rgb(path: Path) -> np.ndarray:
        with Image.open(path) as img:  # a few images are grayscale
            return np.asarray(img.convert("RGB"))

    x = np.stack([rgb(path) for path, _ in files]).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), np.array([label for _, label in files], dtype=np.int64)
