"""Packing a really trained tiny zoo: shards, manifest, determinism, atomicity, verify, HDF5, CLI."""

import hashlib
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tarfile

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import zoo as zoo_package
import zoo.cli.pack as pack_cli
import zoo.pack.packing as packing_module
import zoo.pack.shards as shards_module
from zoo.config import SCHEMA_PATH
from zoo.load import ShardError, open_zoo
from zoo.pack import export_hdf5, pack_zoo, verify
from zoo.pack.samples import run_samples
from zoo.pack.shards import write_shards
from zoo.sweep import compose_config
from zoo.train.run import train_model
from zoo.train.rundir import list_runs

TINY = ["data.n_train=300", "trainer.max_epochs=2", "data.batch_size=32"]
CELLS = [["model.width=4"], ["model.width=8"], ["model.width=16", "optim.lr=1e3"]]  # the last one diverges


def train_tiny_zoo(root, data_root, cells=CELLS) -> list:
    """Train each cell of the demo zoo for 2 epochs into `root/runs/demo` (checkpoints at epochs 0, 1, 2)."""
    for overrides in cells:
        train_model(compose_config([f"paths.root={root}", f"paths.data={data_root}", *TINY, *overrides]))
    return list_runs(root / "runs", "demo")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, data_root):
    """Two trained models and a diverged one, with landscape/phase results for one model."""
    root = tmp_path_factory.mktemp("zoo")
    runs = train_tiny_zoo(root, data_root)
    ok = [r for r in runs if r.status()[0] == "ok"]
    (ok[0].path / "landscape.json").write_text(json.dumps({"2": {"top_eig": 3.5, "trace": 10.0, "seconds": 1.7}}))
    (root / "runs" / "demo" / "phases.json").write_text(json.dumps({ok[0].id: "IV-B", ok[1].id: None}))
    return root, runs


def pack(root, out="shards", **kw):
    kw = {"max_shard_bytes": 2**28, "max_shard_count": 4, "include_failed": False, **kw}
    return pack_zoo(root / "runs", "demo", root / out, root / "manifests" / f"{out}.json", **kw)


@pytest.fixture(scope="module")
def packed(zoo):
    root, _ = zoo
    return root / "manifests" / "shards.json", pack(root)


def test_manifest_counts_every_model_and_matches_its_schema(zoo, packed):
    _, runs = zoo
    path, manifest = packed
    assert manifest == json.loads(path.read_text())
    assert manifest["zoo"] == "demo" and manifest["schema_version"] == 1
    assert manifest["counts"]["models"] == 3 and manifest["counts"]["packed_models"] == 2
    assert manifest["counts"]["status"] == {"ok": 2, "diverged": 1}
    assert manifest["counts"]["phase"] == {"IV-B": 1, "unlabeled": 2}
    assert manifest["counts"]["samples"] == 6 == sum(s["samples"] for s in manifest["shards"])
    assert manifest["counts"]["checkpoints"] == sum(len(r.checkpoints()) for r in runs)
    tag = manifest["shards"][0]["name"].split("-")[1]  # the generation: 8 hex of the shards' hashes
    assert [s["name"] for s in manifest["shards"]] == [f"demo-{tag}-000000.tar", f"demo-{tag}-000001.tar"]
    assert manifest["grid"] == {
        "axes": ["model.width", "data.batch_size"],
        "values": {"model.width": [4, 8, 16], "data.batch_size": [32], "seed": [0]},
    }
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(manifest, json.loads(SCHEMA_PATH.read_text()))


