"""Weight-space learning on packed zoos: splits by model and by grid value, targets, per-layer
normalization and its exact inverse, weight filters — on real shards and HDF5 files written by
zoo.pack from small MLP state dicts (no training needed to test loading)."""

import json
import math
from functools import partial

import pytest
import torch
from safetensors.torch import save
from torch.utils.data import default_collate

from zoo.load import Permute, ZooH5Dataset, open_zoo
from zoo.load.augment import Chain, Erase, Noise
from zoo.load.normalize import Normalizer
from zoo.load.splits import split_of
from zoo.load.tokens import Tokens, layout_of
from zoo.models import build
from zoo.pack import export_hdf5
from zoo.pack.packing import Model, pack_models
from zoo.pack.samples import make_sample, module_order

PHASES = ["I", "II", "III", "IV-A", "IV-B"]
EPOCHS = (0, 5, 10)


def mlp_config(width: int) -> dict:
    return {
        "name": "mlp",
        "in_dim": 6,
        "out_dim": 3,
        "width": width,
        "depth": 2,
        "bias": True,
        "activation": "relu",
        "init": "default",
    }


def samples(model_id: str, width: int, seed: int, act: str, phase: str, bad: bool):
    config = {"model": mlp_config(width), "grid": {"model.width": width, "seed": seed, "model.activation": act}}
    torch.manual_seed(hash((width, seed)) % 2**31)
    weights = build(config["model"]).state_dict()
    for epoch in EPOCHS:
        weights = {k: v * (1 + epoch / 10) for k, v in weights.items()}
        if bad and epoch == EPOCHS[-1]:
            weights["layers.0.weight"][0, 0] = math.nan
        metrics = {"test_acc": 0.3 + width / 100 + epoch / 100, "train_loss": 1.0 / (1 + epoch)}
        landscape = {"hessian_trace": float(width * epoch)} if epoch == EPOCHS[-1] else None
        yield make_sample(
            zoo_name="toy",
            model_id=model_id,
            epoch=epoch,
            arch="mlp",
            grid=config["grid"],
            config=config,
            status="diverged" if bad else "ok",
            phase=phase,
            metrics=metrics,
            landscape=landscape,
            weights=save({k: v.contiguous() for k, v in weights.items()}),
            order=module_order(config["model"]),
            landscape_fields={"hessian_trace": None},
        )


def toy_models(n_seeds: int = 3, extra: int = 0) -> list[Model]:
    models = []
    for i, (width, seed) in enumerate((w, s) for w in (2, 4, 8, 16) for s in range(n_seeds + extra)):
        model_id = f"mlp-w{width}-s{seed}-{1000 * width + seed:08x}"
        act = "relu" if seed % 2 == 0 else "tanh"
        bad = width == 16 and seed == 0
        models.append(
            Model(
                id=model_id,
                status="diverged" if bad else "ok",
                phase=PHASES[i % 5],
                grid={"model.width": width, "seed": seed, "model.activation": act},
                checkpoints=len(EPOCHS),
                samples=partial(samples, model_id, width, seed, act, PHASES[i % 5], bad),
            )
        )
    return models


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """16 MLPs (4 widths × 4 seeds, one diverged with a NaN weight) × 3 epochs, 5 samples per shard, and its HDF5."""
    root = tmp_path_factory.mktemp("wsl")
    manifest = root / "manifests" / "toy.json"
    pack_models(
        toy_models(n_seeds=4),
        zoo_name="toy",
        axes=["model.width", "seed"],
        out_dir=root / "shards",
        manifest_path=manifest,
        max_shard_bytes=2**28,
        max_shard_count=5,
        include_failed=True,
    )
    return manifest, export_hdf5(manifest, root / "toy.h5")


def ids(dataset) -> list[str]:
    return [sample[-1]["id"] for sample in dataset]


