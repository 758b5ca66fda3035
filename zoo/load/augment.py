"""Weight augmentations beside `Permute` (zoo.load.permute), as hyper-representation training uses them:
additive Gaussian noise and erasing of whole units. Each is a transform `(state dict, meta) → state dict`
for `open_zoo(transform=...)`, seeded, picklable; `Chain` applies several in order.
"""

from collections.abc import Mapping

import torch

from zoo.load.tokens import layout_of, token_layers


def _generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


class Noise:
    """Adds N(0, sigma²) to every floating-point weight; `relative=True` scales sigma by each tensor's std."""

    def __init__(self, sigma: float, relative: bool = False, seed: int | None = None):
        self.sigma, self.relative, self.generator = sigma, relative, _generator(seed)

    def __call__(self, weights: Mapping[str, torch.Tensor], meta: Mapping | None = None) -> dict[str, torch.Tensor]:
        out = {}
        for name, t in weights.items():
            if not t.is_floating_point():
                out[name] = t
                continue
            scale = self.sigma * (t.float().std().item() if self.relative and t.numel() > 1 else 1.0)
            out[name] = t + (scale * torch.randn(t.shape, generator=self.generator)).to(t.dtype)
        return out


class Erase:
    """Sets each output unit of each layer (its row in every tensor of the module: one token of the
    `tokens` view) to zero with probability `p`."""

    def __init__(self, p: float, seed: int | None = None):
        if not 0 <= p <= 1:
            raise ValueError(f"Erase(p={p}): p is a probability")
        self.p, self.generator = p, _generator(seed)

    def __call__(self, weights: Mapping[str, torch.Tensor], meta: Mapping | None = None) -> dict[str, torch.Tensor]:
        out = dict(weights)
        for layer in token_layers(layout_of(weights)):
            units = layer[0][1][0] if layer[0][1] else 1
            erased = torch.rand(units, generator=self.generator) < self.p
            for name, shape, _ in layer:
                mask = erased.view(-1, *[1] * (len(shape) - 1)) if shape else erased[0]
                out[name] = weights[name].masked_fill(mask, 0)
        return out


class Chain:
    """Applies transforms in order: `Chain(Permute(0), Noise(0.01, seed=0), Erase(0.1, seed=0))`."""

    def __init__(self, *transforms):
        self.transforms = transforms

    def __call__(self, weights: Mapping[str, torch.Tensor], meta: Mapping) -> dict[str, torch.Tensor]:
        for transform in self.transforms:
            weights = transform(weights, meta)
        return weights
