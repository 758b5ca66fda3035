"""Datasets held as in-memory tensors and fed by indexing.

For small datasets this is ~8x cheaper per batch than `DataLoader(TensorDataset)`
(measured: 0.02 ms vs 0.16 ms per batch of 32), which dominates for tiny models.
"""

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zoo.data.convection import load_convection
from zoo.data.images import ImageTransform, augment_generator, read_images
from zoo.data.mnist1d import load_mnist1d
from zoo.data.pydoc_text import load_pydoc
from zoo.data.tokens import load_tokens


@dataclass
class TensorData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    transform: ImageTransform | None = None  # per batch: uint8 images -> augmented, normalized floats

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in ("train", "test"):
            raise ValueError(f"unknown split {name!r}; use 'train' or 'test'")
        return (self.x_train, self.y_train) if name == "train" else (self.x_test, self.y_test)

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                epoch: Callable[[], int] = lambda: 0) -> "Batches":
        """Mini-batches of `split` as the model sees them (transformed; augmented when shuffled)."""
        return Batches(*self.split(split), batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                       transform=self.transform)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of one epoch's shuffle: a function of (seed, epoch) only, so a resumed run
    draws exactly the batches an uninterrupted one would."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of `n` training samples that epoch `epoch` of seed `seed` visits."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))


class Batches:
    """Iterable over `(x, y)` mini-batches of tensors; reshuffled per epoch when `shuffle`.

    `epoch` is read at each `iter()` (a callable, so a trainer can supply its counter).
    `transform` maps each `x` batch; when shuffling, with augmentation drawn per sample for the
    epoch from (seed, epoch), independent of the batch size.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = False,
                 seed: int = 0, epoch: Callable[[], int] = lambda: 0, transform: ImageTransform | None = None):
        self.x, self.y, self.batch_size = x, y, int(batch_size)
        self.shuffle, self.seed, self.epoch, self.transform = shuffle, seed, epoch, transform

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = epoch_order(len(self.x), self.seed, self.epoch()) if self.shuffle else torch.arange(len(self.x))
        augment = {}  # per-sample augmentation parameters of the epoch, in visiting order
        if self.shuffle and self.transform:
            augment = self.transform.sample(len(order), augment_generator(self.seed, self.epoch()))
        for start in range(0, len(order), self.batch_size):
            idx, end = order[start:start + self.batch_size], start + self.batch_size
            x = self.x[idx]
            if self.transform:
                x = self.transform(x, {k: v[start:end] for k, v in augment.items()})
            yield x, self.y[idx]


def load(cfg: Mapping, root: str | Path):
    """The dataset named by `cfg["name"]`, files under `root`: a `TensorData` for classification, or the
    task's own data (`TokenData`, `ConvectionData`); `n_train` keeps the first n train samples."""
    if cfg["name"] not in READERS:
        raise ValueError(f"unknown data.name={cfg['name']!r}; available: {sorted(READERS)}")
    return READERS[cfg["name"]](cfg, Path(root))


def _mnist1d(cfg: Mapping, root: Path) -> TensorData:
    arrays = load_mnist1d(root, cfg.get("generator"))
    n = cfg.get("n_train") or len(arrays["x_train"])
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    return TensorData(
        x_train=tensors["x_train"][:n].float(), y_train=tensors["y_train"][:n].long(),
        x_test=tensors["x_test"].float(), y_test=tensors["y_test"].long(),
    )


def _images(cfg: Mapping, root: Path) -> TensorData:
    return TensorData(**read_images(cfg, root), transform=ImageTransform.from_config(cfg))


READERS = {
    "mnist1d": _mnist1d,
    **{name: _images for name in ("cifar10", "cifar100", "svhn", "tinyimagenet")},
    "openwebtext": load_tokens,
    "pydoc": load_pydoc,
    "convection": lambda cfg, root: load_convection(cfg),
}
