"""Permutation symmetries of a network, read from its state dict.

Reordering the hidden units of a layer — the rows of its weight, its bias, the BatchNorm
entries that follow — together with the matching inputs of every layer that reads those units
leaves the function unchanged. A `Spec` names, for every tensor, the permutation acting on each
axis (None: that axis is not permuted):

    {"layers.0.weight": ("P0", None), "layers.2.weight": ("P1", "P0"), "layers.4.weight": (None, "P1")}

A layer that reads a flattened (C, H, W) map sees each unit as a contiguous block of H·W
inputs; its axis is permuted block-wise.

In a ResNet the skip connections add a block's input to its output, so every block of a stage
that keeps the identity shortcut shares one permutation of the residual stream with the layer
that feeds it; a projection shortcut starts a new one (Ainsworth et al., "Git Re-Basin", 2023).
In a transformer all blocks add to one residual stream, so it has a single permutation.
Attention is head-aware: the q and k channels of a head may be reordered together, its v channels
(with the matching inputs of the output projection) separately, and whole heads may trade places —
q, k and v of a head move as one unit (`Spec.heads`).

Specs are built from tensor names and shapes alone, so they work on packed samples as well as
on modules; a state dict that does not fit the layout raises an error that names the tensor.
"""

import re
from collections.abc import Mapping

import torch

from zoo.models.transformer import head_count

Axis = str | tuple[str | None, ...] | None  # a tuple splits the axis into equal segments, one permutation each
Weights = Mapping[str, torch.Tensor]


class Spec(dict[str, tuple[Axis, ...]]):
    """Tensor name -> the permutation on each of its axes. `heads`: the head-structured permutations,
    one `(n_heads, qk, v)` per attention layer — `qk` reorders the q and k channels, `v` the v
    channels, each only within heads, and both move the heads by one shared permutation."""

    def __init__(self, *args, heads: list[tuple[int, str, str]] | None = None):
        super().__init__(*args)
        self.heads = heads or []


def segments(axis: Axis) -> tuple[str | None, ...]:
    return axis if isinstance(axis, tuple) else (axis,)


def heads(model_cfg: Mapping) -> int | None:
    """Attention heads per layer of a transformer config (`width / head_dim`), None for other models."""
    if model_cfg.get("name") not in ("gpt", "vit"):
        return None
    return head_count(model_cfg["width"], model_cfg["head_dim"])


def sequential_spec(weights: Weights) -> Spec:
    """A chain of linear or conv layers (`zoo.models.MLP`, any sequential CNN), each weight followed
    by its 1-d tensors (bias, BatchNorm): the output units of layer i are `P<i>`."""
    n_layers = sum(t.dim() >= 2 for t in weights.values())
    spec = Spec()
    i = -1
    for name, t in weights.items():
        i += t.dim() >= 2
        out = f"P{i}" if i < n_layers - 1 else None
        if t.dim() >= 2:
            spec[name] = (out, f"P{i - 1}" if i else None, *[None] * (t.dim() - 2))
        elif t.dim() == 1 and i < 0:
            raise ValueError(f"{name}: a 1-d tensor before the first weight matrix; not a sequential net")
        else:
            spec[name] = (out,) * t.dim()  # scalars (num_batches_tracked) have no units
    return spec


def resnet_spec(weights: Weights) -> Spec:
    """`zoo.models.ResNet` (18 or 50): one permutation per residual stream, one per inner conv."""
    spec = Spec()
    stream = "stem"
    _layer(spec, weights, "stem.0", stream, None)
    _layer(spec, weights, "stem.1", stream)
    blocks = sorted(
        {m.group(1) for n in weights if (m := re.match(r"(layers\.\d+\.\d+)\.", n))},
        key=lambda b: tuple(int(i) for i in b.split(".")[1:]),
    )
    for block in blocks:
        convs = sorted({m.group(1) for n in weights if (m := re.match(rf"{re.escape(block)}\.conv(\d)\.", n))})
        projected = f"{block}.shortcut.0.weight" in weights
        out = f"{block}.out" if projected else stream  # identity shortcut: the block keeps the stream
        inp = stream
        for k in convs:
            unit = out if k == convs[-1] else f"{block}.conv{k}"
            _layer(spec, weights, f"{block}.conv{k}", unit, inp)
            _layer(spec, weights, f"{block}.bn{k}", unit)
            inp = unit
        if projected:
            _layer(spec, weights, f"{block}.shortcut.0", out, stream)
            _layer(spec, weights, f"{block}.shortcut.1", out)
        stream = out
    _layer(spec, weights, "fc", None, stream)
    return _complete(spec, weights, "resnet")


def transformer_spec(weights: Weights, n_heads: int | None = None) -> Spec:
    """`zoo.models.ViT` and `GPT`: one permutation of the residual stream ("res": the embeddings,
    every LayerNorm — it normalizes over channels, so it commutes with reordering them — and
    every layer that reads or writes the stream) and one of each block's MLP hidden units. With
    `n_heads` (the model config's), attention is permuted too: per block a q/k and a v permutation
    within heads, heads moved as units (`Spec.heads`); without, its channels stay in place."""
    spec = Spec()
    for name, t in weights.items():
        module, leaf = name.rpartition(".")[::2]
        block = re.match(r"blocks\.\d+", module)
        if m := re.fullmatch(r"(blocks\.\d+)\.mlp\.([02])", module):
            hidden = f"{m.group(1)}.mlp"
            axes = (hidden, "res") if m.group(2) == "0" else ("res", hidden)
            spec[name] = axes if leaf == "weight" else axes[:1]
        elif module.endswith("attn.qkv"):  # rows: q, k, v stacked; reads the stream
            qk, v = (f"{block.group(0)}.attn.{p}" for p in ("qk", "v")) if n_heads else (None, None)
            spec[name] = ((qk, qk, v), "res") if leaf == "weight" else ((qk, qk, v),)
            if n_heads and leaf == "weight":
                spec.heads.append((n_heads, qk, v))
        elif module in ("wte", "wpe", "head", "lm_head"):
            spec[name] = (None, "res") if leaf == "weight" else (None,)  # reads the stream
        elif module.endswith("attn.proj"):  # reads the v channels, writes the stream
            v = f"{block.group(0)}.attn.v" if n_heads else None
            spec[name] = ("res", v) if leaf == "weight" else ("res",)
        elif module == "patch":
            spec[name] = ("res", *[None] * (t.dim() - 1))  # writes the stream
        elif name in ("cls", "pos"):
            spec[name] = (None, None, "res")
        elif re.fullmatch(r"(blocks\.\d+\.ln[12]|ln|ln_f)", module):
            spec[name] = ("res",)
    return _complete(spec, weights, "transformer")


