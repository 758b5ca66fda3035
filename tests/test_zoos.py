"""The reference study's 12 zoos: dataset readers on tiny files in the real formats, augmentation,
architectures, one smoke-trained cell per zoo, and the zoo-plan dry run."""

import math

import numpy as np
import pytest
import torch
import zoo_files
from helpers import run_cli
from safetensors.torch import load_file
from torch import nn

from zoo.cli.plan import main as plan_main
from zoo.data import Batches, load
from zoo.data.convection import load_convection
from zoo.data.images import ImageTransform, crop, rotate
from zoo.data.missing import DatasetNotFound
from zoo.data.prepare_openwebtext import EOT, write_token_files
from zoo.models import build
from zoo.plan import format_plan, memory_line, plan_zoo
from zoo.sweep import cell_configs
from zoo.train.pinn_loss import pinn_terms
from zoo.train.run import train_model
from zoo.train.rundir import run_dir

# zoo: (models, the smallest cell: smallest width, largest batch / a cheap corner)
ZOOS = {
    **{
        f"{data}_resnet{depth}": (192, ["model.width=2", "data.batch_size=1024"])
        for data in ("svhn", "cifar10", "cifar100", "tinyimagenet")
        for depth in (18, 50)
    },
    "cifar10_vit": (147, ["model.width=12", "data.batch_size=1024"]),
    "cifar100_vit": (147, ["model.width=12", "data.batch_size=1024"]),
    "owt_gpt2": (264, ["model.width=32", "data.batch_size=1024"]),
    "convection_pinn": (700, ["data.beta=50", "optim.lr=1e-3"]),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return zoo_files.write_all(tmp_path_factory.mktemp("datasets"))


def data_cfg(name: str, **extra) -> dict:
    from zoo.sweep import compose_config

    cfg = compose_config([f"data={name}"]).data
    return {**cfg, **extra}


# -- readers --------------------------------------------------------------------------------------
def test_cifar10_binary_reads_every_batch_file(tmp_path):
    written = zoo_files.write_cifar10(tmp_path)
    data = load(data_cfg("cifar10"), tmp_path)
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape == (15, 3, 32, 32)
    for split in ("train", "test"):
        x, y = data.split(split)
        assert np.array_equal(x.numpy(), written[f"x_{split}"])
        assert np.array_equal(y.numpy(), written[f"y_{split}"])
    smoke = load(data_cfg("cifar10", n_train=4), tmp_path)
    assert np.array_equal(smoke.x_train.numpy(), written["x_train"][:4])


def test_cifar100_uses_the_fine_label(tmp_path):
    written = zoo_files.write_cifar100(tmp_path)
    data = load(data_cfg("cifar100"), tmp_path)
    assert np.array_equal(data.y_train.numpy(), written["y_train"])
    assert np.array_equal(data.x_test.numpy(), written["x_test"])


def test_svhn_mat_layout_and_label_10_is_digit_0(tmp_path):
    written = zoo_files.write_svhn(tmp_path)
    data = load(data_cfg("svhn"), tmp_path)
    assert np.array_equal(data.x_train.numpy(), written["x_train"])
    assert np.array_equal(data.y_train.numpy(), written["y_train"]) and data.y_train[0] == 0


def test_tinyimagenet_folder_labels_in_wnids_order_and_is_cached(tmp_path):
    written = zoo_files.write_tinyimagenet(tmp_path)
    data = load(data_cfg("tinyimagenet"), tmp_path)
    assert data.x_train.shape == (7, 3, 64, 64) and data.x_test.shape == (2, 3, 64, 64)
    assert data.y_train.tolist() == [0, 0, 0, 1, 1, 2, 2]  # n03 (+ its grayscale image), n01, n02: wnids.txt order
    val = written["val"]
    assert data.y_test.tolist() == [["n03", "n01", "n02"].index(w) for _, w in val]
    colour = torch.tensor(written["colours"][val[0][1]], dtype=torch.float)
    assert (data.x_test[0].float().mean((1, 2)) - colour).abs().max() < 2
    assert (tmp_path / "tinyimagenet_train_wnids.npz").exists()
    (tmp_path / "tiny-imagenet-200" / "wnids.txt").unlink()  # the cache alone now serves full loads
    assert torch.equal(load(data_cfg("tinyimagenet"), tmp_path).x_train, data.x_train)


def test_missing_dataset_names_path_and_format(tmp_path):
    with pytest.raises(DatasetNotFound, match="cifar-10-batches-bin/data_batch_1.bin.*Nothing is downloaded"):
        load(data_cfg("cifar10"), tmp_path)
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DatasetNotFound, match="pickled python version"):
        load(data_cfg("cifar10"), tmp_path)
    with pytest.raises(DatasetNotFound, match="openwebtext/train.bin, uint16"):
        load(data_cfg("openwebtext"), tmp_path)


