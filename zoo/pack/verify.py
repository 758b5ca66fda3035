"""Checking shards against their manifest: every shard's size, sample count and sha256, every
sample's members and weights hash, and files that are missing or should not be there."""

import hashlib
import itertools
import json
from pathlib import Path

from webdataset.gopen import gopen

from zoo.load.safety import EXTENSIONS, ShardError, read_members
from zoo.load.sources import locate, read_manifest
from zoo.load.views import decode
from zoo.pack.samples import sample_key


class _HashingReader:
    """Stream wrapper counting and hashing what is read through it."""

    def __init__(self, stream):
        self.stream, self.sha, self.bytes = stream, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.sha.update(data)
        self.bytes += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


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
    problems, count = [], 0
    try:
        stream = _HashingReader(gopen(url))
        try:
            for key, group in itertools.groupby(read_members(stream, name), key=lambda m: m[0].partition(".")[0]):
                problems += [f"{name}: {key}: {p}" for p in sample_problems(key, list(group), zoo_name)]
                count += 1
            stream.drain()
        finally:
            stream.stream.close()
    except ShardError as err:
        problems.append(str(err))
    except OSError as err:  # missing file, failed download: nothing to compare
        return count, [*problems, f"{name}: cannot read {url}: {err}"]
    if count != entry["samples"]:
        problems.append(f"{name}: {count} samples read, the manifest lists {entry['samples']}")
    if stream.bytes != entry["bytes"]:
        problems.append(f"{name}: {stream.bytes} bytes read, the manifest lists {entry['bytes']}")
    if stream.sha.hexdigest() != entry["sha256"]:
        problems.append(f"{name}: sha256 {stream.sha.hexdigest()} differs from the manifest's {entry['sha256']}; "
                        "the shard is corrupt or from another pack: re-download it or re-run zoo-pack")
    return count, problems


def sample_problems(key: str, members: list[tuple[str, bytes]], zoo_name: str) -> list[str]:
    files = {name.partition(".")[2]: data for name, data in members}
    if len(files) != len(members) or sorted(files) != sorted(EXTENSIONS):
        return [f"members {[n for n, _ in members]}, expected one each of {list(EXTENSIONS)}"]
    try:
        meta = json.loads(files["meta.json"])
    except ValueError as err:
        return [f"corrupt meta.json ({err})"]
    problems = []
    if hashlib.sha256(files["weights.safetensors"]).hexdigest() != meta.get("sha256"):
        problems.append("weights do not match the sha256 in meta.json")
    else:
        try:
            decode(files["weights.safetensors"], meta)
        except (ValueError, KeyError, RuntimeError) as err:
            problems.append(f"weights do not decode with meta.json's layout ({err})")
    if key != sample_key(meta.get("id", "?"), meta.get("epoch", -1)) or meta.get("zoo") != zoo_name:
        problems.append(f"meta.json names zoo {meta.get('zoo')!r}, model {meta.get('id')!r}, "
                        f"epoch {meta.get('epoch')!r}")
    return problems
