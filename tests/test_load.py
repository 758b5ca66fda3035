"""Loading packed shards: round trip to the recorded accuracy, views, filters, shuffling, worker and
node splits, URL sources, permutation augmentation, refusal of unsafe or broken shards, HDF5 access."""

import copy
import hashlib
import io
import json
import os
import shutil
import tarfile
import tracemalloc

import h5py
import numpy as np
import pytest
import torch
import webdataset as wds
from safetensors.torch import load_file
from test_pack import train_tiny_zoo
from torch import nn
from torch.utils.data import DataLoader

from zoo.data import Batches, load
from zoo.load import Permute, ShardError, ZooH5Dataset, open_zoo, permute, unflatten
from zoo.load.select import matches
from zoo.models import from_meta
from zoo.pack import export_hdf5, pack_zoo, verify
from zoo.train.evaluate import evaluate


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, data_root):
    """Two trained MLPs (widths 4 and 8), 3 checkpoints each, packed 2 samples per shard."""
    root = tmp_path_factory.mktemp("load")
    runs = train_tiny_zoo(root, data_root, cells=[["model.width=4"], ["model.width=8"]])
    manifest = root / "manifests" / "demo.json"
    pack_zoo(root / "runs", "demo", root / "shards", manifest, max_shard_bytes=2**28, max_shard_count=2)
    return manifest, runs


def first_shard(manifest):
    return manifest.parent.parent / "shards" / json.loads(manifest.read_text())["shards"][0]["name"]


def keys(dataset) -> list[str]:
    return [f"{meta['id']}_e{meta['epoch']:04d}" for _, meta in dataset]


def test_round_trip_reproduces_the_recorded_test_metrics(zoo, data_root):
    manifest, _ = zoo
    samples = list(open_zoo(manifest, view="state_dict"))
    assert len(samples) == 6
    for weights, meta in samples:
        data = load(meta["config"]["data"], data_root)
        result = evaluate(from_meta(meta, weights), Batches(data.x_test, data.y_test, 1000))
        assert result["acc"] == meta["metrics"]["test_acc"]
        assert result["loss"] == pytest.approx(meta["metrics"]["test_loss"], rel=1e-6)


def test_views_agree_with_the_checkpoint(zoo):
    manifest, runs = zoo
    by_id = {r.id: r for r in runs}
    streams = (open_zoo(manifest, view=v) for v in ("state_dict", "flat", "layers"))
    for (sd, meta), (vector, _), (layers, _) in zip(*streams):
        expected = load_file(by_id[meta["id"]].ckpt_path(meta["epoch"]))
        assert sd.keys() == expected.keys() and all(torch.equal(sd[k], expected[k]) for k in expected)
        assert vector.dtype == torch.float32 and vector.shape == (meta["n_params"],)
        assert torch.equal(vector, torch.cat([sd[k].reshape(-1) for k in sd]))
        assert list(layers) == ["layers.0", "layers.2", "layers.4"]
        assert torch.equal(torch.cat(list(layers.values())), vector)
        assert all(torch.equal(a, b) for a, b in zip(unflatten(vector, meta["layout"]).values(), sd.values()))
    with pytest.raises(ValueError, match="unknown view='matrix'"):
        open_zoo(manifest, view="matrix")


def test_filters_select_by_epoch_grid_metrics_and_phase(zoo):
    manifest, runs = zoo
    assert len(list(open_zoo(manifest, epochs=2))) == 2
    assert len(list(open_zoo(manifest, epochs=[0, 2], where={"model.width": 8}))) == 2
    best = max(r.metrics()[-1]["test_acc"] for r in runs)
    assert len(list(open_zoo(manifest, where={"metrics.test_acc": lambda a: a >= best}))) >= 1
    assert list(open_zoo(manifest, where={"phase": "IV-B"})) == []
    assert len(list(open_zoo(manifest, where={"landscape.measured": False}))) == 6  # no landscape stage ran
    with pytest.raises(KeyError, match="where-key 'widht'"):
        list(open_zoo(manifest, where={"widht": 8}))


