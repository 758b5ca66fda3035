"""Tiny data sets written in their real on-disk formats (nothing is ever downloaded in tests)."""

from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

RNG = np.random.default_rng(0)


def images(n: int, size: int = 32) -> np.ndarray:
    return RNG.integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def write_cifar10(root: Path, per_file: int = 3, n_test: int = 5) -> dict[str, np.ndarray]:
    """`cifar-10-batches-bin/`: records of 1 label byte + 3,072 pixel bytes (R, G, B planes)."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    out = {}
    for split, files, n in (
        ("train", [f"data_batch_{i}.bin" for i in range(1, 6)], per_file),
        ("test", ["test_batch.bin"], n_test),
    ):
        xs, ys = [], []
        for file in files:
            x, y = images(n), RNG.integers(0, 10, n, dtype=np.uint8)
            (folder / file).write_bytes(b"".join(bytes([label]) + img.tobytes() for label, img in zip(y, x)))
            xs.append(x)
            ys.append(y)
        out[f"x_{split}"], out[f"y_{split}"] = np.concatenate(xs), np.concatenate(ys).astype(np.int64)
    return out


def write_cifar100(root: Path, n_train: int = 8, n_test: int = 5) -> dict[str, np.ndarray]:
    """`cifar-100-binary/`: records of coarse + fine label bytes + 3,072 pixel bytes."""
    folder = root / "cifar-100-binary"
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = images(n)
        fine, coarse = RNG.integers(0, 100, n, dtype=np.uint8), RNG.integers(0, 20, n, dtype=np.uint8)
        (folder / f"{split}.bin").write_bytes(
            b"".join(bytes([c, f]) + img.tobytes() for c, f, img in zip(coarse, fine, x))
        )
        out[f"x_{split}"], out[f"y_{split}"] = x, fine.astype(np.int64)
    return out


def write_svhn(root: Path, n_train: int = 8, n_test: int = 5) -> dict[str, np.ndarray]:
    """`svhn/{train,test}_32x32.mat` (MATLAB v5): X (32, 32, 3, n) uint8, y (n, 1) in 1..10 (10 = digit 0)."""
    (root / "svhn").mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x, digit = images(n), RNG.integers(0, 10, n)
        digit[0] = 0
        savemat(
            root / "svhn" / f"{split}_32x32.mat",
            {"X": x.transpose(2, 3, 1, 0), "y": np.where(digit == 0, 10, digit).astype(np.uint8)[:, None]},
        )
        out[f"x_{split}"], out[f"y_{split}"] = x, digit
    return out


def write_tinyimagenet(root: Path, wnids=("n03", "n01", "n02"), per_class: int = 2) -> dict[str, list]:
    """`tiny-imagenet-200/`: wnids.txt, train/<wnid>/images/*.JPEG, val/images + val_annotations.txt.
    Images are flat colours (exact through JPEG up to rounding); one is grayscale, as in the real set."""
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    colours = {w: (40 * i + 20, 200 - 30 * i, 90) for i, w in enumerate(sorted(wnids))}
    for w in wnids:
        (base / "train" / w / "images").mkdir(parents=True)
        for k in range(per_class):
            Image.new("RGB", (64, 64), colours[w]).save(base / "train" / w / "images" / f"{w}_{k}.JPEG")
    val = [(f"val_{i}.JPEG", w) for i, w in enumerate([wnids[1], wnids[0]])]
    for name, w in val:
        Image.new("RGB", (64, 64), colours[w]).save(base / "val" / "images" / name)
    Image.new("L", (64, 64), 128).save(base / "train" / wnids[0] / "images" / f"{wnids[0]}_gray.JPEG")
    (base / "val" / "val_annotations.txt").write_text("".join(f"{n}\t{w}\t0\t0\t63\t63\n" for n, w in val))
    return {"colours": colours, "val": val}


def write_openwebtext(root: Path, n_train: int = 5000, n_val: int = 1000) -> dict[str, np.ndarray]:
    """`openwebtext/{train,val}.bin`: uint16 token ids, as nanoGPT's prepare.py writes them."""
    (root / "openwebtext").mkdir(parents=True)
    out = {}
    for name, n in (("train", n_train), ("val", n_val)):
        out[name] = RNG.integers(0, 50257, n, dtype=np.uint16)
        out[name].tofile(root / "openwebtext" / f"{name}.bin")
    return out


def write_all(root: Path) -> Path:
    for write in (write_cifar10, write_cifar100, write_svhn, write_tinyimagenet, write_openwebtext):
        write(root)
    return root
