"""Weights of a sample, decoded from safetensors bytes, in the three views a loader offers.

- `state_dict`: `{name: tensor}` in module order (the order of `meta["layout"]`).
- `flat`: one float32 vector, the floating-point tensors concatenated in module order
  (integer buffers such as BatchNorm's `num_batches_tracked` are left out).
- `layers`: `{module name: float32 vector}`, one per module with floating-point tensors.
- `tokens`: one token per output unit, with positions and mask (zoo.load.tokens; `Tokens(token_size)`
  sets the token size, and any callable `state dict → anything` is a view too).

Tensors are views on the sample's buffer (no copy); `flat` and `layers` copy only where
tensors must be concatenated or cast.
"""

from collections.abc import Mapping

import torch

from zoo.load.tokens import Tokens
from zoo.shard_format import DTYPES, read_header

VIEWS = ("flat", "state_dict", "layers", "tokens")


def decode(data: bytearray, meta: Mapping) -> dict[str, torch.Tensor]:
    """The state dict of a sample, in module order, as views on `data` (one shared storage)."""
    header, start = read_header(data)
    order = meta.get("layout")
    names = [s.get("name") for s in order if isinstance(s, Mapping)] if isinstance(order, list) else None
    if (
        names is None
        or len(names) != len(order)
        or not all(isinstance(n, str) for n in names)
        or sorted(names) != sorted(header)
    ):
        raise ValueError("meta.json's layout does not list the tensors of the weights")
    buffer = torch.frombuffer(data, dtype=torch.uint8) if len(data) else torch.empty(0, dtype=torch.uint8)
    weights = {}
    for name in names:
        info = header[name]
        begin, end = info["data_offsets"]
        if (start + begin) % DTYPES[info["dtype"]].itemsize:
            raise ValueError(f"tensor {name!r} is not aligned to its dtype")
        weights[name] = buffer[start + begin : start + end].view(DTYPES[info["dtype"]]).view(info["shape"])
    return weights


def decode_safetensors(key: str, data: bytes) -> dict[str, torch.Tensor] | None:
    """A `webdataset` decoder for shards read without zoo's loader:
    `wds.WebDataset(urls).decode(decode_safetensors)` gives `weights.safetensors` as `{name: tensor}`
    (safetensors only: no pickle is ever loaded); None leaves other members to the next decoder."""
    if not key.lower().endswith("safetensors"):
        return None
    from safetensors.torch import load

    return load(bytes(data))


def flat(weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The floating-point tensors, flattened, cast to float32 and concatenated."""
    parts = [t.reshape(-1) for t in weights.values() if t.is_floating_point()]
    if parts and _adjacent_float32(parts):
        # already one run of float32 in memory (decode's views, safetensors order = module order): no copy
        return parts[0].as_strided((sum(p.numel() for p in parts),), (1,))
    return _cat32(parts)


def _adjacent_float32(parts: list[torch.Tensor]) -> bool:
    return all(p.dtype == torch.float32 for p in parts) and all(
        a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() and a.data_ptr() + a.nbytes == b.data_ptr()
        for a, b in zip(parts, parts[1:])
    )


def layers(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One float32 vector per module (tensor names up to the last dot), in module order."""
    groups: dict[str, list[torch.Tensor]] = {}
    for name, t in weights.items():
        if t.is_floating_point():
            groups.setdefault(name.rpartition(".")[0], []).append(t.reshape(-1))
    return {module: _cat32(parts) for module, parts in groups.items()}


def unflatten(vector: torch.Tensor, spec: list[dict]) -> dict[str, torch.Tensor]:
    """Inverse of `flat` for the floating-point tensors of `spec` (a `meta["layout"]`)."""
    weights, offset = {}, 0
    for s in spec:
        dtype = getattr(torch, s["dtype"])
        if not dtype.is_floating_point:
            continue
        numel = torch.Size(s["shape"]).numel()
        weights[s["name"]] = vector[offset : offset + numel].view(s["shape"]).to(dtype)
        offset += numel
    if offset != len(vector):
        raise ValueError(f"vector has {len(vector)} values, the layout {offset}")
    return weights


def check(name) -> None:
    if name not in VIEWS and not callable(name):
        raise ValueError(f"unknown view={name!r}; choose one of {VIEWS} or pass a callable such as Tokens(64)")


def view(weights: dict[str, torch.Tensor], name):
    """`weights` (a state dict) in the view called `name`, or through the callable view `name`."""
    if callable(name):
        return name(weights)
    if name == "tokens":
        return Tokens()(weights)
    if name == "state_dict":
        return weights
    if name == "flat":
        return flat(weights)
    if name == "layers":
        return layers(weights)
    raise ValueError(f"unknown view={name!r}; choose one of {VIEWS}")


def _cat32(parts: list[torch.Tensor]) -> torch.Tensor:
    if len(parts) == 1:
        return parts[0].float()  # no copy when it already is float32
    return torch.cat([p.float() for p in parts]) if parts else torch.empty(0)