SPECS = {
    "mlp": sequential_spec,
    "sequential": sequential_spec,
    "resnet": resnet_spec,
    "vit": transformer_spec,
    "gpt": transformer_spec,
}


def spec_for(arch: str, weights: Weights, heads: int | None = None) -> Spec:
    """The symmetries of a model of `arch`; transformers permute attention heads given their count
    (`heads(model_cfg)`)."""
    if arch not in SPECS:
        raise ValueError(f"permutation alignment supports {sorted(SPECS)}, not {arch!r}")
    return transformer_spec(weights, heads) if SPECS[arch] is transformer_spec else SPECS[arch](weights)


def _layer(spec: Spec, weights: Weights, module: str, out: str | None, inp: str | None = None) -> None:
    """Axes of every tensor of `module`: weight (out, in, ...), 1-d tensors (out,), scalars ()."""
    for name, t in weights.items():
        if name.startswith(module + "."):
            spec[name] = (out, inp, *[None] * (t.dim() - 2)) if t.dim() >= 2 else (out,) * t.dim()


def _complete(spec: Spec, weights: Weights, arch: str) -> Spec:
    missing = [n for n in weights if n not in spec]
    if missing:
        raise ValueError(
            f"{missing[0]}: not part of the {arch} layout this spec understands "
            f"({len(missing)} tensor(s) unplaced); is this state dict a zoo.models {arch}?"
        )
    return spec


def sizes(spec: Spec, weights: Weights) -> dict[str, int]:
    """Units per permutation (the output axis of the layer that makes them); raises where a
    tensor does not fit."""
    out: dict[str, int] = {}
    for name, axes in spec.items():
        if axes:
            segs = segments(axes[0])
            n = weights[name].shape[0] // len(segs)
            for p in segs:
                if p is not None and out.setdefault(p, n) != n:
                    raise ValueError(f"{name}: {n} units, but permutation {p} has {out[p]}")
    for name, axes in spec.items():
        for axis, entry in enumerate(axes):
            segs = segments(entry)
            for p in segs:
                if p is not None and weights[name].shape[axis] % (out[p] * len(segs)):
                    raise ValueError(
                        f"{name}: axis {axis} has {weights[name].shape[axis]} entries, which do not "
                        f"split into {len(segs)} segment(s) of the {out[p]} units of permutation {p}"
                    )
    for n_heads, *perms in spec.heads:
        for p in perms:
            if out[p] % n_heads:
                raise ValueError(f"permutation {p}: {out[p]} channels do not split into {n_heads} heads")
    return out


def permute_axis(t: torch.Tensor, axis: int, perm: torch.Tensor) -> torch.Tensor:
    """`t` with entry i of `axis` taken from entry perm[i]; an axis k times longer than the
    permutation (a flatten of (C, H, W) into C·H·W inputs) moves contiguous blocks of k."""
    return t.unflatten(axis, (len(perm), -1)).index_select(axis, perm).flatten(axis, axis + 1)


def permute_segments(t: torch.Tensor, axis: int, entry: Axis, perms: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """`permute_axis` for a spec entry: each equal segment of the axis by its own permutation."""
    segs = segments(entry)
    if len(segs) == 1:
        return t if segs[0] is None else permute_axis(t, axis, perms[segs[0]])
    return torch.cat(
        [c if p is None else permute_axis(c, axis, perms[p]) for c, p in zip(t.chunk(len(segs), axis), segs)], axis
    )


def apply(spec: Spec, perms: Mapping[str, torch.Tensor], weights: Weights) -> dict[str, torch.Tensor]:
    """`weights` with each permutation applied: new unit i of P is old unit `perms[P][i]`."""
    out = {}
    for name, t in weights.items():
        for axis, entry in enumerate(spec[name]):
            t = permute_segments(t, axis, entry, perms)
        out[name] = t
    return out


def head_perm(order: torch.Tensor, within: list[torch.Tensor]) -> torch.Tensor:
    """The channel permutation that puts old head `order[i]` at head i, its channels reordered by
    `within[i]` (each a permutation of one head's channels)."""
    d = len(within[0])
    return torch.cat([int(j) * d + w for j, w in zip(order, within)])


def random_perms(spec: Spec, weights: Weights, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """A random permutation of every symmetry; head-structured ones keep heads whole."""
    n_units = sizes(spec, weights)
    perms = {p: torch.randperm(n, generator=generator) for p, n in n_units.items()}
    for n_heads, *tied in spec.heads:
        order, d = torch.randperm(n_heads, generator=generator), n_units[tied[0]] // n_heads
        for p in tied:
            perms[p] = head_perm(order, [torch.randperm(d, generator=generator) for _ in range(n_heads)])
    return perms


def inverse(perms: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {p: torch.argsort(perm) for p, perm in perms.items()}