def test_token_windows_are_shifted_seeded_and_fixed_for_eval(tmp_path):
    docs = ["ab", "cde", "f"] * 3
    counts = write_token_files(docs, tmp_path / "openwebtext", encode=lambda text: [ord(c) for c in text])
    train = np.fromfile(tmp_path / "openwebtext" / "train.bin", dtype=np.uint16)
    assert counts == {"train": len(train), "val": 3} and train[:4].tolist() == [ord("c"), ord("d"), ord("e"), EOT]
    zoo_files.write_openwebtext(tmp_path / "owt")
    data = load(data_cfg("openwebtext", context=16, tokens_per_epoch=64, eval_tokens=48), tmp_path / "owt")
    epoch = [0]
    batches = data.batches("train", 3, shuffle=True, seed=7, epoch=lambda: epoch[0])
    first = list(batches)
    assert len(batches) == 2 and [x.shape for x, _ in first] == [(3, 16), (1, 16)]
    for x, y in first:
        assert torch.equal(x[:, 1:], y[:, :-1])
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, batches))  # same epoch, same windows
    epoch[0] = 1
    assert not torch.equal(next(iter(batches))[0], first[0][0])
    evals = [torch.cat([x for x, _ in data.batches("test", 2)]) for _ in range(2)]
    assert evals[0].shape == (3, 16) and torch.equal(*evals)


def test_pinn_loss_vanishes_on_the_exact_solution():
    cfg = data_cfg("convection", beta=30, n_collocation=200, grid_x=64, grid_t=20)
    data = load_convection(cfg)
    assert data.collocation.shape == (200, 2) and data.grid.shape == (64 * 20, 2)
    assert (data.collocation[:, 0] > 0).all() and (data.collocation[:, 1] > 0).all()  # interior only

    class Exact(nn.Module):
        def forward(self, xt):
            return torch.sin(xt[:, :1] - 30 * xt[:, 1:])

    terms = pinn_terms(Exact(), data.beta, *data.train_batch())
    assert all(value < 1e-9 for value in terms.values()), terms

    class Wrong(nn.Module):  # transported the other way: initial condition right, PDE wrong
        def forward(self, xt):
            return torch.sin(xt[:, :1] + 30 * xt[:, 1:])

    assert pinn_terms(Wrong(), data.beta, *data.train_batch())["residual"] > 1


# -- augmentation ---------------------------------------------------------------------------------
def test_crop_is_a_zero_padded_shift():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float).view(2, 3, 8, 8) + 1
    out = crop(x, 2, torch.tensor([[0, 4], [2, 1]]))
    padded = nn.functional.pad(x, [2] * 4)
    assert torch.equal(out[0], padded[0, :, 0:8, 4:12]) and torch.equal(out[1], padded[1, :, 2:10, 1:9])
    assert torch.equal(crop(x, 2, torch.tensor([[2, 2], [2, 2]])), x)


def test_rotation_turns_about_the_center_and_fills_zeros():
    n, size = 16, 32
    x = (torch.arange(size * size, dtype=torch.float) + 1).view(1, 1, size, size).expand(n, 1, size, size)
    out = rotate(x, torch.linspace(-0.35, 0.35, n))  # pixel value = 1 + its source index
    center = torch.arange(size) + 0.5 - size / 2
    radius = torch.hypot(center[:, None], center[None, :]).flatten()
    kept = out.flatten(1) > 0
    source = (out.flatten(1) - 1).long().clamp(min=0)
    assert ((radius[source] - radius).abs()[kept] <= 0.75).all(), "every pixel keeps its distance to the center"
    assert (~kept[[0, -1]]).any(1).all(), "corners rotated in are zero"
    assert torch.equal(rotate(x, torch.zeros(n)), x)
    quarter = rotate(x[:1], torch.tensor([torch.pi / 2]))
    assert torch.equal(quarter, x[:1].rot90(1, (2, 3))) or torch.equal(quarter, x[:1].rot90(-1, (2, 3)))


