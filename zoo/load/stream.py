"""Streaming a packed zoo: `open_zoo(source)` → an IterableDataset of `(weights, meta)`.

Built from webdataset's pieces (shard list, node/worker split, shuffle buffers, URL
opening), with the tar reading swapped for `zoo.load.safety.tar_members`, which refuses
unsafe members. Works with `torch.utils.data.DataLoader(..., num_workers=N)`: each worker
reads its own shards, and each node its own under torch.distributed.
"""

import hashlib
import json
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import torch
import webdataset as wds
from webdataset.handlers import reraise_exception
from webdataset.tariterators import group_by_keys

from zoo.load import views
from zoo.load.filters import WeightFilter
from zoo.load.normalize import Normalizer, training_stats
from zoo.load.safety import REPACK, ShardError, open_shards, tar_members
from zoo.load.select import Where
from zoo.load.sources import shard_urls
from zoo.load.splits import InSplit
from zoo.load.targets import Targets
from zoo.shard_format import EXTENSIONS

Transform = Callable[[dict[str, torch.Tensor], dict], dict[str, torch.Tensor]]


def open_zoo(
    source: str | Path | list[str],
    *,
    view: str = "flat",
    epochs=None,
    where: Mapping | None = None,
    split: str | None = None,
    splits=(0.7, 0.15, 0.15),
    split_seed: int = 0,
    targets: list[str] | Targets | None = None,
    normalize: bool | Normalizer = False,
    finite: bool = False,
    max_abs: float | None = None,
    shuffle: int = 0,
    seed: int = 0,
    transform: Transform | None = None,
    shards: str | Path | None = None,
    check_hash: bool = False,
    handler: Callable[[Exception], bool] = reraise_exception,
) -> wds.DataPipeline:
    """Stream the samples of a packed zoo as `(weights, meta)`, or `(weights, targets, meta)` with `targets`.

    source: a manifest (`manifests/<zoo>.json`), a directory of shards, or webdataset URLs
        (`dir/demo-1a2b3c4d-{000000..000009}.tar`, `pipe:curl -s https://host/demo-1a2b3c4d-{000000..000009}.tar`).
    view: "flat" (float32 vector), "state_dict", "layers" or "tokens" (see zoo.load.views), or a
        callable view such as `Tokens(token_size=32, max_tokens=512)` (zoo.load.tokens).
    epochs, where: keep only matching samples (zoo.load.select), before weights are decoded;
        `where={"status": "ok"}` drops diverged and failed models.
    split, splits, split_seed: keep only the models of split "train", "val" or "test"; `splits` are
        ratios over hashed model ids or held-out grid values (zoo.load.splits).
    targets: keys such as "metrics.test_acc", "phase", "model.width" → `{key: tensor}` beside the
        weights; text keys as class indices (zoo.load.targets; pass a `Targets` for explicit classes).
    normalize: True standardizes every tensor with statistics over the training split of the same
        `splits`, `epochs` and `where` (everything selected when `split` is None), computed once and
        cached beside the manifest (zoo.load.normalize); or pass a `Normalizer`.
    finite, max_abs: drop samples with a NaN/inf weight, or with a weight beyond ±max_abs.
    shuffle: 0 reads in shard order; N > 0 shuffles the shards and then samples through an
        N-sample buffer, seeded with `seed` and the epoch (one iteration = one epoch; DataLoader
        workers count epochs only with `persistent_workers=True`).
    transform: `(state_dict, meta) → state_dict` before normalization and the view, e.g. `Permute()`,
        `Noise(0.01)`, `Erase(0.1)` or `Chain(...)` of them (zoo.load.permute, zoo.load.augment).
    shards: where a manifest's shards are, if not where it says.
    check_hash: recompute each sample's sha256 against meta.json, and each shard's against its
        manifest (costs ~1.7 GB/s of CPU; `zoo-pack verify` checks whole shards once). Without it,
        a manifest's shards are still checked by size: a shard of another pack is refused.
    handler: what to do on a bad shard or sample (webdataset handlers); the default raises.
        `wds.warn_and_continue` skips and warns: only then are samples dropped.
    """
    views.check(view)
    urls, entries = shard_urls(source, shards)
    split_args = {"splits": splits, "split_seed": split_seed} if split is not None else {}
    if normalize is True:
        normalize = Normalizer(
            training_stats(
                source, split_args=split_args, epochs=epochs, where=where, finite=finite, max_abs=max_abs, shards=shards
            )
        )
    if targets is not None and not isinstance(targets, Targets):
        targets = Targets.for_source(source, targets)
    prepare = Prepare(view, transform, normalize or None, targets, WeightFilter(finite, max_abs) or None)
    return wds.DataPipeline(
        wds.SimpleShardList(urls),
        wds.detshuffle(len(urls), len(urls), seed=seed) if shuffle else None,  # same order on every rank/worker
        wds.split_by_node,
        wds.split_by_worker,
        partial(open_shards, handler=handler, entries=entries),
        partial(tar_members, handler=handler, entries=entries, check_hash=check_hash),
        partial(group_by_keys, handler=handler),
        wds.map(parse, handler=handler),
        wds.select(Where(where, epochs, InSplit(split, splits, split_seed) if split is not None else None)),
        wds.detshuffle(shuffle, min(shuffle, 100), seed=seed) if shuffle else None,
        wds.map(partial(decode, prepare=prepare, check_hash=check_hash), handler=handler),
    )


