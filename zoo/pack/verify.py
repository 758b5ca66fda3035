"""Checking shards against their manifest: every shard's size, sample count and sha256, every
sample's members and weights hash, and files that are missing or should not be there."""

import hashlib
import itertools
from pathlib import Path

from zoo.load.safety import CountingReader, ShardError, open_shard, read_members
from zoo.load.sources import locate, read_manifest
from zoo.load.stream import read_meta
from zoo.load.views import decode
from zoo.shard_format import EXTENSIONS


def verify(manifest_path: str | Path, shards: str | Path | None = None) -> list[str]:
    """Problems found, one line each naming shard (and sample key); empty if all is well.

    `shards` is a directory or URL pattern holding the shards (default: the manifest's `location`).
    """
    manifest = read_manifest(manifest_path)
    found, extra = locate(manifest_path, manifest, shards)
    problems = [f"{url}: not listed in the manifest; remove it or re-run zoo-pack" for url in extra]
    samples = 0
    for entry in manifest["shards"]:
        if entry["name"] not in found:
            problems.append(f"{entry['name']}: missing; download it or re-run zoo-pack")
            continue
        count, shard_problems = verify_shard(found[entry["name"]], entry, manifest["zoo"])
        samples += count
        problems += shard_problems
    if not problems and samples != manifest["counts"]["samples"]:
        listed = manifest["counts"]["samples"]
        problems.append(f"{manifest_path}: counts.samples is {listed}, the shards hold {samples}")
    return problems


def verify_shard(url: str, entry: dict, zoo_name: str) -> tuple[int, list[str]]:
    """`(samples read, problems)` of one shard against its manifest entry."""
    name = entry["name"]
    problems, count, stream = [], 0, None
    try:
        stream = CountingReader(open_shard(url), sha256=True)
        try:
            for key, group in itertools.groupby(read_members(stream, name), key=lambda m: m[0].partition(".")[0]):
                problems += [f"{name}: {key}: {p}" for p in sample_problems(key, list(group), zoo_name)]
                count += 1
            stream.drain()
        finally:
            stream.stream.close()
    except ShardError as err:
        problems.append(str(err))
        if stream is None:  # refused before reading: nothing to compare
            return count, problems
    except OSError as err:  # missing file, failed download: nothing to compare
        return count, [*problems, f"{name}: cannot read {url}: {err.strerror or err}"]
    if count != entry["samples"]:
        problems.append(f"{name}: {count} samples read, the manifest lists {entry['samples']}")
    if stream.bytes != entry["bytes"]:
        problems.append(f"{name}: {stream.bytes} bytes read, the manifest lists {entry['bytes']}")
    if stream.sha.hexdigest() != entry["sha256"]:
        problems.append(
            f"{name}: sha256 {stream.sha.hexdigest()} differs from the manifest's {entry['sha256']}; "
            "the shard is corrupt or from another pack: re-download it or re-run zoo-pack"
        )
    return count, problems


def sample_problems(key: str, members: list[tuple[str, bytes]], zoo_name: str) -> list[str]:
    files = {name.partition(".")[2]: data for name, data in members}
    if len(files) != len(members) or sorted(files) != sorted(EXTENSIONS):
        return [f"members {[n for n, _ in members]}, expected one each of {list(EXTENSIONS)}"]
    try:
        meta = read_meta(files["meta.json"])
    except ValueError as err:
        return [f"corrupt meta.json ({err})"]
    problems = []
    if hashlib.sha256(files["weights.safetensors"]).hexdigest() != meta["sha256"]:
        problems.append("weights do not match the sha256 in meta.json")
    else:
        try:
            decode(files["weights.safetensors"], meta)
        except ValueError as err:
            problems.append(f"weights do not decode with meta.json's layout ({err})")
    if key != f"{meta['id']}_e{meta['epoch']:04d}" or meta.get("zoo") != zoo_name:
        problems.append(f"meta.json names zoo {meta.get('zoo')!r}, model {meta['id']!r}, epoch {meta['epoch']!r}")
    return problems
