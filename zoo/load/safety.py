"""Reading shard members safely.

A shard holds only regular files named `<key>.meta.json` and `<key>.weights.safetensors`.
Anything else is refused before its bytes are used: pickles, other extensions, links,
absolute or `../` paths, nested paths. A truncated or corrupt shard is reported by shard
and key. The reader is a small ustar parser rather than `tarfile`, whose stream mode copies
data in 10 kB pieces and parses headers at ~40 µs each: one read per member keeps loading
close to raw disk bandwidth, and every header's checksum is checked before its data is read.
"""

from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from webdataset.handlers import reraise_exception

EXTENSIONS = ("meta.json", "weights.safetensors")
PICKLE_EXTENSIONS = {"pickle", "pkl", "pyd", "pt", "pth", "ckpt", "joblib"}
BLOCK = 512
REPACK = "re-download the shard or re-run zoo-pack, then check it with `zoo-pack verify`"


class ShardError(ValueError):
    """A shard or member that is not a valid zoo shard; the message names shard, key and fix."""


def parse_header(block: bytes | bytearray) -> tuple[str, int, str]:
    """`(name, size, type flag)` of a ustar header block; ValueError if it is not one."""
    stored = block[148:156].split(b"\0", 1)[0].strip()
    if not stored or int(stored, 8) != sum(block) - sum(block[148:156]) + 8 * ord(" "):
        raise ValueError("bad header checksum")
    if block[124] & 0x80:  # base-256 size: a member over 8 GiB
        raise ValueError("member too large")
    name = block[:100].split(b"\0", 1)[0]
    prefix = block[345:500].split(b"\0", 1)[0] if block[257:262] == b"ustar" else b""
    name = (prefix + b"/" + name if prefix else name).decode("utf-8", "surrogateescape")
    return name, int(block[124:136].split(b"\0", 1)[0].strip() or b"0", 8), chr(block[156])


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
    last = "(none: the shard's first member)"
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
        data = _read_exact(stream, size)
        if len(data) < size:
            raise ShardError(f"{shard}: truncated in member {name!r} ({len(data)} of {size} bytes); {REPACK}")
        _read_exact(stream, -size % BLOCK)  # padding to the next block
        last = repr(name)
        yield name, data


def _read_exact(stream: BinaryIO, size: int) -> bytearray:
    """`size` bytes, fewer only at the end of the stream."""
    if not hasattr(stream, "readinto"):  # webdataset's `pipe:` streams only have read()
        return bytearray(stream.read(size))
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size and (n := stream.readinto(view[got:])):
        got += n
    del view  # a bytearray cannot be resized while a view exists
    if got < size:
        del buf[got:]
    return buf


def tar_members(sources: Iterable[dict], handler: Callable[[Exception], bool] = reraise_exception) -> Iterator[dict]:
    """webdataset stage: opened shards (`{"url", "stream"}`) → `{"fname", "data", "__url__"}`, then `{}`
    at the end of each shard so that no sample spans two shards.

    An error goes to `handler` (webdataset's convention): True skips the rest of that shard,
    False stops, and the default re-raises. Nothing is dropped silently.
    """
    for source in sources:
        url, stream = source["url"], source["stream"]
        try:
            for name, data in read_members(stream, url):
                yield {"fname": name, "data": data, "__url__": url}
        except Exception as exn:  # noqa: BLE001 - the handler decides
            if not handler(exn):
                break
        finally:
            stream.close()
        yield {}
