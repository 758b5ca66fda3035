"""Loading packed shards: round trip to the recorded accuracy, views, filters, shuffling, worker and
node splits, URL sources, permutation augmentation, refusal of unsafe or broken shards, HDF5 access."""

import copy
import io
import json
import shutil
import tarfile

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
from zoo.models import from_meta
from zoo.pack import export_hdf5, pack_zoo
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
    assert len(list(open_zoo(manifest, where={"landscape.top_eig": None}))) == 6
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
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 5), nn.ReLU(), nn.Linear(5, 3))
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


@pytest.mark.parametrize("name, message", [
    ("x_e0000.weights.pth", "is a pickle; refused"),
    ("x_e0000.pyd", "is a pickle; refused"),
    ("../x_e0000.meta.json", "unsafe path"),
    ("/etc/x_e0000.meta.json", "unsafe path"),
    ("sub/x_e0000.meta.json", "unsafe path"),
    ("x_e0000.weights.npy", "has an unexpected extension 'weights.npy'"),
])
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
    cut.write_bytes(good[:members[3].offset_data + 100])  # inside the weights of the second sample
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
    loader = DataLoader(ZooH5Dataset(path, view="flat", epochs=0, where={"model.width": 8}), batch_size=None,
                        num_workers=2)
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