def test_shuffle_is_seeded_and_loses_nothing(zoo):
    manifest, _ = zoo
    ordered = keys(open_zoo(manifest))
    shuffled = keys(open_zoo(manifest, shuffle=10, seed=1))
    assert sorted(shuffled) == sorted(ordered) and shuffled != ordered
    assert keys(open_zoo(manifest, shuffle=10, seed=1)) == shuffled


def test_workers_and_nodes_each_read_their_own_shards(zoo, monkeypatch):
    manifest, _ = zoo
    everything = sorted(keys(open_zoo(manifest)))
    loader = DataLoader(open_zoo(manifest), batch_size=None, num_workers=2)
    assert sorted(keys(loader)) == everything
    parts = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        parts.append(keys(open_zoo(manifest)))
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == everything


def test_directory_and_url_sources_read_the_same_samples(zoo):
    manifest, _ = zoo
    shards = manifest.parent.parent / "shards"
    expected = keys(open_zoo(manifest))
    assert keys(open_zoo(shards)) == expected
    pattern = first_shard(manifest).name.replace("000000", "{000000..000002}")
    assert keys(open_zoo(f"{shards}/{pattern}")) == expected
    assert keys(open_zoo(f"pipe:cat {shards}/{pattern}")) == expected
    with pytest.raises(FileNotFoundError, match="pass shards="):
        open_zoo(manifest, shards=manifest.parent)


def test_permuted_mlp_computes_the_same_function(zoo):
    manifest, _ = zoo
    x = torch.randn(64, 40)
    for weights, meta in open_zoo(manifest, view="state_dict", epochs=2, transform=Permute(seed=0)):
        original = next(w for w, m in open_zoo(manifest, view="state_dict", where={"id": meta["id"], "epoch": 2}))
        assert not torch.equal(weights["layers.0.weight"], original["layers.0.weight"])
        assert torch.allclose(from_meta(meta, weights)(x), from_meta(meta, original)(x), atol=1e-5)


def test_permuted_cnn_computes_the_same_function():
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5),
        nn.ReLU(),
        nn.Linear(5, 3),
    )
    for bn in (cnn[1], cnn[4]):  # non-trivial running statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    cnn.eval()
    x = torch.randn(4, 3, 8, 8)
    weights = permute(cnn.state_dict(), torch.Generator().manual_seed(1))
    assert not torch.equal(weights["0.weight"], cnn.state_dict()["0.weight"])
    twin = copy.deepcopy(cnn)
    twin.load_state_dict(weights)
    assert torch.allclose(twin(x), cnn(x), atol=1e-5)
    with pytest.raises(ValueError, match="supports"):
        Permute(seed=0)(weights, {"arch": "pinn"})


def write_tar(path, members: list[tuple[str, bytes]], kind=tarfile.REGTYPE):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.type = len(data), kind
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    "name, message",
    [
        ("x_e0000.weights.pth", "is a pickle; refused"),
        ("x_e0000.pyd", "is a pickle; refused"),
        ("../x_e0000.meta.json", "unsafe path"),
        ("/etc/x_e0000.meta.json", "unsafe path"),
        ("sub/x_e0000.meta.json", "unsafe path"),
        ("x_e0000.weights.npy", "has an unexpected extension 'weights.npy'"),
    ],
)
def test_unsafe_members_are_refused_naming_shard_and_member(tmp_path, name, message):
    shard = write_tar(tmp_path / "bad-000000.tar", [(name, b"\x80\x04K\x01.")])
    with pytest.raises(ShardError, match=f"bad-000000.tar: member '{name}' {message}"):
        list(open_zoo(str(shard)))


def test_links_are_refused(tmp_path):
    shard = write_tar(tmp_path / "bad-000000.tar", [("x_e0000.meta.json", b"")], kind=tarfile.SYMTYPE)
    with pytest.raises(ShardError, match="is not a regular file"):
        list(open_zoo(str(shard)))


