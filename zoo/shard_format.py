"""The shard format: what `zoo-pack` writes and `zoo.load` reads (contract in docs/design.md).

    <zoo>-<generation>-NNNNNN.tar           a pack's shards; generation = 8 hex of the shards' hashes
      <id>_e<epoch:04d>.meta.json           who the model is, how it trained, how it did at that epoch
      <id>_e<epoch:04d>.weights.safetensors the checkpoint: a state dict, tensor names as in the module

Pack and load both import it, so the format has one owner: keys, member extensions, the schema
version of manifests, shard names, and the safetensors header every weights member must have.
"""

import json
import re

import torch

SCHEMA_VERSION = 1  # of manifests/<zoo>.json (manifests/schema.json)
EXTENSIONS = ("meta.json", "weights.safetensors")  # the members of a sample, nothing else
MAX_KEY = 100 - len(".weights.safetensors")  # a ustar member name holds 100 characters
SHARD_NAME = re.compile(r"(?P<pack>[A-Za-z0-9_][A-Za-z0-9_.-]*?)-\d{6}\.tar")  # pack: `<zoo>-<generation>`
# The keys of every meta.json, the same at every epoch (a schema other tools can infer).
META_FIELDS = (
    "zoo",
    "id",
    "epoch",
    "arch",
    "grid",
    "config",
    "n_params",
    "layout",
    "metrics",
    "landscape",
    "phase",
    "status",
    "sha256",
    "version",
)
# Config sections that say where a model was trained (folders, cluster accounts), left out of
# `meta["config"]`: a published zoo must not carry the packing machine's paths.
MACHINE_SECTIONS = ("paths", "cluster")


def sample_key(model_id: str, epoch: int) -> str:
    key = f"{model_id}_e{epoch:04d}"
    # webdataset splits key and extension at the first dot; tar names must stay flat and short
    if "." in key or "/" in key or len(key) > MAX_KEY:
        raise ValueError(
            f"model id {model_id!r} cannot key a shard sample: it must have no '.' or '/' "
            f"and at most {MAX_KEY - 6} characters; shorten `zoo.prefix`"
        )
    return key


def shard_name(zoo_name: str, generation: str, index: int) -> str:
    return f"{zoo_name}-{generation}-{index:06d}.tar"


# safetensors dtype codes → torch dtypes, and torch dtype names as written in `meta["layout"]`.
DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_header(data: bytes | bytearray) -> tuple[dict, int]:
    """The safetensors header (`{name: {dtype, shape, data_offsets}}`, without `__metadata__`)
    and the offset where tensor data starts. ValueError unless every tensor has a known dtype,
    a shape of non-negative ints and its own in-bounds span of exactly that many bytes."""
    size = int.from_bytes(data[:8], "little")
    if len(data) < 8 or size > len(data) - 8:
        raise ValueError(f"not a safetensors buffer ({len(data)} bytes, header size {size})")
    try:
        header = json.loads(bytes(data[8 : 8 + size]))
    except (ValueError, RecursionError) as err:
        raise ValueError(f"safetensors header is not JSON ({type(err).__name__})") from None
    if not isinstance(header, dict):
        raise ValueError(f"safetensors header is a JSON {type(header).__name__}, not an object")
    header.pop("__metadata__", None)
    spans = sorted(_span(name, info, len(data) - 8 - size) for name, info in header.items())
    for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
        if begin < end:
            raise ValueError(f"tensors {a!r} and {b!r} overlap")
    return header, 8 + size


def _span(name: str, info, available: int) -> tuple[int, int, str]:
    """`(begin, end, name)` of one header entry, checked against the `available` data bytes."""
    if not isinstance(info, dict) or not isinstance(info.get("dtype"), str) or info["dtype"] not in DTYPES:
        raise ValueError(f"tensor {name!r}: dtype must be one of {sorted(DTYPES)}")
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(_is_int(n) and n >= 0 for n in shape):
        raise ValueError(f"tensor {name!r}: shape must be a list of non-negative integers")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(_is_int(n) for n in offsets)
        and 0 <= offsets[0] <= offsets[1] <= available
    ):
        raise ValueError(f"tensor {name!r}: data_offsets must be two integers within the {available} data bytes")
    if offsets[1] - offsets[0] != torch.Size(shape).numel() * DTYPES[info["dtype"]].itemsize:
        raise ValueError(
            f"tensor {name!r}: data_offsets span {offsets[1] - offsets[0]} bytes, its shape and "
            "dtype need another number"
        )
    return offsets[0], offsets[1], name


def _is_int(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool)


def layout(data: bytes | bytearray, order: list[str]) -> list[dict]:
    """`[{name, shape, dtype}]` of the tensors in `data`, in `order` (module order)."""
    header, _ = read_header(data)
    if sorted(order) != sorted(header):
        raise ValueError(f"tensor names {sorted(header)} do not match the model's {sorted(order)}")
    return [
        {"name": n, "shape": header[n]["shape"], "dtype": str(DTYPES[header[n]["dtype"]]).removeprefix("torch.")}
        for n in order
    ]