def parse(sample: dict) -> dict:
    """Grouped members → `{key, url, meta, data}`; a sample missing a member is an error."""
    key, url = sample["__key__"], sample["__url__"]
    missing = [ext for ext in EXTENSIONS if ext not in sample]
    if missing:
        raise ShardError(f"{url}: sample {key!r} has no {' or '.join(missing)}; {REPACK}")
    try:
        meta = read_meta(sample["meta.json"])
    except ValueError as err:
        raise ShardError(f"{url}: sample {key!r}: corrupt meta.json ({err}); {REPACK}") from None
    return {"key": key, "url": url, "meta": meta, "data": sample["weights.safetensors"]}


META_FIELDS = {"id": str, "epoch": int, "layout": list, "sha256": str}  # what loading itself reads


def read_meta(data: bytes | bytearray) -> dict:
    """A sample's meta.json: a JSON object with at least META_FIELDS; ValueError otherwise."""
    try:
        meta = json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(meta, dict):
        raise ValueError(f"a JSON {type(meta).__name__}, not an object")
    wrong = [k for k, kind in META_FIELDS.items() if not isinstance(meta.get(k), kind)]
    if wrong:
        raise ValueError(f"missing or mistyped field(s) {wrong}")
    return meta


def decode(sample: dict, *, prepare: "Prepare", check_hash: bool):
    """The prepared `(weights in the view, [targets,] meta)` of a parsed sample; None if a weight filter drops it."""
    meta, data = sample["meta"], sample["data"]
    if check_hash and hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise ShardError(f"{sample['url']}: sample {sample['key']!r}: weights do not match their sha256; {REPACK}")
    try:
        weights = views.decode(data, meta)
    except (ValueError, KeyError, RuntimeError) as err:
        raise ShardError(f"{sample['url']}: sample {sample['key']!r}: corrupt weights ({err}); {REPACK}") from None
    return prepare(weights, meta)


class Prepare:
    """Decoded state dict → what a sample yields: filter, transform, normalize, view, targets (in that order).

    Shared by `open_zoo` and `ZooH5Dataset`; picklable for DataLoader workers."""

    def __init__(
        self,
        view: str,
        transform: Transform | None = None,
        normalizer: Normalizer | None = None,
        targets: Targets | None = None,
        keep: WeightFilter | None = None,
    ):
        self.view, self.transform, self.normalizer, self.targets, self.keep = view, transform, normalizer, targets, keep

    def __call__(self, weights: dict[str, torch.Tensor], meta: dict):
        if self.keep is not None and not self.keep(weights):
            return None
        if self.transform is not None:
            weights = self.transform(weights, meta)
        if self.normalizer is not None:
            weights = self.normalizer(weights, meta)
        out = views.view(weights, self.view)
        return (out, self.targets(meta), meta) if self.targets is not None else (out, meta)