def test_splits_by_model_partition_the_zoo_and_keep_every_checkpoint_together(toy):
    manifest, h5 = toy
    parts = {name: ids(open_zoo(manifest, split=name, split_seed=3)) for name in ("train", "val", "test")}
    everything = ids(open_zoo(manifest))
    assert sorted(sum(parts.values(), [])) == sorted(everything)
    assert all(parts.values()) and not (
        set(parts["train"]) & set(parts["val"]) | set(parts["train"]) & set(parts["test"])
    )
    for name, part in parts.items():
        assert all(part.count(i) == len(EPOCHS) for i in part)  # every checkpoint of a model in one split
        assert sorted(ids(ZooH5Dataset(h5, split=name, split_seed=3))) == sorted(part)
    assert ids(open_zoo(manifest, split="train", split_seed=4)) != parts["train"]
    with pytest.raises(ValueError, match="sum to 1"):
        open_zoo(manifest, split="train", splits=(0.7, 0.2))
    with pytest.raises(ValueError, match="split='val' is not one of"):
        open_zoo(manifest, split="val", splits=(0.8, 0.2))


def test_a_model_keeps_its_split_when_models_are_added():
    small, large = toy_models(n_seeds=3), toy_models(n_seeds=3, extra=5)
    before = {m.id: split_of({"id": m.id}, (0.5, 0.25, 0.25), seed=1) for m in small}
    after = {m.id: split_of({"id": m.id}, (0.5, 0.25, 0.25), seed=1) for m in large}
    assert all(after[i] == s for i, s in before.items()) and len(after) > len(before)
    counts = {s: list(after.values()).count(s) for s in ("train", "val", "test")}
    assert all(counts.values())


def test_held_out_grid_values_make_the_test_split(toy):
    manifest, h5 = toy
    splits = {"val": {"model.width": 8}, "test": {"seed": 1}}
    test = open_zoo(manifest, split="test", splits=splits)
    assert {m["grid"]["seed"] for _, m in test} == {1}
    assert {m["grid"]["model.width"] for _, m in open_zoo(manifest, split="val", splits=splits)} == {8}
    train = [m for _, m in open_zoo(manifest, split="train", splits=splits)]
    assert all(m["grid"]["seed"] != 1 and m["grid"]["model.width"] != 8 for m in train) and len(train) == 3 * 3 * 3
    assert len(ZooH5Dataset(h5, split="train", splits=splits)) == len(train)


def test_targets_come_as_tensors_with_text_as_class_indices(toy):
    manifest, h5 = toy
    keys = [
        "metrics.test_acc",
        "phase",
        "model.width",
        "model.activation",
        "landscape.hessian_trace",
        "status",
        "config.model.depth",
    ]
    for dataset in (open_zoo(manifest, targets=keys), ZooH5Dataset(h5, targets=keys)):
        rows = list(dataset)
        assert len(rows) == 16 * len(EPOCHS)
        for _weights, targets, meta in rows:
            assert targets["metrics.test_acc"].dtype == torch.float32
            assert targets["metrics.test_acc"].item() == pytest.approx(meta["metrics"]["test_acc"])
            assert targets["model.width"].item() == meta["grid"]["model.width"]
            assert targets["config.model.depth"].item() == 2
            assert PHASES[targets["phase"]] == meta["phase"] and targets["phase"].dtype == torch.int64
            assert ["relu", "tanh"][targets["model.activation"]] == meta["grid"]["model.activation"]
            assert ["ok", "diverged", "failed"][targets["status"]] == meta["status"]
            trace = targets["landscape.hessian_trace"].item()
            if meta["landscape"]["measured"]:
                assert trace == meta["landscape"]["hessian_trace"]
            else:
                assert math.isnan(trace)
    batch = default_collate([(w, t) for w, t, _ in open_zoo(manifest, targets=keys, where={"model.width": 4})])
    assert batch[0].shape == (12, 4 * 6 + 4 + 4 * 4 + 4 + 3 * 4 + 3)
    assert batch[1]["phase"].shape == (12,) and batch[1]["metrics.test_acc"].shape == (12,)
    with pytest.raises(ValueError, match="text .* has no class list"):
        list(open_zoo(manifest, targets=["arch"]))