def test_samples_carry_checkpoint_bytes_and_metadata(zoo, packed):
    root, runs = zoo
    by_id = {r.id: r for r in runs}
    tars = sorted((root / "shards").glob("*.tar"))
    members = [m for t in tars for m in tarfile.open(t).getmembers()]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o444)}
    samples = list(open_zoo(packed[0], view="state_dict"))
    ok = [r for r in runs if r.status()[0] == "ok"]
    assert [(m["id"], m["epoch"]) for _, m in samples] == [(r.id, e) for r in ok for e in (0, 1, 2)]
    for weights, meta in samples:
        run = by_id[meta["id"]]
        raw = run.ckpt_path(meta["epoch"]).read_bytes()
        assert meta["sha256"] == hashlib.sha256(raw).hexdigest()
        expected = load_file(run.ckpt_path(meta["epoch"]))
        assert list(weights) == ["layers.0.weight", "layers.2.weight", "layers.4.weight"]
        assert all(torch.equal(weights[k], expected[k]) for k in expected)
        row = next(r for r in run.metrics() if r["epoch"] == meta["epoch"])
        assert meta["metrics"] == {k: v for k, v in row.items() if k not in ("epoch", "seconds")}
        assert meta["config"]["id"] == meta["id"] and meta["arch"] == "mlp" and meta["status"] == "ok"
        assert meta["grid"] == dict(run.config().grid) and meta["n_params"] == sum(t.numel() for t in expected.values())
        assert meta["version"] == zoo_package.__version__
        landscape = meta["landscape"]  # the same keys in every sample: NaN where not measured
        assert sorted(landscape) == ["measured", "top_eig", "trace"]
        if (run.path / "landscape.json").exists() and meta["epoch"] == 2:
            assert meta["phase"] == "IV-B" and landscape == {"measured": True, "top_eig": 3.5, "trace": 10.0}
        else:
            assert not landscape["measured"] and math.isnan(landscape["top_eig"]) and math.isnan(landscape["trace"])
            assert meta["phase"] == ("IV-B" if (run.path / "landscape.json").exists() else "unlabeled")


def test_samples_do_not_carry_the_machines_paths(zoo, packed):
    """A published zoo says how each model was trained, not where: no folder of the machine that packed it."""
    root, _ = zoo
    for tar in (root / "shards").glob("*.tar"):
        assert str(root).encode() not in tar.read_bytes(), f"{tar.name} names {root}"
    meta = next(iter(open_zoo(packed[0], view="state_dict")))[1]
    assert "paths" not in meta["config"] and meta["config"]["model"]["name"] == "mlp"


def test_packing_twice_gives_byte_identical_shards(zoo, packed):
    root, _ = zoo
    again = pack(root, out="again")
    first = packed[1]
    assert again["shards"] == first["shards"]
    for shard in first["shards"]:
        assert (root / "again" / shard["name"]).read_bytes() == (root / "shards" / shard["name"]).read_bytes()
    strip = lambda m: {k: v for k, v in m.items() if k not in ("created", "location")}  # noqa: E731
    assert strip(again) == strip(first)


def test_shards_respect_size_and_count_bounds_and_failed_models_are_optional(zoo, tmp_path):
    root, runs = zoo
    sample_bytes = max(p.stat().st_size for r in runs for p in r.checkpoints().values()) + 4096
    manifest = pack_zoo(
        root / "runs",
        "demo",
        tmp_path / "s",
        tmp_path / "m.json",
        max_shard_bytes=2 * sample_bytes,
        max_shard_count=3,
        include_failed=True,
    )
    diverged = next(r for r in runs if r.status()[0] == "diverged")
    assert manifest["counts"]["packed_models"] == 3
    assert manifest["counts"]["samples"] == 6 + len(diverged.checkpoints())
    assert all(s["bytes"] <= 2 * sample_bytes and s["samples"] <= 3 for s in manifest["shards"])
    assert len(manifest["shards"]) > manifest["counts"]["samples"] // 3
    assert verify(tmp_path / "m.json") == []


def test_interrupted_pack_leaves_only_complete_shards_and_a_rerun_is_clean(zoo, tmp_path):
    root, runs = zoo
    out = tmp_path / "shards"

    def interrupted():
        for i, sample in enumerate(s for r in runs for s in run_samples(r, "demo", None)):
            if i == 3:
                raise KeyboardInterrupt
            yield sample

    with pytest.raises(KeyboardInterrupt):
        write_shards(interrupted(), out, "demo", max_bytes=2**28, max_count=2)
    assert list(out.iterdir()) == []  # complete shards are named only when the whole pack is written
    (out / ".demo-x1y2.tar.tmp").write_bytes(b"half a shard left by kill -9")
    (out / "demo-000007.tar").write_bytes(b"shard of an earlier pack, before generations")
    (out / "demo-0123abcd-000003.tar").write_bytes(b"shard of an earlier generation")
    manifest = pack_zoo(root / "runs", "demo", out, tmp_path / "m.json", max_shard_count=4)
    assert sorted(p.name for p in out.iterdir()) == [
        ".demo.lock",
        "README.md",
        *(s["name"] for s in manifest["shards"]),
    ]
    assert verify(tmp_path / "m.json") == []