def test_training_batches_are_augmented_per_sample_and_epoch_eval_batches_only_normalized():
    x = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(10)
    transform = ImageTransform([100.0] * 3, [50.0] * 3, crop_padding=4, flip=True, rotation=20)
    epoch = [0]

    def batches(size):
        return Batches(x, y, size, shuffle=True, seed=1, epoch=lambda: epoch[0], transform=transform)

    (a, ya), (b, yb) = next(iter(batches(10))), next(iter(batches(10)))
    assert torch.equal(a, b) and torch.equal(ya, yb), "an epoch's batches depend on (seed, epoch) only"
    assert not torch.equal(a, (x[ya].float() - 100) / 50), "training batches are augmented"
    halves = list(batches(4))
    assert torch.equal(torch.cat([h for h, _ in halves]), a), "augmentation does not depend on the batch size"
    epoch[0] = 1
    assert not torch.equal(next(iter(batches(10)))[0], a)
    ((e, ye),) = Batches(x, y, 10, transform=transform)
    assert torch.equal(e, (x.float() - 100) / 50) and torch.equal(ye, y)


# -- architectures --------------------------------------------------------------------------------
def test_gpt_is_causal_and_ties_its_output_to_the_embedding():
    torch.manual_seed(0)
    gpt = build({"name": "gpt", "vocab_size": 100, "context": 16, "depth": 2, "width": 128, "head_dim": 64})
    assert "lm_head.weight" not in gpt.state_dict() and gpt.blocks[0].attn.heads == 2
    idx = torch.randint(0, 100, (2, 16))
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 100
    a, b = gpt(idx), gpt(changed)
    assert a.shape == (2, 16, 100)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6) and not torch.allclose(a[:, 10:], b[:, 10:])


def test_vit_and_resnet_widths_scale_parameters():
    def params(cfg):
        return sum(p.numel() for p in build(cfg).parameters())

    vit = {"name": "vit", "image_size": 32, "patch_size": 4, "num_classes": 10, "depth": 7, "head_dim": 32}
    assert build({**vit, "width": 384}).blocks[0].attn.heads == 12
    assert params({**vit, "width": 384}) == pytest.approx(6.3e6, rel=0.03)  # ViT-CIFAR's 6.3M
    resnet = {"name": "resnet", "depth": 18, "num_classes": 10}
    assert params({**resnet, "width": 64}) == pytest.approx(11.2e6, rel=0.01)  # the standard ResNet-18
    assert params({**resnet, "width": 128}) == pytest.approx(4 * params({**resnet, "width": 64}), rel=0.01)
    x = torch.zeros(2, 3, 32, 32)
    assert build({**vit, "width": 12})(x).shape == (2, 10)
    assert build({**resnet, "depth": 50, "width": 2})(x).shape == (2, 10)


# -- every zoo: one cell trains ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ZOOS)
def test_zoo_smoke_cell_trains(name, files, tmp_path):
    overrides = [f"zoo={name}", "+smoke=on", f"paths.root={tmp_path}", f"paths.data={files}", "seed=0", *ZOOS[name][1]]
    (cfg,) = cell_configs(overrides)
    result = train_model(cfg)
    run = run_dir(cfg)
    assert result.state == "ok", (run.path / "error.log").read_text() if (run.path / "error.log").exists() else ""
    rows = run.metrics()
    assert [r["epoch"] for r in rows] == [0, 1] and sorted(run.checkpoints()) == [0, 1]
    task_keys = {"test_rel_l2"} if name == "convection_pinn" else {"train_acc", "test_acc"}
    keys = {"train_loss", "test_loss", *task_keys}
    assert keys <= set(rows[-1]) and all(math.isfinite(rows[-1][k]) for k in keys)
    weights = load_file(run.checkpoints()[1])
    assert set(weights) == set(build(cfg.model).state_dict())