def test_weight_and_status_filters(toy):
    manifest, h5 = toy
    everything = list(open_zoo(manifest, view="state_dict"))
    finite = list(open_zoo(manifest, view="state_dict", finite=True))
    assert len(finite) == len(everything) - 1
    assert all(torch.isfinite(w["layers.0.weight"]).all() for w, _ in finite)
    assert len(list(open_zoo(manifest, where={"status": "ok"}))) == 15 * len(EPOCHS)
    bound = 1.0
    kept = list(open_zoo(manifest, view="state_dict", finite=True, max_abs=bound))
    assert 0 < len(kept) < len(finite)
    assert all(max(t.abs().max() for t in w.values()) <= bound for w, _ in kept)
    assert len(ZooH5Dataset(h5, finite=True, max_abs=bound)) == len(kept)


def test_normalization_uses_the_training_split_and_its_inverse_is_exact(toy):
    manifest, h5 = toy
    train = [w for w, _ in open_zoo(manifest, view="state_dict", split="train", where={"status": "ok"})]
    normalized = list(open_zoo(manifest, view="state_dict", split="train", normalize=True, where={"status": "ok"}))
    values = torch.cat([w["layers.2.weight"].reshape(-1) for w, _ in normalized])
    assert abs(values.mean()) < 0.1 and 0.5 < values.std() < 2  # standardized up to the power-of-two scale
    assert list(manifest.parent.glob("toy.norm-*.json"))  # cached beside the manifest
    stats = json.loads(next(manifest.parent.glob("toy.norm-*.json")).read_text())
    expected = torch.cat([w["layers.2.weight"].reshape(-1).double() for w in train])
    assert stats["layers.2.weight"]["mean"] == pytest.approx(expected.mean().item())
    exact = Normalizer(stats, dtype=torch.float64)
    for weights, meta in open_zoo(manifest, view="state_dict", split="test", finite=True):
        back = exact.inverse(exact(weights), meta)
        assert all(torch.equal(back[k], weights[k]) for k in weights)  # bit for bit
    h5_normalized = ZooH5Dataset(h5, view="state_dict", split="train", normalize=True, where={"status": "ok"})
    assert torch.allclose(h5_normalized[0][0]["layers.2.weight"], normalized[0][0]["layers.2.weight"])
    with pytest.raises(ValueError, match="not finite.*finite=True"):  # the diverged model's NaN
        open_zoo(manifest, split="train", splits=(0.5, 0.5), normalize=True)
    assert list(open_zoo(manifest, split="train", splits=(0.5, 0.5), normalize=True, finite=True))


TINY_MODELS = {
    "mlp": {"name": "mlp", "in_dim": 5, "out_dim": 3, "width": 7, "depth": 2, "bias": True},
    "resnet18": {"name": "resnet", "depth": 18, "width": 2, "num_classes": 3, "bias": True},
    "resnet50": {"name": "resnet", "depth": 50, "width": 2, "num_classes": 3},
    "vit": {
        "name": "vit",
        "image_size": 8,
        "patch_size": 4,
        "channels": 3,
        "num_classes": 3,
        "width": 8,
        "depth": 2,
        "head_dim": 4,
    },
    "gpt": {"name": "gpt", "vocab_size": 11, "context": 6, "depth": 2, "width": 8, "head_dim": 4, "bias": True},
}


def cnn_state_dict() -> dict:
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 2 * 2, 5),
    )
    return cnn.state_dict()


@pytest.mark.parametrize("arch", [*TINY_MODELS, "cnn"])
@pytest.mark.parametrize("token_size", [4, 16])
def test_tokens_are_units_and_invert_to_the_bit(arch, token_size):
    torch.manual_seed(0)
    weights = cnn_state_dict() if arch == "cnn" else build(TINY_MODELS[arch]).state_dict()
    weights = {k: v + torch.randn_like(v) if v.is_floating_point() else v for k, v in weights.items()}
    view = Tokens(token_size)
    out = view(weights)
    tokens, positions, mask = out["tokens"], out["positions"], out["mask"]
    assert tokens.shape[1] == token_size and positions.shape == (len(tokens), 3) and mask.shape == tokens.shape
    floats = {k: v for k, v in weights.items() if v.is_floating_point()}
    assert mask.sum() == sum(v.numel() for v in floats.values())  # every weight once, padding masked
    back = view.inverse(tokens, layout_of(weights))
    assert back.keys() == floats.keys()
    assert all(torch.equal(back[k], floats[k]) and back[k].dtype == floats[k].dtype for k in floats)
    first = next(iter(floats))  # unit 0 of the first layer: its incoming weights, then its bias
    module = first.rpartition(".")[0]
    unit = torch.cat([v[0].reshape(-1) for k, v in floats.items() if k.rpartition(".")[0] == module])
    first_tokens = (positions[:, 0] == 0) & (positions[:, 1] == 0)
    assert torch.equal(tokens[first_tokens][mask[first_tokens]], unit)
    padded = Tokens(token_size, max_tokens=len(tokens) + 3)(weights)
    assert len(padded["tokens"]) == len(tokens) + 3 and not padded["mask"][-3:].any()
    assert all(
        torch.equal(a, b) for a, b in zip(view.inverse(padded["tokens"], layout_of(weights)).values(), floats.values())
    )


