"""Per-layer normalization of weights over the training split (as hyper-representations use it).

Every floating-point tensor of the state dict (by name: `layers.0.weight`) is shifted by its mean
and divided by its scale, both taken over all values of that tensor in the training split:
`z = (w - mean) / scale`. The scale is the standard deviation rounded to a power of two, so
dividing and multiplying by it are exact; the mean is rounded to float32; the arithmetic runs in
float64. `Normalizer.inverse` therefore gives back every weight bit for bit from float64 normalized
weights, for every weight that is 0 or at least 2^-28 |mean| in magnitude (the float32 weight and
the mean then differ by at most 53 significant bits); from float32 normalized weights (what
`normalize=True` yields by default, for training) it is exact up to float32 rounding.

Statistics are computed on demand by streaming the training split once, and cached atomically
beside the manifest (`<manifest>.norm-<hash>.json`, the hash covering the shards' sha256 and the
selection), so a rerun or another worker reads them instead.
"""

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path

import torch

from zoo.atomic import write_json
from zoo.load.sources import is_manifest, read_manifest


def welford(stats: dict, name: str, t: torch.Tensor) -> None:
    """Merge tensor `t`'s count, mean and sum of squared deviations into `stats[name]` (Chan et al.)."""
    x = t.detach().double().reshape(-1)
    n, mean = x.numel(), x.mean().item()
    m2 = ((x - mean) ** 2).sum().item()
    if name not in stats:
        stats[name] = {"count": n, "mean": mean, "m2": m2}
        return
    s = stats[name]
    total = s["count"] + n
    delta = mean - s["mean"]
    s["mean"] += delta * n / total
    s["m2"] += m2 + delta**2 * s["count"] * n / total
    s["count"] = total


def layer_stats(samples) -> dict[str, dict]:
    """`{tensor name: {count, mean, std}}` over the floating-point tensors of an iterable of state dicts."""
    stats: dict[str, dict] = {}
    for weights in samples:
        for name, t in weights.items():
            if t.is_floating_point() and t.numel():
                welford(stats, name, t)
    bad = [name for name, s in stats.items() if not math.isfinite(s["mean"] + s["m2"])]
    if bad:
        raise ValueError(
            f"normalization statistics of {bad} are not finite: the training samples hold NaN/inf "
            "weights; select finite ones with finite=True or where={'status': 'ok'}"
        )
    return {
        name: {"count": s["count"], "mean": s["mean"], "std": math.sqrt(s["m2"] / s["count"])}
        for name, s in stats.items()
    }


class Normalizer:
    """Transform `(state dict, meta) → normalized state dict` and its inverse."""

    def __init__(self, stats: Mapping[str, Mapping], dtype: torch.dtype = torch.float32):
        self.stats, self.dtype = dict(stats), dtype
        self.mean = {n: float(torch.tensor(s["mean"], dtype=torch.float32)) for n, s in self.stats.items()}
        self.scale = {
            n: 2.0 ** round(math.log2(s["std"])) if s["std"] > 0 and math.isfinite(s["std"]) else 1.0
            for n, s in self.stats.items()
        }

    def __call__(self, weights: Mapping[str, torch.Tensor], meta: Mapping | None = None) -> dict[str, torch.Tensor]:
        return {
            name: ((t.double() - self.mean[self._known(name)]) / self.scale[name]).to(self.dtype)
            if t.is_floating_point()
            else t
            for name, t in weights.items()
        }

    def inverse(self, weights: Mapping[str, torch.Tensor], meta: Mapping | None = None) -> dict[str, torch.Tensor]:
        """Weights back in their own scale, in the dtypes of `meta["layout"]` (float32 without meta)."""
        dtypes = {s["name"]: getattr(torch, s["dtype"]) for s in (meta or {}).get("layout", [])}
        return {
            name: (t.double() * self.scale[self._known(name)] + self.mean[name]).to(dtypes.get(name, torch.float32))
            if t.is_floating_point()
            else t
            for name, t in weights.items()
        }

    def _known(self, name: str) -> str:
        if name not in self.stats:
            raise KeyError(
                f"no normalization statistics for tensor {name!r} (known: {sorted(self.stats)}); "
                "compute them over samples of this architecture"
            )
        return name


def cache_path(source, selection: Mapping) -> Path | None:
    """Where the statistics of `selection` over the manifest `source` are cached; None if they cannot be."""
    if not is_manifest(source):
        return None
    try:
        text = json.dumps(selection, sort_keys=True)
    except TypeError:  # a callable where-clause: no stable name to cache under
        return None
    shards = [s["sha256"] for s in read_manifest(source)["shards"]]
    digest = hashlib.sha256(json.dumps([shards, text]).encode()).hexdigest()[:12]
    path = Path(source)
    return path.with_name(f"{path.stem}.norm-{digest}.json")


def training_stats(
    source,
    *,
    split_args: Mapping,
    epochs=None,
    where: Mapping | None = None,
    finite: bool = False,
    max_abs: float | None = None,
    shards=None,
) -> dict[str, dict]:
    """Per-layer statistics over the training split of `source` (all of it if `split_args` is empty), cached."""
    from zoo.load.stream import open_zoo  # stream imports this module

    selection = {"epochs": list(epochs) if isinstance(epochs, range) else epochs, "where": where, **split_args}
    selection |= {"finite": finite, "max_abs": max_abs} if finite or max_abs is not None else {}
    path = cache_path(source, selection)
    if path is not None and path.exists():
        return json.loads(path.read_text())
    split = {"split": "train", **split_args} if split_args else {}
    stats = layer_stats(
        w
        for w, _ in open_zoo(
            source,
            view="state_dict",
            epochs=epochs,
            where=where,
            finite=finite,
            max_abs=max_abs,
            shards=shards,
            **split,
        )
    )
    if not stats:
        raise ValueError(f"{source}: no samples in the training split to compute normalization statistics from")
    if path is not None:
        write_json(path, stats)
    return stats
