"""Writing samples into tar shards `<zoo>-%06d.tar`, bounded in bytes and sample count.

Deterministic: members in sample order with fixed metadata (mtime 0, uid/gid 0, no user
names, mode 0444, ustar headers), so the same samples always give byte-identical shards.
Atomic: each shard is written to a temp name and renamed when complete; a rerun after an
interruption simply rewrites every shard (identically) and removes leftovers.
"""

import hashlib
import io
import os
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path

from zoo.atomic import atomic_write
from zoo.pack.samples import Sample

BLOCK, RECORD = tarfile.BLOCKSIZE, tarfile.RECORDSIZE


def shard_name(zoo_name: str, index: int) -> str:
    return f"{zoo_name}-{index:06d}.tar"


class _HashingWriter:
    """File wrapper counting and hashing what tarfile writes through it."""

    def __init__(self, f):
        self.f, self.sha, self.bytes = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.bytes += len(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.bytes


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _closed_size(content: int) -> int:
    """Size of a tar with `content` bytes of members once closed (end blocks, record padding)."""
    return -(-(content + 2 * BLOCK) // RECORD) * RECORD


def _member_bytes(members: list[tuple[str, bytes]]) -> int:
    return sum(BLOCK + -(-len(data) // BLOCK) * BLOCK for _, data in members)


def write_shards(samples: Iterable[Sample], out_dir: str | Path, zoo_name: str, *,
                 max_bytes: int, max_count: int) -> list[dict]:
    """Write `samples` in order; returns `[{name, bytes, samples, sha256}]` per shard.

    A shard closes before a sample that would push it past `max_bytes` or `max_count`
    (a single sample larger than `max_bytes` gets a shard of its own).
    """
    out_dir = Path(out_dir)
    _remove(out_dir, rf"\.{re.escape(zoo_name)}-\d{{6}}\.tar\..*\.tmp")  # temp files of a killed pack
    shards: list[dict] = []
    samples = iter(samples)
    pending = next(samples, None)
    while pending is not None:
        name = shard_name(zoo_name, len(shards))
        count = 0
        with atomic_write(out_dir / name) as f:
            os.fchmod(f.fileno(), 0o644)  # a file to share (the temp file is created private)
            out = _HashingWriter(f)
            with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                while pending is not None:
                    members = pending.members()
                    if count and (count == max_count or _closed_size(out.bytes + _member_bytes(members)) > max_bytes):
                        break
                    for member, data in members:
                        tar.addfile(_tarinfo(member, len(data)), io.BytesIO(data))
                    count += 1
                    pending = next(samples, None)
        shards.append({"name": name, "bytes": out.bytes, "samples": count, "sha256": out.sha.hexdigest()})
    names = {s["name"] for s in shards}
    _remove(out_dir, rf"{re.escape(zoo_name)}-\d{{6}}\.tar", keep=names)  # shards of an earlier, larger pack
    return shards


def _remove(directory: Path, pattern: str, keep: set[str] = frozenset()) -> None:
    if directory.is_dir():
        for path in directory.iterdir():
            if re.fullmatch(pattern, path.name) and path.name not in keep:
                path.unlink()
