"""Fuzzing the shard loader and verify with mutated real shards (zoo-pack's own writer): random byte
flips, truncations, tar size fields and safetensors header edits, seeded. Whatever the bytes, the
only error is ShardError, verify returns its problems instead of raising, and memory stays bounded."""

import hashlib
import io
import json
import os
import random
import shutil
import tarfile
import tempfile
import tracemalloc
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from zoo.load import ShardError, open_zoo
from zoo.pack.samples import make_sample
from zoo.pack.shards import write_shards
from zoo.pack.verify import verify_shard

JSON_VALUES = [-8, -1, 0, 1, 7, 2**31, 2**64, 1.5, "0", "F32", None, True, [], [0], [0, 2**40], {}, [[[]]]]


@pytest.fixture(scope="module")
def shard(tmp_path_factory) -> bytes:
    return real_shard(tmp_path_factory.mktemp("fuzz"))


def real_shard(out) -> bytes:
    """A real shard of three samples of a small MLP (and a BatchNorm buffer: an integer tensor)."""
    torch.manual_seed(0)
    samples = []
    for epoch in range(3):
        state = {
            "layers.0.weight": torch.randn(8, 40),
            "layers.0.bias": torch.randn(8),
            "norm.num_batches_tracked": torch.tensor(epoch),
            "layers.2.weight": torch.randn(10, 8),
        }
        samples.append(
            make_sample(
                zoo_name="demo",
                model_id="mlp-w8-0123abcd",
                epoch=epoch,
                arch="mlp",
                grid={},
                config={},
                status="ok",
                phase=None,
                metrics={"test_acc": 0.5},
                landscape=None,
                weights=save(state),
                order=list(state),
            )
        )
    [entry] = write_shards(samples, out, "demo", max_bytes=2**20, max_count=10)
    return (out / entry["name"]).read_bytes()


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def mutate(data: bytes, rng: random.Random, infos: list[tarfile.TarInfo]) -> bytes:
    out = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:  # byte flips anywhere
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncation
        del out[rng.randrange(len(out)) :]
    elif kind == 2:  # a tar size field, with a valid checksum, declaring anything up to 8 GiB
        info = rng.choice(infos)
        header = out[info.offset : info.offset + 512]
        header[124:136] = b"%011o\0" % rng.choice([0, 1, 511, info.size + 1, 2**20, 8 * 2**30 - 1])
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
        out[info.offset : info.offset + 512] = header
    else:  # a JSON edit: a value in a safetensors header (3) or in meta.json (4), replaced
        info = rng.choice([i for i in infos if i.name.endswith("safetensors" if kind == 3 else "json")])
        body = bytes(out[info.offset_data : info.offset_data + info.size])
        start = 8 if kind == 3 else 0
        end = start + int.from_bytes(body[:8], "little") if kind == 3 else len(body)
        text = body[start:end].decode()
        positions = [i for i, c in enumerate(text) if c in ":,["]
        i = rng.choice(positions) + 1
        j = min((k for k in (text.find(c, i) for c in ",]}") if k >= 0), default=len(text))
        new = (text[:i] + json.dumps(rng.choice(JSON_VALUES)) + text[j:]).encode()
        body = (len(new).to_bytes(8, "little") if kind == 3 else b"") + new + body[end:]
        out[info.offset_data : info.offset_data + info.size] = body[: info.size].ljust(info.size, b" ")
    return bytes(out)


@pytest.fixture
def scratch(tmp_path):
    """A folder in memory where there is one (thousands of rewrites of a file on disk take seconds)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(dir=shm))
    yield folder
    shutil.rmtree(folder)


def fuzz(shard: bytes, folder: Path, iterations: int, seed: int) -> dict[str, int]:
    rng, infos, path = random.Random(seed), members(shard), folder / "fuzz-000000.tar"
    entry = {"name": path.name, "bytes": len(shard), "samples": 3, "sha256": hashlib.sha256(shard).hexdigest()}
    outcomes = {"ok": 0, "ShardError": 0}
    tracemalloc.start()
    try:
        for _ in range(iterations):
            path.write_bytes(mutate(shard, rng, infos))
            for view in ("flat", "state_dict"):
                try:
                    list(open_zoo(str(path), view=view, check_hash=rng.random() < 0.3))
                    outcomes["ok"] += 1
                except ShardError:
                    outcomes["ShardError"] += 1
            count, problems = verify_shard(str(path), entry, "demo")
            assert all(isinstance(p, str) for p in problems)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.0f} MiB"  # 8 GiB member sizes are declared
    return outcomes


def test_mutated_shards_raise_only_shard_errors_in_bounded_memory(shard, scratch):
    outcomes = fuzz(shard, scratch, iterations=600, seed=0)
    assert outcomes["ShardError"] > 600 and outcomes["ok"] > 0  # both paths were exercised


@pytest.mark.slow
def test_mutated_shards_many_more(shard, scratch):
    for seed in range(1, 11):
        fuzz(shard, scratch, iterations=2000, seed=seed)
