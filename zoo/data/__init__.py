"""Datasets held as in-memory tensors and fed by indexing.

For small datasets this is ~8x cheaper per batch than `DataLoader(TensorDataset)`
(measured: 0.02 ms vs 0.16 ms per batch of 32), which dominates for tiny models.
"""

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zoo.data.mnist1d import load_mnist1d


@dataclass
class TensorData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in ("train", "test"):
            raise ValueError(f"unknown split {name!r}; use 'train' or 'test'")
        return (self.x_train, self.y_train) if name == "train" else (self.x_test, self.y_test)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of one epoch's shuffle: a function of (seed, epoch) only, so a resumed run
    draws exactly the batches an uninterrupted one would."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class Batches:
    """Iterable over `(x, y)` mini-batches of tensors; reshuffled per epoch when `shuffle`.

    `epoch` is read at each `iter()` (a callable, so a trainer can supply its counter).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = False,
                 seed: int = 0, epoch: Callable[[], int] = lambda: 0):
        self.x, self.y, self.batch_size = x, y, int(batch_size)
        self.shuffle, self.seed, self.epoch = shuffle, seed, epoch

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch()))
            order = torch.randperm(len(self.x), generator=gen)
        else:
            order = torch.arange(len(self.x))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self.x[idx], self.y[idx]


def load(cfg: Mapping, root: str | Path) -> TensorData:
    """The dataset named by `cfg["name"]`, files under `root`; `n_train` keeps the first n train samples."""
    if cfg["name"] != "mnist1d":
        raise ValueError(f"unknown data.name={cfg['name']!r}; available: ['mnist1d']")
    arrays = load_mnist1d(root)
    n = cfg.get("n_train") or len(arrays["x_train"])
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    return TensorData(
        x_train=tensors["x_train"][:n].float(), y_train=tensors["y_train"][:n].long(),
        x_test=tensors["x_test"].float(), y_test=tensors["y_test"].long(),
    )