def test_micro_batches_accumulate_to_the_same_training(files, tmp_path):
    """Gradient accumulation (runtime.micro_batch_size) keeps batches and steps: the same weights
    for a model without BatchNorm, up to float rounding; the model id does not change."""
    finals = {}
    for micro in ("null", "2"):
        overrides = [
            "zoo=cifar10_vit",
            "+smoke=on",
            f"paths.root={tmp_path / micro}",
            f"paths.data={files}",
            "model.width=12",
            "data.n_train=12",
            "data.batch_size=4",
            "seed=0",
            f"runtime.micro_batch_size={micro}",
        ]
        (cfg,) = cell_configs(overrides)
        assert train_model(cfg).state == "ok"
        finals[micro] = (cfg.id, load_file(run_dir(cfg).checkpoints()[1]), run_dir(cfg).metrics()[-1])
    (id_a, weights_a, last_a), (id_b, weights_b, last_b) = finals.values()
    assert id_a == id_b
    assert all(torch.allclose(weights_a[k], weights_b[k], atol=1e-5) for k in weights_a)
    assert last_a["train_loss"] == pytest.approx(last_b["train_loss"], rel=1e-5)
    assert not all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a), "micro-batching was not used"


# -- zoo-plan -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plans():
    return {name: plan_zoo([f"zoo={name}", "cluster=example_gpu"]) for name in ZOOS}


@pytest.mark.slow  # plans all 2,794 reference models (~25 s on 2 cores under load from other agents)
def test_plan_counts_every_zoo(plans):
    for name, (models, _) in ZOOS.items():
        assert len(plans[name].cells) == models, name
        assert f"models: {models}" in format_plan(plans[name]).splitlines()
    assert sum(len(plan.cells) for plan in plans.values()) == 2794


@pytest.mark.slow
def test_plan_measures_parameters_flops_and_memory(plans):
    cells = {c.cfg.model.width: c for c in plans["cifar10_resnet18"].cells if c.cfg.data.batch_size == 128}
    assert cells[64].params == sum(p.numel() for p in build(cells[64].cfg.model).parameters())
    # a forward of ResNet-18 (width 64) on a 32x32 image is ~0.56 GMACs; a training step ~3 forwards;
    # a run trains 150 epochs of 50,000 images and evaluates 10,000 per epoch (+ the train set at init)
    forward = 2 * 0.56e9
    assert cells[64].flops == pytest.approx(forward * (3 * 50000 * 150 + 10000 * 151 + 50000), rel=0.05)
    assert cells[128].flops == pytest.approx(4 * cells[64].flops, rel=0.02)  # conv FLOPs grow as width^2
    line = memory_line(plans["cifar10_resnet50"])
    assert "(resnet50-w256-b1024-s" in line and "need runtime.micro_batch_size=" in line
    micro = int(line.split("micro_batch_size=")[1].split()[0])
    assert all(c.memory(micro) <= 40 * 2**30 for c in plans["cifar10_resnet50"].cells)
    assert not any(
        c.memory(2 * micro) <= 40 * 2**30
        for c in plans["cifar10_resnet50"].cells
        if c.cfg.model.width == 256 and c.cfg.data.batch_size == 1024
    )


def test_plan_cli_prints_models_and_split_sbatch_arrays():
    proc = run_cli(plan_main, "zoo=demo", "runtime.population=off", "cluster.max_array_size=30")
    lines = proc.stdout.splitlines()
    assert "models: 80" in lines
    assert "array tasks: 80 in 3 array(s) (MaxArraySize 30): 80 of models one after the other" in lines
    arrays = [line.split("=")[1] for line in lines if line.strip().startswith("#SBATCH --array=")]
    assert arrays == ["0-29%2", "0-29%2", "0-19%2"]
    assert "  #SBATCH --partition=debug" in lines and "--gres" not in proc.stdout
    launch = "zoo-train -m zoo=demo runtime.population=off cluster.max_array_size=30 runtime.accelerator=cpu"
    assert launch in proc.stdout


def test_plan_cli_names_a_bad_zoo():
    proc = run_cli(plan_main, "zoo=cifar11_resnet18", check=False)
    assert proc.returncode != 0 and "cifar11_resnet18" in proc.stderr and "Traceback" not in proc.stderr
