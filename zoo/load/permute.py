"""Permutation augmentation: reorder hidden units without changing the function.

A random permutation of every symmetry `zoo.align.permutation` knows (sequential MLPs and
CNNs, ResNets with residual-consistent permutations, ViT and GPT): the weights change, every output stays.
"""

from collections.abc import Mapping

import torch

from zoo.align.permutation import apply, heads, random_perms, spec_for


def permute(
    weights: Mapping[str, torch.Tensor],
    generator: torch.Generator | None = None,
    arch: str = "sequential",
    n_heads: int | None = None,
) -> dict[str, torch.Tensor]:
    """A copy of `weights` with the hidden units of every layer randomly permuted (transformers:
    attention heads too, given their count)."""
    spec = spec_for(arch, weights, heads=n_heads)
    return apply(spec, random_perms(spec, weights, generator), weights)


class Permute:
    """Transform for `open_zoo(transform=...)`: `(weights, meta) → permuted weights`."""

    def __init__(self, seed: int | None = None):
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    def __call__(self, weights: Mapping[str, torch.Tensor], meta: Mapping) -> dict[str, torch.Tensor]:
        return permute(weights, self.generator, meta["arch"], heads(meta.get("config", {}).get("model", {})))
