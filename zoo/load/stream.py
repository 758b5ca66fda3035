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
from zoo.load.safety import EXTENSIONS, REPACK, ShardError, open_shards, tar_members
from zoo.load.select import Where
from zoo.load.sources import shard_urls

Transform = Callable[[dict[str, torch.Tensor], dict], dict[str, torch.Tensor]]


def open_zoo(source: str | Path | list[str], *, view: str = "flat", epochs=None, where: Mapping | None = None,
             shuffle: int = 0, seed: int = 0, transform: Transform | None = None, shards: str | Path | None = None,
             check_hash: bool = False, handler: Callable[[Exception], bool] = reraise_exception) -> wds.DataPipeline:
    """Stream the samples of a packed zoo as `(weights, meta)`.

    source: a manifest (`manifests/<zoo>.json`), a directory of shards, or webdataset URLs
        (`dir/demo-1a2b3c4d-{000000..000009}.tar`, `pipe:curl -s https://host/demo-1a2b3c4d-{000000..000009}.tar`).
    view: "flat" (float32 vector), "state_dict" or "layers" (see zoo.load.views).
    epochs, where: keep only matching samples (zoo.load.select), before weights are decoded.
    shuffle: 0 reads in shard order; N > 0 shuffles the shards and then samples through an
        N-sample buffer, seeded with `seed` and the epoch (one iteration = one epoch; DataLoader
        workers count epochs only with `persistent_workers=True`).
    transform: `(state_dict, meta) → state_dict` before the view, e.g. zoo.load.permute.Permute().
    shards: where a manifest's shards are, if not where it says.
    check_hash: recompute each sample's sha256 against meta.json, and each shard's against its
        manifest (costs ~1.7 GB/s of CPU; `zoo-pack verify` checks whole shards once). Without it,
        a manifest's shards are still checked by size: a shard of another pack is refused.
    handler: what to do on a bad shard or sample (webdataset handlers); the default raises.
        `wds.warn_and_continue` skips and warns: only then are samples dropped.
    """
    if view not in views.VIEWS:
        raise ValueError(f"unknown view={view!r}; choose one of {views.VIEWS}")
    urls, entries = shard_urls(source, shards)
    return wds.DataPipeline(
        wds.SimpleShardList(urls),
        wds.detshuffle(len(urls), len(urls), seed=seed) if shuffle else None,  # same order on every rank/worker
        wds.split_by_node,
        wds.split_by_worker,
        partial(open_shards, handler=handler, entries=entries),
        partial(tar_members, handler=handler, entries=entries, check_hash=check_hash),
        partial(group_by_keys, handler=handler),
        wds.map(parse, handler=handler),
        wds.select(Where(where, epochs)),
        wds.detshuffle(shuffle, min(shuffle, 100), seed=seed) if shuffle else None,
        wds.map(partial(decode, view=view, transform=transform, check_hash=check_hash), handler=handler),
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


def decode(sample: dict, *, view: str, transform: Transform | None, check_hash: bool):
    """`(weights in the view, meta)` of a parsed sample."""
    meta, data = sample["meta"], sample["data"]
    if check_hash and hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise ShardError(f"{sample['url']}: sample {sample['key']!r}: weights do not match their sha256; {REPACK}")
    try:
        weights = views.decode(data, meta)
    except (ValueError, KeyError, RuntimeError) as err:
        raise ShardError(f"{sample['url']}: sample {sample['key']!r}: corrupt weights ({err}); {REPACK}") from None
    if transform is not None:
        weights = transform(weights, meta)
    return views.view(weights, view), meta
