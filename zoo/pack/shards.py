"""Writing samples into tar shards `<zoo>-<generation>-%06d.tar`, bounded in bytes and sample count.

Deterministic: members in sample order with fixed metadata (mtime 0, uid/gid 0, no user
names, mode 0444, ustar headers), so the same samples always give byte-identical shards.
Atomic as a whole: shards are written under temp names, then renamed to names tagged with
their generation (8 hex of the sha256 of their hashes). Shards of the pack in use are never
touched, so until the manifest is replaced (the commit, `zoo.pack.packing`) readers see the old
pack, and after it the new one; only then are the old generation's shards removed.
"""

import contextlib
import hashlib
import io
import os
import re
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from zoo.pack.samples import Sample
from zoo.shard_format import shard_name

BLOCK, RECORD = tarfile.BLOCKSIZE, tarfile.RECORDSIZE
TEMP_SUFFIX = ".tar.tmp"


def generation(entries: list[dict]) -> str:
    """The tag of a pack's shards: the same shards, the same names."""
    listing = "".join(f"{e['sha256']} {e['bytes']} {e['samples']}\n" for e in entries)
    return hashlib.sha256(listing.encode()).hexdigest()[:8]


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


def write_shards(
    samples: Iterable[Sample], out_dir: str | Path, zoo_name: str, *, max_bytes: int, max_count: int
) -> list[dict]:
    """Write `samples` in order into new shards; returns `[{name, bytes, samples, sha256}]` per shard.

    A shard closes before a sample that would push it past `max_bytes` or `max_count`
    (a single sample larger than `max_bytes` gets a shard of its own). Existing shards stay.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[tuple[str, dict]] = []  # (temp path, entry)
    try:
        samples = iter(samples)
        pending = next(samples, None)
        while pending is not None:
            fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{zoo_name}-", suffix=TEMP_SUFFIX)
            written.append((tmp, {}))
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o644)  # a file to share (mkstemp makes it private)
                entry, pending = _write_tar(f, pending, samples, max_bytes, max_count)
                f.flush()
                os.fsync(f.fileno())
            written[-1] = (tmp, entry)
        tag = generation([e for _, e in written])
        shards = []
        for index, (tmp, entry) in enumerate(written):
            name = shard_name(zoo_name, tag, index)
            os.replace(tmp, out_dir / name)
            shards.append({"name": name, **entry})
        _fsync_dir(out_dir)
        return shards
    except BaseException:
        for tmp, _ in written:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


def _write_tar(
    f, pending: Sample, samples: Iterator[Sample], max_bytes: int, max_count: int
) -> tuple[dict, Sample | None]:
    """One shard from `pending` on: its entry, and the first sample left for the next shard."""
    out, count = _HashingWriter(f), 0
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        while pending is not None:
            members = pending.members()
            if count and (count == max_count or _closed_size(out.bytes + _member_bytes(members)) > max_bytes):
                break
            for member, data in members:
                tar.addfile(_tarinfo(member, len(data)), io.BytesIO(data))
            count += 1
            pending = next(samples, None)
    return {"bytes": out.bytes, "samples": count, "sha256": out.sha.hexdigest()}, pending


def remove_stale(out_dir: str | Path, zoo_name: str, keep: set[str]) -> None:
    """Remove the zoo's shards not in `keep` (earlier generations) and temp files of killed packs.
    Call it holding the pack lock, after the manifest of `keep` is written."""
    shard = re.compile(rf"{re.escape(zoo_name)}-([0-9a-f]{{8}}-)?\d{{6}}\.tar")
    temp = re.compile(rf"\.{re.escape(zoo_name)}-.*{re.escape(TEMP_SUFFIX)}")
    for path in Path(out_dir).iterdir() if Path(out_dir).is_dir() else []:
        if (shard.fullmatch(path.name) and path.name not in keep) or temp.fullmatch(path.name):
            path.unlink()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