def test_broken_shards_name_shard_and_key_and_nothing_is_dropped_silently(zoo, tmp_path):
    manifest, _ = zoo
    good = first_shard(manifest).read_bytes()
    members = tarfile.open(fileobj=io.BytesIO(good)).getmembers()
    cut = tmp_path / "cut-000000.tar"
    cut.write_bytes(good[: members[3].offset_data + 100])  # inside the weights of the second sample
    with pytest.raises(ShardError, match=r"cut-000000.tar: truncated in member 'mlp-w4-b32-s0-\w+_e0001.weights"):
        list(open_zoo(str(cut)))
    assert keys(open_zoo(str(cut), handler=wds.ignore_and_continue)) == [members[0].name.partition(".")[0]]
    header = bytearray(good)
    header[members[1].offset + 20] ^= 0xFF  # in the name field of the second member's header
    (tmp_path / "hdr-000000.tar").write_bytes(bytes(header))
    with pytest.raises(ShardError, match=r"hdr-000000.tar: corrupt tar header after member 'mlp-w4-.*meta.json'"):
        list(open_zoo(str(tmp_path / "hdr-000000.tar")))
    lonely = write_tar(tmp_path / "lonely-000000.tar", [("k_e0000.meta.json", b"{}")])
    with pytest.raises(ShardError, match="lonely-000000.tar: sample 'k_e0000' has no weights.safetensors"):
        list(open_zoo(str(lonely)))


def test_check_hash_catches_flipped_weights(zoo, tmp_path):
    manifest, _ = zoo
    data = bytearray(first_shard(manifest).read_bytes())
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("safetensors"))
    data[member.offset_data + member.size - 1] ^= 0x01
    (tmp_path / "flip-000000.tar").write_bytes(bytes(data))
    assert len(list(open_zoo(str(tmp_path / "flip-000000.tar")))) == 2  # undetectable without hashing
    key = member.name.partition(".")[0]
    with pytest.raises(ShardError, match=f"sample '{key}': weights do not match their sha256"):
        list(open_zoo(str(tmp_path / "flip-000000.tar"), check_hash=True))


def test_h5_dataset_gives_the_stream_samples_by_index(zoo, tmp_path):
    manifest, _ = zoo
    path = export_hdf5(manifest, tmp_path / "demo.h5")
    stream = {json.dumps(m, sort_keys=True): w for w, m in open_zoo(manifest, view="state_dict")}
    dataset = ZooH5Dataset(path, view="state_dict")
    assert len(dataset) == len(stream) == 6
    for i in range(len(dataset)):
        weights, meta = dataset[i]
        expected = stream[json.dumps(meta, sort_keys=True)]
        assert all(torch.equal(weights[k], expected[k]) for k in expected)
    assert len(ZooH5Dataset(path, epochs=[0, 1], where={"model.width": 4})) == 2
    vector, meta = ZooH5Dataset(path, epochs=2, where={"model.width": 8})[0]
    assert vector.shape == (meta["n_params"],)
    loader = DataLoader(
        ZooH5Dataset(path, view="flat", epochs=0, where={"model.width": 8}), batch_size=None, num_workers=2
    )
    assert [m["epoch"] for _, m in loader] == [0]


def test_h5_dataset_refuses_external_links_and_external_storage(zoo, tmp_path):
    manifest, _ = zoo
    path = export_hdf5(manifest, tmp_path / "demo.h5")
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as h5:
        h5["weights"] = np.zeros((1, 3), dtype=np.float32)
    linked = tmp_path / "linked.h5"
    shutil.copy(path, linked)
    with h5py.File(linked, "a") as h5:
        h5["elsewhere"] = h5py.ExternalLink(str(secret), "/")
    with pytest.raises(ShardError, match="'elsewhere' is an external link to .*secret.h5'; refused"):
        ZooH5Dataset(linked)
    (tmp_path / "raw.bin").write_bytes(bytes(12))
    stored = tmp_path / "stored.h5"
    shutil.copy(path, stored)
    with h5py.File(stored, "a") as h5:
        h5.create_dataset("outside/weights", (1, 3), dtype=np.float32, external=[(str(tmp_path / "raw.bin"), 0, 12)])
    with pytest.raises(ShardError, match="dataset 'outside/weights' stores its data in other files; refused"):
        ZooH5Dataset(stored)


def real_sample(manifest) -> tuple[str, dict, bytes]:
    """`(key, meta, weights)` of the first sample of the zoo's first shard."""
    with tarfile.open(first_shard(manifest)) as tar:
        meta_member, weights_member = tar.getmembers()[:2]
        meta = json.loads(tar.extractfile(meta_member).read())
        return meta_member.name.partition(".")[0], meta, tar.extractfile(weights_member).read()