def shard(manifest: dict, index: int) -> str:
    return manifest["shards"][index]["name"]


@pytest.fixture
def shard_copy(zoo, packed, tmp_path):
    root, _ = zoo
    return shutil.copytree(root / "shards", tmp_path / "copy")


def test_verify_names_shard_and_key_of_a_flipped_byte(packed, shard_copy):
    name = shard(packed[1], 1)
    path = shard_copy / name
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".weights.safetensors"))
    data = bytearray(path.read_bytes())
    data[member.offset_data + member.size - 1] ^= 0x01  # last byte of the last tensor
    path.write_bytes(bytes(data))
    problems = verify(packed[0], shards=shard_copy)
    key = member.name.partition(".")[0]
    assert f"{name}: {key}: weights do not match the sha256 in meta.json" in problems
    assert any(p.startswith(f"{name}: sha256") for p in problems)
    assert len(problems) == 2


def test_verify_reports_a_missing_shard_and_an_extra_file(packed, shard_copy):
    (shard_copy / shard(packed[1], 0)).unlink()
    (shard_copy / "notes.txt").write_text("not a shard")
    problems = verify(packed[0], shards=shard_copy)
    assert problems == [
        f"{shard_copy / 'notes.txt'}: not listed in the manifest; remove it or re-run zoo-pack",
        f"{shard(packed[1], 0)}: missing; download it or re-run zoo-pack",
    ]


def test_verify_accepts_a_url_pattern_and_names_the_key_where_a_shard_is_cut(packed, shard_copy):
    name, pattern = shard(packed[1], 0), shard(packed[1], 0).replace("000000", "{000000..000001}")
    assert verify(packed[0], shards=f"{shard_copy}/{pattern}") == []
    path = shard_copy / name
    cut = tarfile.open(path).getmembers()[1].offset + 100  # inside the header of the first sample's weights
    path.write_bytes(path.read_bytes()[:cut])
    problems = verify(packed[0], shards=f"pipe:cat {shard_copy}/{pattern}")
    assert problems[0].startswith(f"{name}: truncated after member 'mlp-w4-b32-s0-")
    assert "_e0000.meta.json'" in problems[0]
    assert problems[1:3] == [
        f"{name}: 0 samples read, the manifest lists 4",
        f"{name}: {cut} bytes read, the manifest lists {packed[1]['shards'][0]['bytes']}",
    ]
    assert problems[3].startswith(f"{name}: sha256") and len(problems) == 4


def test_hdf5_holds_exactly_the_shards(packed, tmp_path):
    path = export_hdf5(packed[0], tmp_path / "demo.h5")
    stream = {f"{m['id']}_e{m['epoch']:04d}": (w, m) for w, m in open_zoo(packed[0], view="flat")}
    with h5py.File(path) as h5:
        assert h5.attrs["zoo"] == "demo"
        rows = 0
        for name, group in h5.items():
            assert name.startswith("mlp-")
            keys = [k.decode() for k in group["meta/key"][:]]
            rows += len(keys)
            names = [n.decode() for n in group["layout/names"][:]]
            assert names == ["layers.0.weight", "layers.2.weight", "layers.4.weight"]
            assert group["layout/offsets"][-1] == group["weights"].shape[1]
            for i, key in enumerate(keys):
                flat, meta = stream[key]
                assert np.array_equal(group["weights"][i], flat.numpy())
                assert json.loads(group["meta/json"][i]) == meta
                assert group["meta/epoch"][i] == meta["epoch"]
                assert group["meta/grid/model.width"][i] == meta["grid"]["model.width"]
                assert group["meta/metrics/test_acc"][i] == meta["metrics"]["test_acc"]
                assert group["meta/phase"][i].decode() == meta["phase"]
                top_eig = group["meta/landscape/top_eig"][i]  # NaN at epochs not measured
                assert top_eig == 3.5 if meta["landscape"]["measured"] else np.isnan(top_eig)
        assert rows == len(stream)
    half = export_hdf5(packed[0], tmp_path / "half.h5", dtype="float16")
    with h5py.File(half) as h5:
        group = next(iter(h5.values()))
        assert group["weights"].dtype == np.float16
        key = group["meta/key"][0].decode()
        assert np.allclose(group["weights"][0], stream[key][0].numpy(), rtol=1e-3, atol=1e-4)


