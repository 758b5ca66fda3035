"""The `tokens` view: a state dict as a sequence of fixed-size tokens, one per output unit (as
hyper-representations such as SANE read weights), and its exact inverse.

A module's floating-point tensors (those named `<module>.<x>`, e.g. a Linear's weight and bias,
or a BatchNorm's weight, bias and running statistics) share their first dimension, the output
units. Unit i's token is the concatenation of every tensor's slice i: a Linear unit's incoming
weights with its bias appended, a conv channel's kernel with its bias, a BatchNorm channel's four
numbers, an embedding row. A unit longer than `token_size` is cut into several tokens (chunks);
the last one is zero-padded and `mask` marks the real values. `positions` holds
(layer, unit, chunk) per token, layer counting modules in module order. Tensors of one module
whose first dimensions differ are tokenized as separate layers.

Tokenizing only copies values (into the widest floating dtype of the state dict), so
`Tokens.inverse` gives back every floating-point tensor bit for bit. Integer buffers
(BatchNorm's `num_batches_tracked`) are left out, as in the `flat` view.
"""

from collections.abc import Mapping

import torch

Layer = list[tuple[str, list[int], torch.dtype]]  # (name, shape, dtype) of the tensors of one layer


def token_layers(layout: list[Mapping]) -> list[Layer]:
    """The tokenized layers of a `meta["layout"]` (`[{name, shape, dtype}]`, module order)."""
    modules: dict[str, Layer] = {}
    for s in layout:
        dtype = getattr(torch, s["dtype"]) if isinstance(s["dtype"], str) else s["dtype"]
        if dtype.is_floating_point:
            modules.setdefault(s["name"].rpartition(".")[0], []).append((s["name"], list(s["shape"]), dtype))
    layers = []
    for tensors in modules.values():
        units = {_units(shape) for _, shape, _ in tensors}
        layers += [tensors] if len(units) == 1 else [[t] for t in tensors]
    return layers


def _units(shape: list[int]) -> int:
    return shape[0] if shape else 1


def _unit_size(layer: Layer) -> int:
    return sum(torch.Size(shape).numel() // _units(shape) for _, shape, _ in layer)


def layout_of(weights: Mapping[str, torch.Tensor]) -> list[dict]:
    """A `meta["layout"]` of a state dict."""
    return [{"name": n, "shape": list(t.shape), "dtype": t.dtype} for n, t in weights.items()]


class Tokens:
    """View `state dict → {"tokens": (N, token_size), "positions": (N, 3) int64, "mask": (N, token_size) bool}`.

    With `max_tokens`, every sample is padded to that many tokens (all-False mask rows), so that
    samples of different widths batch with the default collate; more tokens than that is an error.
    """

    def __init__(self, token_size: int = 64, max_tokens: int | None = None):
        self.token_size, self.max_tokens = token_size, max_tokens

    def __call__(self, weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        layers = token_layers(layout_of(weights))
        dtype = _widest(t for layer in layers for _, _, t in layer)
        tokens, positions, masks = [], [], []
        for index, layer in enumerate(layers):
            units, size = _units(layer[0][1]), _unit_size(layer)
            chunks = -(-size // self.token_size)
            rows = torch.zeros(units, chunks * self.token_size, dtype=dtype)
            rows[:, :size] = torch.cat([weights[name].reshape(units, -1).to(dtype) for name, _, _ in layer], dim=1)
            mask = torch.zeros(units, chunks * self.token_size, dtype=torch.bool)
            mask[:, :size] = True
            tokens.append(rows.view(-1, self.token_size))
            masks.append(mask.view(-1, self.token_size))
            unit, chunk = torch.meshgrid(torch.arange(units), torch.arange(chunks), indexing="ij")
            positions.append(torch.stack([torch.full_like(unit, index), unit, chunk], dim=-1).view(-1, 3))
        out = {"tokens": torch.cat(tokens), "positions": torch.cat(positions), "mask": torch.cat(masks)}
        return self._pad(out) if self.max_tokens is not None else out

    def _pad(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n = len(out["tokens"])
        if n > self.max_tokens:
            raise ValueError(f"{n} tokens, more than max_tokens={self.max_tokens}; raise max_tokens or token_size")
        return {k: torch.cat([v, v.new_zeros((self.max_tokens - n, *v.shape[1:]))]) for k, v in out.items()}

    def inverse(
        self, tokens: torch.Tensor, layout: list[Mapping], dtype: torch.dtype | None = None
    ) -> dict[str, torch.Tensor]:
        """The floating-point tensors of `layout` (a `meta["layout"]`) back from `tokens` (padding ignored),
        in their own dtypes, or in `dtype` (e.g. the float64 of normalized weights, for `Normalizer.inverse`)."""
        weights, start = {}, 0
        for layer in token_layers(layout):
            units, size = _units(layer[0][1]), _unit_size(layer)
            chunks = -(-size // self.token_size)
            rows = tokens[start : start + units * chunks].reshape(units, chunks * self.token_size)[:, :size]
            start += units * chunks
            offset = 0
            for name, shape, own in layer:
                width = torch.Size(shape).numel() // units
                weights[name] = rows[:, offset : offset + width].reshape(shape).to(own if dtype is None else dtype)
                offset += width
        if start > len(tokens):
            raise ValueError(f"{len(tokens)} tokens, the layout needs {start} (token_size={self.token_size})")
        return weights


def _widest(dtypes) -> torch.dtype:
    widest = torch.float32
    for dtype in dtypes:
        widest = torch.promote_types(widest, dtype)
    return widest