def safetensors_bytes(header, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data


def edited(weights: bytes, edit) -> bytes:
    """`weights` with its safetensors header changed by `edit(header)`, data unchanged."""
    size = int.from_bytes(weights[:8], "little")
    header = json.loads(weights[8 : 8 + size])
    return safetensors_bytes(edit(header) or header, weights[8 + size :])


def first_tensor(header) -> dict:
    return next(v for k, v in header.items() if k != "__metadata__")


def all_at_zero(header) -> None:
    for name, info in header.items():
        if name != "__metadata__":
            info["data_offsets"] = [0, info["data_offsets"][1] - info["data_offsets"][0]]


MALFORMED_WEIGHTS = {
    "header is a list": (lambda h: [1, 2], "safetensors header is a JSON list, not an object"),
    "negative offsets": (lambda h: first_tensor(h).update(data_offsets=[-8, 0]), "data_offsets must be two integers"),
    "string offsets": (lambda h: first_tensor(h).update(data_offsets=["0", "8"]), "data_offsets must be two integers"),
    "offsets past the end": (lambda h: first_tensor(h).update(data_offsets=[0, 10**9]), "data_offsets must be"),
    "overlapping tensors": (lambda h: all_at_zero(h), "overlap"),
    "dtype is a list": (lambda h: first_tensor(h).update(dtype=["F32"]), "dtype must be one of"),
    "unknown dtype": (lambda h: first_tensor(h).update(dtype="F8_E4M3"), "dtype must be one of"),
    "shape of strings": (lambda h: first_tensor(h).update(shape=["4"]), "shape must be a list"),
}


@pytest.mark.parametrize("case", MALFORMED_WEIGHTS)
def test_malformed_weights_raise_shard_error_naming_shard_and_sample(zoo, tmp_path, case):
    manifest, _ = zoo
    key, meta, weights = real_sample(manifest)
    edit, message = MALFORMED_WEIGHTS[case]
    bad = edited(weights, edit)
    meta["sha256"] = hashlib.sha256(bad).hexdigest()  # a consistent but malicious sample
    shard = write_tar(
        tmp_path / "bad-000000.tar",
        [(f"{key}.meta.json", json.dumps(meta).encode()), (f"{key}.weights.safetensors", bad)],
    )
    with pytest.raises(ShardError, match=f"bad-000000.tar: sample '{key}': corrupt weights .*{message}"):
        list(open_zoo(str(shard), check_hash=True))


@pytest.mark.parametrize(
    "meta, message",
    [
        (b"null", "a JSON NoneType, not an object"),
        (b"[1, 2]", "a JSON list, not an object"),
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
        (b'{"id": 3}', "missing or mistyped field"),
    ],
)
def test_malformed_meta_raises_shard_error(zoo, tmp_path, meta, message):
    manifest, _ = zoo
    key, _, weights = real_sample(manifest)
    members = [(f"{key}.meta.json", meta), (f"{key}.weights.safetensors", weights)]
    shard = write_tar(tmp_path / "bad-000000.tar", members)
    with pytest.raises(ShardError, match=f"bad-000000.tar: sample '{key}': corrupt meta.json .*{message}"):
        list(open_zoo(str(shard)))


def test_a_duplicate_sample_is_refused_not_yielded_twice(zoo, tmp_path):
    manifest, _ = zoo
    key, meta, weights = real_sample(manifest)
    members = [(f"{key}.meta.json", json.dumps(meta).encode()), (f"{key}.weights.safetensors", weights)]
    shard = write_tar(tmp_path / "dup-000000.tar", members + members)
    with pytest.raises(ShardError, match=f"dup-000000.tar: member '{key}.meta.json' appears twice"):
        list(open_zoo(str(shard)))


def test_a_fifo_named_like_a_shard_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "pipe-000000.tar")
    with pytest.raises(ShardError, match="pipe-000000.tar: not a regular file"):
        list(open_zoo(str(tmp_path / "pipe-000000.tar")))
    with pytest.raises(ShardError, match="not a regular file"):
        list(open_zoo(tmp_path))