def test_tokens_view_round_trips_normalized_stream_samples(toy):
    manifest, h5 = toy
    normalizer = Normalizer(json.loads(next(manifest.parent.glob("toy.norm-*.json")).read_text()), torch.float64)
    view = Tokens(8, max_tokens=80)
    originals = {m["id"] + str(m["epoch"]): w for w, m in open_zoo(manifest, view="state_dict", where={"status": "ok"})}
    out, meta = next(iter(open_zoo(manifest, view="tokens")))  # the default Tokens()
    back = Tokens().inverse(out["tokens"], meta["layout"])
    assert all(torch.equal(back[k], originals[meta["id"] + str(meta["epoch"])][k]) for k in back)
    for dataset in (
        open_zoo(manifest, view=view, normalize=normalizer, where={"status": "ok"}),
        ZooH5Dataset(h5, view=view, normalize=normalizer, where={"status": "ok"}),
    ):
        for out, meta in dataset:
            weights = normalizer.inverse(view.inverse(out["tokens"], meta["layout"], torch.float64), meta)
            bad = [k for k in weights if not torch.equal(weights[k], originals[meta["id"] + str(meta["epoch"])][k])]
            assert not bad, (type(dataset), meta["id"], meta["epoch"], bad)


def test_noise_erase_and_permute_chain():
    torch.manual_seed(0)
    weights = build(TINY_MODELS["mlp"]).state_dict()
    noisy = Noise(0.1, seed=0)(weights)
    assert all(0 < (noisy[k] - weights[k]).std() < 0.2 for k in weights)
    assert all(torch.equal(a, b) for a, b in zip(Noise(0.1, seed=0)(weights).values(), noisy.values()))
    erased = Erase(0.5, seed=1)(weights)
    rows = erased["layers.0.weight"].abs().sum(1) == 0
    assert 0 < rows.sum() < len(rows)
    assert torch.equal(erased["layers.0.bias"] == 0, rows)  # a unit's weights and bias go together
    assert all(torch.equal(erased[k][~rows], weights[k][~rows]) for k in ("layers.0.weight", "layers.0.bias"))
    chained = Chain(Permute(seed=0), Noise(0.0), Erase(0.0))(weights, {"arch": "mlp"})
    x = torch.randn(4, 5)
    model, twin = build(TINY_MODELS["mlp"]), build(TINY_MODELS["mlp"])
    model.load_state_dict(weights)
    twin.load_state_dict(chained)
    assert torch.allclose(model(x), twin(x), atol=1e-5)


def test_epoch_pairs_follow_each_model_through_training(toy):
    _, h5 = toy
    pairs = ZooH5Dataset(h5, view="state_dict", pairs=True, split="test", targets=["metrics.test_acc"])
    assert len(pairs) == len(ZooH5Dataset(h5, split="test")) // len(EPOCHS) * (len(EPOCHS) - 1)
    for (_w0, t0, m0), (_w1, t1, m1) in pairs:
        assert m0["id"] == m1["id"] and EPOCHS.index(m1["epoch"]) == EPOCHS.index(m0["epoch"]) + 1
        assert t1["metrics.test_acc"] > t0["metrics.test_acc"]
    chosen = ZooH5Dataset(h5, pairs=True, epochs=[0, 10])
    assert {(a[-1]["epoch"], b[-1]["epoch"]) for a, b in chosen} == {(0, 10)} and len(chosen) == 16
