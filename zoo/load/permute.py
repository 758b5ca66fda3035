"""Permutation augmentation: reorder hidden units without changing the function.

In a feed-forward chain, permuting the output units of one layer (rows of its weight, its
bias, the BatchNorm statistics that follow) and the input units of the next layer
(columns) leaves every output unchanged. This holds for sequential MLPs and CNNs (conv
channels; a flatten before a linear layer keeps each channel's block of columns together),
not for residual networks, whose skip connections tie the permutations of several layers.
"""

from collections.abc import Mapping

import torch

SEQUENTIAL = ("mlp", "cnn")


def chain(weights: Mapping[str, torch.Tensor]) -> list[list[str]]:
    """The state dict cut into layers: each starts at a weight of ≥2 dims (linear or conv) and
    holds the 1-d tensors that follow it (bias, norm weight/bias/running stats)."""
    layers: list[list[str]] = []
    for name, t in weights.items():
        if t.dim() >= 2:
            layers.append([name])
        elif layers and t.dim() == 1:
            layers[-1].append(name)
        elif t.dim() != 0:  # scalars (num_batches_tracked) do not depend on units
            raise ValueError(f"{name}: a 1-d tensor before the first weight matrix; not a sequential net")
    return layers


def permute(weights: Mapping[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """A copy of `weights` (in module order) with the hidden units of every layer randomly permuted."""
    out = dict(weights)
    layers = chain(weights)
    for layer, following in zip(layers[:-1], layers[1:]):
        units = weights[layer[0]].shape[0]
        perm = torch.randperm(units, generator=generator)
        for name in layer:
            out[name] = out[name][perm]
        nxt = out[following[0]]
        if nxt.shape[1] % units:
            raise ValueError(f"{following[0]}: {nxt.shape[1]} inputs do not split into the {units} units of {layer[0]}")
        # a flatten (C, H, W) → C·H·W gives each unit a contiguous block of inputs
        blocks = nxt.reshape(nxt.shape[0], units, -1, *nxt.shape[2:])
        out[following[0]] = blocks[:, perm].reshape(nxt.shape)
    return out


class Permute:
    """Transform for `open_zoo(transform=...)`: `(weights, meta) → permuted weights`."""

    def __init__(self, seed: int | None = None):
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    def __call__(self, weights: Mapping[str, torch.Tensor], meta: Mapping) -> dict[str, torch.Tensor]:
        if meta["arch"] not in SEQUENTIAL:
            raise ValueError(f"permutation augmentation supports sequential nets {SEQUENTIAL}, not {meta['arch']!r}")
        return permute(weights, self.generator)
