"""Reading shard members safely.

A shard holds only regular files named `<key>.meta.json` and `<key>.weights.safetensors`.
Anything else is refused before its bytes are used: pickles, other extensions, links,
absolute or `../` paths, nested paths. A truncated or corrupt shard is reported by shard
and key. The reader is a small ustar parser rather than `tarfile`, whose stream mode copies
data in 10 kB pieces and parses headers at ~40 µs each: one read per member keeps loading
close to raw disk bandwidth, and every header's checksum is checked before its data is read.
"""

import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import BinaryIO

from webdataset.gopen import gopen
from webdataset.handlers import reraise_exception

from zoo.shard_format import EXTENSIONS

PICKLE_EXTENSIONS = {"pickle", "pkl", "pyd", "pt", "pth", "ckpt", "joblib"}
BLOCK = 512
CHUNK = 2**20  # first buffer of a member; larger members grow it (doubling) as their bytes arrive
REPACK = "re-download the shard or re-run zoo-pack, then check it with `zoo-pack verify`"


class ShardError(ValueError):
    """A shard or member that is not a valid zoo shard; the message names shard, key and fix."""


def parse_header(block: bytes | bytearray) -> tuple[str, int, str]:
    """`(name, size, type flag)` of a ustar header block; ValueError if it is not one."""
    if _octal(block[148:156], "checksum") != sum(block) - sum(block[148:156]) + 8 * ord(" "):
        raise ValueError("bad header checksum")
    if block[124] & 0x80:  # base-256 size: a member over 8 GiB
        raise ValueError("member too large")
    name = block[:100].split(b"\0", 1)[0]
    prefix = block[345:500].split(b"\0", 1)[0] if block[257:262] == b"ustar" else b""
    name = (prefix + b"/" + name if prefix else name).decode("utf-8", "surrogateescape")
    return name, _octal(block[124:136], "size"), chr(block[156])


def _octal(field: bytes | bytearray, what: str) -> int:
    """A header's octal number; the error never quotes the field (its bytes may be anyone's file)."""
    digits = bytes(field).split(b"\0", 1)[0].strip()
    if not digits or digits.strip(b"01234567"):
        raise ValueError(f"{what} field is not an octal number")
    return int(digits, 8)


def member_problem(name: str, kind: str) -> str | None:
    """Why a member must not be read, or None if it is a proper sample file."""
    if name.startswith("/") or "\\" in name or ".." in name.split("/"):
        return "unsafe path (absolute or `..`); refused"
    if "/" in name:
        return "unsafe path (shard members are flat `<key>.<ext>` names); refused"
    if kind not in ("0", "\0"):
        return f"is not a regular file (tar type {kind!r}: link, directory or extended header); refused"
    ext = name.partition(".")[2]
    if ext.rsplit(".", 1)[-1].lower() in PICKLE_EXTENSIONS:
        return "is a pickle; refused: shards carry weights only as safetensors"
    if ext not in EXTENSIONS:
        return f"has an unexpected extension {ext!r}; a sample has only {' and '.join(EXTENSIONS)}"
    return None


def read_members(stream: BinaryIO, shard: str) -> Iterator[tuple[str, bytearray]]:
    """`(name, data)` of each member of one tar stream, in order; raises ShardError on anything wrong.

    Data is a fresh `bytearray`, so tensors built on it are writable and own their memory.
    """
    last, seen = "(none: the shard's first member)", set()
    while True:
        header = _read_exact(stream, BLOCK)
        if len(header) < BLOCK:
            raise ShardError(f"{shard}: truncated after member {last} (no end-of-archive marker); {REPACK}")
        if not any(header):
            return  # end-of-archive marker; what follows is padding
        try:
            name, size, kind = parse_header(header)
        except ValueError as err:
            raise ShardError(f"{shard}: corrupt tar header after member {last} ({err}); {REPACK}") from None
        problem = member_problem(name, kind)
        if problem:
            raise ShardError(f"{shard}: member {name!r} {problem}")
        if name in seen:  # a second copy of a sample (or of one of its files) would be yielded twice
            raise ShardError(f"{shard}: member {name!r} appears twice; {REPACK}")
        seen.add(name)
        data = _read_exact(stream, size)
        if len(data) < size:
            raise ShardError(f"{shard}: truncated in member {name!r} ({len(data)} of {size} bytes); {REPACK}")
        _read_exact(stream, -size % BLOCK)  # padding to the next block
        last = repr(name)
        yield name, data