def test_a_declared_member_size_allocates_only_the_bytes_present(tmp_path):
    header = bytearray(tarfile.TarInfo("x_e0000.meta.json").tobuf(format=tarfile.USTAR_FORMAT))
    header[124:136] = b"%011o\0" % (8 * 2**30 - 1)  # 8 GiB declared
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    path = tmp_path / "huge-000000.tar"
    path.write_bytes(bytes(header) + bytes(6000))
    tracemalloc.start()
    with pytest.raises(ShardError, match="truncated in member 'x_e0000.meta.json' .6000 of 8589934591 bytes"):
        list(open_zoo(str(path)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 2**20


@pytest.mark.parametrize("location", ["/etc", "../../../../../etc", "pipe:cat /etc/passwd", "file:///etc"])
def test_a_manifest_location_outside_its_root_is_refused_without_echoing_files(zoo, tmp_path, location):
    manifest, _ = zoo
    evil = tmp_path / "manifests" / "evil.json"
    evil.parent.mkdir()
    evil.write_text(
        json.dumps(
            {
                **json.loads(manifest.read_text()),
                "location": location,
                "shards": [{"name": "passwd-000000.tar", "bytes": 1, "samples": 1, "sha256": ""}],
            }
        )
    )
    with pytest.raises(ValueError, match="its shard location leaves the folder .*; refused. Pass shards="):
        open_zoo(evil)
    with pytest.raises(ValueError, match="refused"):
        verify(evil)


def test_manifest_shard_names_must_be_flat_file_names(zoo, tmp_path):
    manifest, _ = zoo
    evil = tmp_path / "manifests" / "evil.json"
    evil.parent.mkdir()
    entry = {"name": "../../etc/x-000000.tar", "bytes": 1, "samples": 1, "sha256": ""}
    evil.write_text(json.dumps({**json.loads(manifest.read_text()), "shards": [entry]}))
    with pytest.raises(ValueError, match="a shard name is not a flat"):
        open_zoo(evil)


def test_verify_reports_every_malformed_shard_and_goes_on(zoo, tmp_path):
    manifest, _ = zoo
    key, meta, weights = real_sample(manifest)
    entries = []
    (tmp_path / "shards").mkdir()
    negative = edited(weights, MALFORMED_WEIGHTS["negative offsets"][0])
    consistent = json.dumps({**meta, "sha256": hashlib.sha256(negative).hexdigest()}).encode()
    for i, (meta_bytes, weights_bytes) in enumerate([(b"null", weights), (consistent, negative)]):
        name = f"demo-0123abcd-{i:06d}.tar"
        path = write_tar(
            tmp_path / "shards" / name,
            [(f"{key}.meta.json", meta_bytes), (f"{key}.weights.safetensors", weights_bytes)],
        )
        data = path.read_bytes()
        entries.append({"name": name, "bytes": len(data), "samples": 1, "sha256": hashlib.sha256(data).hexdigest()})
    bad = tmp_path / "manifests" / "demo.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps({**json.loads(manifest.read_text()), "location": "../shards", "shards": entries}))
    problems = verify(bad)
    assert problems[0] == f"demo-0123abcd-000000.tar: {key}: corrupt meta.json (a JSON NoneType, not an object)"
    assert problems[1].startswith(
        f"demo-0123abcd-000001.tar: {key}: weights do not decode with meta.json's "
        "layout (tensor 'layers.0.weight': data_offsets must be two integers"
    )
    assert len(problems) == 2


def test_a_predicate_never_sees_a_missing_value():
    """Metrics exist at some epochs only: a sample without the value does not match a predicate on it
    (instead of calling `v > 10` on None), while equality can still ask for a missing value."""
    measured = {"epoch": 2, "landscape": {"top_eig": 12.0}}
    unmeasured = {"epoch": 0, "landscape": {"top_eig": None}}
    through_null = {"epoch": 0, "landscape": None}
    where = {"landscape.top_eig": lambda v: v > 10}
    assert [matches(m, where) for m in (measured, unmeasured, through_null)] == [True, False, False]
    assert matches(through_null, {"landscape.top_eig": None})
    assert not matches(unmeasured, {"landscape.top_eig": [12.0, 13.0]})
