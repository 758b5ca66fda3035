"""Image datasets: one pipeline for every format. Images stay uint8 `(n, 3, h, w)` in memory and
are turned into model inputs per batch: augmented (training batches only), then normalized.

Augmentation follows torchvision's `RandomCrop(size, padding)`, `RandomHorizontalFlip()` and
`RandomRotation(degrees)` (nearest, zero fill), in that order, on whole batches of tensors.
"""

import math
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zoo.data.cifar import read_cifar
from zoo.data.svhn import read_svhn
from zoo.data.tinyimagenet import read_tinyimagenet
from zoo.sizes import SMOKE_SAMPLES

READERS = {  # name: (root, split, limit) -> (uint8 images (n, 3, h, w), int64 labels (n,))
    "cifar10": partial(read_cifar, "cifar10"),
    "cifar100": partial(read_cifar, "cifar100"),
    "svhn": read_svhn,
    "tinyimagenet": read_tinyimagenet,
}


def read_images(cfg: Mapping, root: Path) -> dict[str, torch.Tensor]:
    """`x_train, y_train, x_test, y_test` of the dataset `cfg["name"]`; `n_train` keeps the first n."""
    limit = SMOKE_SAMPLES if cfg.get("smoke") else None
    arrays = {}
    for split in ("train", "test"):
        x, y = READERS[cfg["name"]](root, split, limit)
        expected = (cfg["channels"], cfg["image_size"], cfg["image_size"])
        if x.shape[1:] != expected:
            raise ValueError(f"{cfg['name']} {split} images have shape {x.shape[1:]}, expected {expected}")
        arrays[f"x_{split}"], arrays[f"y_{split}"] = torch.from_numpy(x), torch.from_numpy(y)
    n = cfg.get("n_train") or len(arrays["x_train"])
    arrays["x_train"], arrays["y_train"] = arrays["x_train"][:n], arrays["y_train"][:n]
    return arrays


class ImageTransform:
    """uint8 batch -> float batch: augmented by the given parameters (training batches), then
    normalized. Parameters are drawn per image for a whole epoch (`sample`), so an image's
    augmentation does not depend on how the epoch is cut into (micro-)batches.

    `mean`/`std` are per channel in pixel units (0-255), so no division by 255 is needed.
    """

    def __init__(self, mean: list[float], std: list[float], crop_padding: int = 0, flip: bool = False,
                 rotation: float = 0.0):
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self.crop_padding, self.flip, self.rotation = crop_padding, flip, rotation

    @classmethod
    def from_config(cls, cfg: Mapping) -> "ImageTransform":
        return cls(list(cfg["mean"]), list(cfg["std"]), **dict(cfg.get("augment") or {}))

    def sample(self, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Random augmentation parameters of `n` images: crop offsets, flips, rotation angles."""
        params = {}
        if self.crop_padding:
            params["offset"] = torch.randint(0, 2 * self.crop_padding + 1, (n, 2), generator=gen)
        if self.flip:
            params["flip"] = torch.rand(n, generator=gen) < 0.5
        if self.rotation:
            params["angle"] = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(self.rotation)
        return params

    def __call__(self, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return (self.augment(x.float(), params or {}) - self.mean) / self.std

    def augment(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """`x` transformed by the parameters `sample` drew for it (none: unchanged)."""
        if "offset" in params:
            x = crop(x, self.crop_padding, params["offset"])
        if "flip" in params:
            x = torch.where(params["flip"][:, None, None, None], x.flip(-1), x)
        if "angle" in params:
            x = rotate(x, params["angle"])
        return x


def crop(x: torch.Tensor, padding: int, offset: torch.Tensor) -> torch.Tensor:
    """Image i cut at `offset[i]` = (top, left) out of the image zero-padded by `padding` pixels."""
    n, c, h, w = x.shape
    rows = (offset[:, :1] + torch.arange(h))[:, None, :, None]
    cols = (offset[:, 1:] + torch.arange(w))[:, None, None, :]
    padded = F.pad(x, [padding] * 4)
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Image i rotated about its center by `angle[i]` radians (nearest pixel); corners filled with 0."""
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def augment_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of one epoch's augmentations: like the shuffle a function of (seed, epoch)
    only (resume-exact), but an independent stream (`spawn_key`) so it does not repeat the shuffle's draws."""
    state = np.random.SeedSequence([seed, epoch], spawn_key=(1,)).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))