def test_cli_packs_verifies_and_exports(zoo, tmp_path, capsys):
    root, _ = zoo
    common = [f"paths.runs={root / 'runs'}", f"paths.root={tmp_path}", "pack.max_shard_count=2", "pack.all_runs=true"]
    proc = subprocess.run([sys.executable, "-m", "zoo.cli.pack", "zoo=demo", *common], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"packed 2/3 models, 6 samples into 3 shards in {tmp_path}/shards/demo" in proc.stdout
    assert pack_cli.run(["verify", *common, "seed=0,1"]) == 0  # zoo-train -m overrides are accepted
    assert pack_cli.run(["hdf5", *common]) == 0 and (tmp_path / "shards" / "demo.h5").is_file()
    name = shard(json.loads((tmp_path / "manifests" / "demo.json").read_text()), 2)
    (tmp_path / "shards" / "demo" / name).unlink()
    capsys.readouterr()
    assert pack_cli.run(["verify", f"manifest={tmp_path}/manifests/demo.json", *common]) == 1
    assert f"{name}: missing" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        pack_cli.main(["hdf5", *common])
    assert exited.value.code == 2  # a missing file: a usage error, said in one line
    assert re.search(f"zoo-pack: error: 1 shard.s. of .* not found in .*{name}", capsys.readouterr().err)


def test_hugging_face_datasets_reads_every_sample_offline(zoo, tmp_path):
    """`datasets.load_dataset("webdataset")` infers a schema from a shard's first samples: here the
    first model has no landscape results and no phase, the second has both."""
    pytest.importorskip("datasets")
    root, runs = zoo
    shutil.copytree(root / "runs", tmp_path / "runs")
    ok = [r.id for r in runs if r.status()[0] == "ok"]
    models = tmp_path / "runs" / "demo" / "models"
    (models / ok[0] / "landscape.json").rename(models / ok[1] / "landscape.json")
    (tmp_path / "runs" / "demo" / "phases.json").write_text(json.dumps({ok[1]: "IV-B"}))
    manifest = pack(tmp_path, max_shard_count=8)
    card = (tmp_path / "shards" / "README.md").read_text()
    assert verify(tmp_path / "manifests" / "shards.json") == []  # the card is no extra shard file
    script = f"""
import json, math, datasets, safetensors.torch, torch, yaml
files = {{"train": {str(tmp_path / "shards" / "demo-*.tar")!r}}}
for streaming in (False, True):
    rows = list(datasets.load_dataset("webdataset", data_files=files, split="train", streaming=streaming,
                                      cache_dir={str(tmp_path / "hf")!r}))
    print(json.dumps([[r["__key__"], r["meta.json"]["phase"], r["meta.json"]["landscape"]["measured"],
                       sorted(safetensors.torch.load(r["weights.safetensors"]))] for r in rows]))
header = yaml.safe_load({card!r}.split("---")[1])
card = datasets.Features._from_yaml_list(header["dataset_info"]["features"])
cache = {str(tmp_path / "hf")!r}
inferred = datasets.load_dataset("webdataset", data_files=files, split="train", cache_dir=cache).features
print(json.dumps(card == inferred))
"""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    eager, streamed, card_matches = map(json.loads, proc.stdout.splitlines()[-3:])
    assert eager == streamed and len(eager) == manifest["counts"]["samples"] == 6
    assert [phase for _, phase, _, _ in eager] == ["unlabeled"] * 3 + ["IV-B"] * 3
    assert [measured for _, _, measured, _ in eager] == [False] * 5 + [True]
    assert all(names == ["layers.0.weight", "layers.2.weight", "layers.4.weight"] for *_, names in eager)
    assert card_matches and "| IV-B | 1 |" in card and 'license: "cc-by-4.0"' in card


def test_webdataset_decoder_gives_tensors(packed):
    import webdataset as wds

    from zoo.load import decode_safetensors

    path, manifest = packed
    urls = [str(path.parent.parent / "shards" / s["name"]) for s in manifest["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode(decode_safetensors))
    assert len(samples) == manifest["counts"]["samples"]
    assert all(isinstance(s["weights.safetensors"]["layers.0.weight"], torch.Tensor) for s in samples)
    assert all(isinstance(s["meta.json"], dict) for s in samples)  # webdataset's own JSON decoder


def test_cli_packs_exactly_the_sweep_and_reports_other_run_dirs(zoo, tmp_path):
    """The zoo is the sweep the overrides select: a run dir of another override (here the diverged
    width-16 model, trained with optim.lr=1e3) is counted, named and left out (#16)."""
    root, _ = zoo
    sweep = ["zoo=demo", *TINY, "model.width=4,8", "seed=0", f"paths.runs={root / 'runs'}", f"paths.root={tmp_path}"]
    proc = subprocess.run([sys.executable, "-m", "zoo.cli.pack", *sweep], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "1 run dir(s) in" in proc.stdout and "left out (pack.all_runs=true packs them too)" in proc.stdout
    assert "packed 2/2 models, 6 samples" in proc.stdout
    manifest = json.loads((tmp_path / "manifests" / "demo.json").read_text())
    assert manifest["counts"]["models"] == 2 and manifest["counts"]["packed_models"] == 2


def _file_size_limit(limit: int):
    """preexec_fn: writes past `limit` bytes fail with EFBIG, as on a full disk (no root needed)."""

    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer

    return apply


def test_hdf5_on_a_full_disk_fails_with_a_message_and_leaves_nothing(packed, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.cli.pack", "hdf5", f"pack.manifest={packed[0]}", f"pack.hdf5={out / 'demo.h5'}"],
        capture_output=True,
        text=True,
        preexec_fn=_file_size_limit(20_000),
    )
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert f"zoo-pack: error: cannot write {out / 'demo.h5'}" in proc.stderr and "free space" in proc.stderr
    assert list(out.iterdir()) == []


def _old_pack_intact(manifest_path, before: bytes, expected: list):
    assert manifest_path.read_bytes() == before
    assert verify(manifest_path) == []
    assert [(m["id"], m["epoch"]) for _, m in open_zoo(manifest_path, check_hash=True)] == expected


@pytest.mark.parametrize("crash", ["writing shards", "writing the manifest"])
def test_a_repack_that_crashes_leaves_the_old_pack_readable_and_consistent(zoo, tmp_path, monkeypatch, crash):
    root, _ = zoo
    manifest = tmp_path / "manifests" / "demo.json"
    pack_zoo(root / "runs", "demo", tmp_path / "shards", manifest, max_shard_count=2)
    before, expected = manifest.read_bytes(), [(m["id"], m["epoch"]) for _, m in open_zoo(manifest)]
    if crash == "writing shards":  # the third shard of the repack fails, as a kill or a full disk would
        real, calls = shards_module._write_tar, []
        monkeypatch.setattr(
            shards_module,
            "_write_tar",
            lambda *a: (
                calls.append(1)
                or (real(*a) if len(calls) < 3 else (_ for _ in ()).throw(OSError(28, "No space left on device")))
            ),
        )
    else:
        monkeypatch.setattr(
            packing_module, "write_json", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device"))
        )
    with pytest.raises(OSError, match="No space left"):
        pack_zoo(root / "runs", "demo", tmp_path / "shards", manifest, max_shard_count=1)  # other shards
    _old_pack_intact(manifest, before, expected)
    assert sorted(
        p.name for p in (tmp_path / "shards").iterdir() if not p.name.startswith(".") and p.name != "README.md"
    ) == sorted(s["name"] for s in json.loads(before)["shards"])


def test_the_loader_refuses_a_shard_that_is_not_the_manifests(zoo, packed, tmp_path):
    root, _ = zoo
    copy = shutil.copytree(root / "shards", tmp_path / "copy")
    first, second = (copy / shard(packed[1], i) for i in (0, 1))
    second.write_bytes(first.read_bytes())  # another shard under a listed name: other size
    with pytest.raises(ShardError, match=f"{second}: .* bytes, its manifest lists .*another pack"):
        list(open_zoo(packed[0], shards=copy))
    data = bytearray(first.read_bytes())
    data[-1] ^= 0x01  # same size, other bytes: in the end-of-archive padding no sample hash sees
    first.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=f"{first}: sha256 differs from its manifest's"):
        list(open_zoo(packed[0], shards=copy, check_hash=True))


def test_every_sample_has_exactly_the_format_modules_meta_fields(packed):
    """zoo.shard_format owns the sample schema: every meta.json has exactly META_FIELDS."""
    from zoo.shard_format import META_FIELDS

    manifest, _ = packed
    metas = [meta for _, meta in open_zoo(manifest, view="state_dict")]
    assert metas and all(sorted(meta) == sorted(META_FIELDS) for meta in metas)