def _read_exact(stream: BinaryIO, size: int) -> bytearray:
    """`size` bytes, fewer only at the end of the stream. Memory follows the bytes actually read,
    not the size a header declares: the buffer grows by doubling from at most CHUNK."""
    buf, got = bytearray(), 0
    while got < size:
        if got == len(buf):
            buf.extend(bytes(min(size, max(CHUNK, 2 * len(buf))) - len(buf)))
        n = _read_into(stream, buf, got)
        if not n:
            break
        got += n
    del buf[got:]
    return buf


def _read_into(stream: BinaryIO, buf: bytearray, start: int) -> int:
    with memoryview(buf) as view:  # released before the caller resizes buf
        if hasattr(stream, "readinto"):
            return stream.readinto(view[start:]) or 0
        data = stream.read(len(buf) - start)  # webdataset's `pipe:` streams only have read()
        view[start : start + len(data)] = data
        return len(data)


class CountingReader:
    """Stream wrapper counting (and, with `sha256=True`, hashing) the bytes read through it."""

    def __init__(self, stream: BinaryIO, sha256: bool = False):
        self.stream, self.sha, self.bytes = stream, hashlib.sha256() if sha256 else None, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self._count(data)
        return data

    def readinto(self, view) -> int:
        n = self.stream.readinto(view) if hasattr(self.stream, "readinto") else _read_into(self.stream, view, 0)
        self._count(view[:n])
        return n

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def _count(self, data) -> None:
        self.bytes += len(data)
        if self.sha is not None:
            self.sha.update(data)


def open_shard(url: str, size: int | None = None) -> BinaryIO:
    """The shard at `url` opened for reading (webdataset's `gopen`). A local path must be a regular
    file (a FIFO would block, a device never end) of `size` bytes when the manifest gives one."""
    if not url.startswith("pipe:") and "://" not in url:
        st = os.stat(url.removeprefix("file:"))
        if not stat.S_ISREG(st.st_mode):
            raise ShardError(f"{url}: not a regular file (a FIFO, device or directory); refused")
        if size is not None and st.st_size != size:
            raise ShardError(
                f"{url}: {st.st_size} bytes, its manifest lists {size}: the shard is from another "
                f"pack or was cut; {REPACK}"
            )
    return gopen(url)


def check_shard(reader: CountingReader, url: str, entry: Mapping) -> None:
    """After the last member: the whole shard has the manifest's size (and sha256, if hashed)."""
    reader.drain()
    if reader.bytes != entry["bytes"]:
        raise ShardError(f"{url}: {reader.bytes} bytes read, its manifest lists {entry['bytes']}; {REPACK}")
    if reader.sha is not None and reader.sha.hexdigest() != entry["sha256"]:
        raise ShardError(
            f"{url}: sha256 differs from its manifest's: the shard is corrupt or from another pack; {REPACK}"
        )


def open_shards(
    urls: Iterable[dict],
    handler: Callable[[Exception], bool] = reraise_exception,
    entries: Mapping[str, Mapping] | None = None,
) -> Iterator[dict]:
    """webdataset stage: `{"url"}` → `{"url", "stream"}` (open_shard; sizes from the manifest `entries`)."""
    for source in urls:
        url = source["url"]
        try:
            entry = (entries or {}).get(url)
            yield {"url": url, "stream": open_shard(url, entry["bytes"] if entry else None)}
        except Exception as exn:  # noqa: BLE001 - the handler decides
            if not handler(exn):
                break


def tar_members(
    sources: Iterable[dict],
    handler: Callable[[Exception], bool] = reraise_exception,
    entries: Mapping[str, Mapping] | None = None,
    check_hash: bool = False,
) -> Iterator[dict]:
    """webdataset stage: opened shards (`{"url", "stream"}`) → `{"fname", "data", "__url__"}`, then `{}`
    at the end of each shard so that no sample spans two shards.

    A shard listed in the manifest `entries` (by url) must end at its listed size, and with
    `check_hash` have its listed sha256, or a ShardError follows its last sample.
    An error goes to `handler` (webdataset's convention): True skips the rest of that shard,
    False stops, and the default re-raises. Nothing is dropped silently.
    """
    for source in sources:
        url, stream = source["url"], source["stream"]
        entry = (entries or {}).get(url)
        try:
            reader = CountingReader(stream, sha256=check_hash) if entry else stream
            for name, data in read_members(reader, url):
                yield {"fname": name, "data": data, "__url__": url}
            if entry:
                check_shard(reader, url, entry)
        except Exception as exn:  # noqa: BLE001 - the handler decides
            if not handler(exn):
                break
        finally:
            stream.close()
        yield {}
