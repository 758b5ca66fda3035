"""Fidelity to the reference study (ModelZoos/PhaseTransitionModelZoo): its ResNets and MLP parameter
for parameter, its published checkpoints imported and loaded strictly into `zoo.models`."""

import hashlib
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save
from torch import nn

from zoo.load import open_zoo
from zoo.models import build, from_meta
from zoo.pack import import_reference
from zoo.sweep import cell_configs, compose_config
from zoo.train.tasks import Classify


# -- a small transcription of the reference architectures (ptmz/models/def_net_width.py, torchvision
#    BasicBlock/Bottleneck), with its key names: the test's ground truth ----------------------------
class RefBlock(nn.Module):
    def __init__(self, c_in, c, stride, bottleneck):
        super().__init__()
        self.expansion = 4 if bottleneck else 1
        c_out = c * self.expansion
        if bottleneck:  # 1x1, 3x3 (strided), 1x1 x4
            convs = [(c_in, c, 1, 1, 0), (c, c, 3, stride, 1), (c, c_out, 1, 1, 0)]
        else:
            convs = [(c_in, c, 3, stride, 1), (c, c, 3, 1, 1)]
        for i, (a, b, k, s, p) in enumerate(convs, 1):
            setattr(self, f"conv{i}", nn.Conv2d(a, b, k, s, p, bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(b))
        self.n = len(convs)
        self.downsample = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else None
        )

    def forward(self, x):
        out = x
        for i in range(1, self.n + 1):
            out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out))
            out = F.relu(out) if i < self.n else out
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class RefResNet(nn.Module):
    def __init__(self, depth, width, o_dim, channels_in=3):
        super().__init__()
        bottleneck, counts = {18: (False, [2, 2, 2, 2]), 50: (True, [3, 4, 6, 3])}[depth]
        self.conv1 = nn.Conv2d(channels_in, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        c_in = width
        for k, n in enumerate(counts):
            blocks = []
            for b in range(n):
                blocks.append(RefBlock(c_in, width * 2**k, 2 if k and not b else 1, bottleneck))
                c_in = width * 2**k * blocks[-1].expansion
            setattr(self, f"layer{k + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(c_in, o_dim)  # always with a bias

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class RefMLP(nn.Module):
    def __init__(self, i_dim, h_dim, o_dim, dropout):
        super().__init__()
        dims, self.module_list = [i_dim, *h_dim], nn.ModuleList()
        for a, b in zip(dims[:-1], dims[1:]):
            self.module_list += [nn.Linear(a, b), nn.LeakyReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
        self.module_list.append(nn.Linear(dims[-1], o_dim))
        for m in self.module_list:
            if isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0.01)

    def forward(self, x):
        for m in self.module_list:
            x = m(x)
        return x


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- architecture ---------------------------------------------------------------------------------
def test_resnet_parameter_counts_match_the_reference_at_every_grid_width():
    recipe = compose_config(["zoo=cifar10_resnet18"], hydra=True).hydra.sweeper.params
    widths = [int(w) for w in str(recipe["model.width"]).split(",")]
    assert widths == [2, 4, 8, 16, 32, 64, 128, 256]
    counts = {}
    with torch.device("meta"):  # shapes only: the widest ResNet-50 has 375M parameters
        for depth in (18, 50):
            for classes in (10, 100, 200):
                for width in widths:
                    cfg = {"name": "resnet", "depth": depth, "width": width, "num_classes": classes, "bias": False}
                    ours = build(cfg)
                    counts[depth, classes, width] = n_params(ours)
                    assert counts[depth, classes, width] == n_params(RefResNet(depth, width, classes))
                    assert ours.fc.bias is not None
    # the figures of the audit (issue 13), CIFAR-10
    assert counts[18, 10, 2] == 11_420 and counts[18, 10, 256] == 178_585_866
    assert counts[50, 10, 2] == 25_260 and counts[50, 10, 256] == 375_429_386


def test_named_init_starts_biases_at_0_01_like_the_reference():
    resnet = build({"name": "resnet", "depth": 18, "width": 2, "num_classes": 10, "init": "kaiming_uniform"})
    assert torch.all(resnet.fc.bias == 0.01)
    mlp = build({"name": "mlp", "in_dim": 4, "out_dim": 3, "width": 5, "bias": True, "init": "kaiming_uniform"})
    assert all(torch.all(m.bias == 0.01) for m in mlp.modules() if isinstance(m, nn.Linear))


def test_demo_model_ids_and_weights_are_unchanged():
    """The demo MLP has no bias: the reference-fidelity changes must not move its ids or shard bytes."""
    cfgs = cell_configs(["zoo=demo"])
    assert len(cfgs) == 80 and cfgs[0].id == "mlp-w2-b8-s0-d418e773" and cfgs[-1].id == "mlp-w256-b1000-s1-6550b574"
    assert hashlib.sha256("".join(c.id for c in cfgs).encode()).hexdigest().startswith("bbbec61c2691f908")
    torch.manual_seed(0)
    weights = save(build(dict(cfgs[0].model)).state_dict())
    assert hashlib.sha256(weights).hexdigest().startswith("72079c279c671eb5")


# -- import of the published layout ---------------------------------------------------------------
REFERENCE_MODELS = {  # folder: (params.json, the reference model, an input batch)
    "r18": (
        {
            "model::type": "Resnet18_width",
            "model::width": 2,
            "model::o_dim": 10,
            "model::channels_in": 3,
            "model::nlin": "relu",
            "model::dropout": 0.0,
            "model::init_type": "kaiming_uniform",
            "model::use_bias": False,
            "seed": 0,
        },
        lambda: RefResNet(18, 2, 10),
        (3, 3, 32, 32),
    ),
    "r50": (
        {
            "model::type": "Resnet50_width",
            "model::width": 2,
            "model::o_dim": 100,
            "model::channels_in": 3,
            "model::nlin": "relu",
            "model::dropout": 0.0,
            "model::init_type": "kaiming_uniform",
            "model::use_bias": False,
            "seed": 1,
        },
        lambda: RefResNet(50, 2, 100),
        (3, 3, 32, 32),
    ),
    "mlp": (
        {
            "model::type": "MLP",
            "model::i_dim": 40,
            "model::h_dim": [8, 8],
            "model::o_dim": 10,
            "model::nlin": "leakyrelu",
            "model::dropout": 0.2,
            "model::init_type": "kaiming_uniform",
            "model::use_bias": True,
            "seed": 2,
        },
        lambda: RefMLP(40, [8, 8], 10, 0.2),
        (3, 40),
    ),
}


def write_trial(folder, params, model, epochs=(1, 2)):
    """A Ray Tune trial folder as the published zoos ship it."""
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(params))
    rows = [{"training_iteration": e, "train_loss": 1.0 / e, "test_acc": 0.5, "config": params} for e in epochs]
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for epoch in epochs:
        with torch.no_grad():  # a trained-looking model: nonzero biases and BN statistics
            for name, t in model.state_dict().items():
                if t.is_floating_point():
                    t.add_(0.1 * torch.randn_like(t)).abs_() if "running_var" in name else t.add_(
                        0.1 * torch.randn_like(t)
                    )
        (folder / f"checkpoint_{epoch:06d}").mkdir()
        torch.save(model.state_dict(), folder / f"checkpoint_{epoch:06d}" / "checkpoints")


def test_a_reference_zoo_imports_and_loads_strictly_with_identical_outputs(tmp_path):
    torch.manual_seed(0)
    src, references, inputs = tmp_path / "published", {}, {}
    for name, (params, make, shape) in REFERENCE_MODELS.items():
        references[params["model::type"]] = make().eval()
        inputs[params["model::type"]] = torch.randn(shape)
        write_trial(src / f"NN_tune_trainable_{name}", params, references[params["model::type"]])
    import_reference(src, "published", tmp_path / "shards", tmp_path / "published.json")
    loaded = set()
    for weights, meta in open_zoo(tmp_path / "published.json", view="state_dict"):
        kind = meta["config"]["model::type"]
        model = from_meta(meta, weights)  # load_state_dict is strict
        assert meta["arch"] == meta["config"]["model"]["name"]
        if meta["epoch"] == 2:  # the last checkpoint is what the reference model holds now
            with torch.no_grad():
                assert torch.equal(model(inputs[kind]), references[kind](inputs[kind]))
        loaded.add((kind, meta["epoch"]))
    assert loaded == {(p["model::type"], e) for p, _, _ in REFERENCE_MODELS.values() for e in (1, 2)}


def test_a_checkpoint_that_does_not_fit_its_params_names_the_file(tmp_path):
    params, make, _ = REFERENCE_MODELS["r18"]
    write_trial(tmp_path / "published" / "trial", {**params, "model::width": 4}, make())
    with pytest.raises(ValueError, match=r"trial/checkpoint_000001/checkpoints: does not fit zoo.models.resnet"):
        import_reference(tmp_path / "published", "bad", tmp_path / "shards", tmp_path / "bad.json")


# -- the reference's measuring protocol (landscape=reference) -------------------------------------
def test_reference_protocol_is_the_resnet_zoos_default_and_measures_at_their_epoch():
    cfg = compose_config(["zoo=cifar100_resnet18"])
    assert cfg.landscape.hessian.which == "magnitude" and cfg.landscape.cka.estimator == "biased"
    assert [int(e) for e in cfg.landscape.epochs] == [115] and cfg.phases.mc_key == "mc_err_train"
    assert {111, 112, 113, 114, 115, 150} <= set(cfg.checkpoint.epochs)
    demo = compose_config(["zoo=demo"])
    assert demo.landscape.bezier.optimizer == "adam" and demo.phases.mc_key == "mc_loss_train"
    assert list(compose_config(["zoo=demo", "landscape=reference"]).landscape.epochs) == ["final"]


def test_garipov_schedule_and_the_reference_compounding_bug():
    from zoo.landscape.connectivity import garipov_rates

    ours = garipov_rates(0.1, 10)
    assert (
        ours[:5] == [0.1] * 5
        and ours[-1] == pytest.approx(0.001)
        and ours[6] == pytest.approx(0.1 * (1 - 0.2 / 0.4 * 0.99))
    )
    bug = garipov_rates(0.1, 10, compound=True)
    assert bug[:5] == ours[:5] and bug[6] == pytest.approx(bug[5] * ours[6] / 0.1) and bug[-1] < ours[-1] / 100


def test_bezier_l2_term_pulls_the_bend_towards_zero():
    from zoo.landscape.connectivity import bezier_curve

    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    batches = [(torch.randn(16, 4), torch.randint(0, 3, (16,)))]
    kw = dict(steps=50, optimizer="sgd", lr=0.1, schedule="garipov", seed=0)
    plain, decayed = (bezier_curve(a, b, batches, Classify(), l2=l2, **kw) for l2 in (0.0, 5.0))
    assert decayed.params(0.5)["weight"].norm() < 0.5 * plain.params(0.5)["weight"].norm()


def test_biased_batch_mean_cka_is_inflated_where_unbiased_is_not():
    from zoo.landscape.cka import cka_estimates

    class Noise(nn.Module):  # 100-dim "logits" independent of the input and of the other model
        def __init__(self, seed):
            super().__init__()
            self.gen = torch.Generator().manual_seed(seed)

        def forward(self, x):
            return torch.randn(len(x), 100, generator=self.gen)

    batches = [(torch.zeros(128, 1), None) for _ in range(10)]
    est = cka_estimates(Noise(0), Noise(1), batches)
    assert est["cka_biased"] > 0.3 and abs(est["cka_unbiased"]) < 0.05


def test_hessian_largest_magnitude_keeps_the_sign():
    from zoo.landscape.hessian import hessian_metrics

    class Quadratic(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return self.w

    lam = torch.tensor([-5.0, 1.0, 2.0, 3.0])

    class DiagonalHessian:  # the task interface hessian_metrics measures: a loss of Hessian diag(lam)
        def loss(self, net, batch):
            return 0.5 * (lam * net(batch[0]) ** 2).sum()

        def size(self, batch):
            return 1

    batches = [(torch.zeros(1), torch.zeros(1))]
    top = {
        w: hessian_metrics(Quadratic(), DiagonalHessian(), batches, which=w, deflate=4)["top_eigenvalues"][0]
        for w in ("algebraic", "magnitude")
    }
    assert top["algebraic"] == pytest.approx(3.0) and top["magnitude"] == pytest.approx(-5.0)


def test_phase_rule_reads_mc_of_train_error_in_percent():
    from zoo.phases.table import label

    cfg = compose_config(["zoo=demo", "phases=reference"])
    row = {"train_loss": 0.01, "mc_err_train": -0.02, "mc_loss_train": 0.3, "cka": 0.99}
    assert label(row, cfg) == "III"  # -2 percentage points < -1.0
    assert label({**row, "mc_err_train": -0.005}, cfg) == "IV-B"
    assert label(row, compose_config(["zoo=demo"])) == "IV-B"  # ours: mc of loss


# -- the reference's averaging variants -----------------------------------------------------------
def test_averaging_adds_all_seeds_aligned_to_seed_0_and_the_five_epoch_window():
    from zoo.align.merging import average
    from zoo.align.permutation import apply, random_perms, sequential_spec
    from zoo.apply import apps

    torch.manual_seed(0)
    model = build({"name": "mlp", "in_dim": 6, "out_dim": 3, "width": 16, "bias": True, "init": "kaiming_uniform"})
    x = torch.randn(300, 6)
    y = model(x).argmax(1)  # a task the first model solves
    batches = [(x[i : i + 100], y[i : i + 100]) for i in range(0, 300, 100)]
    spec = sequential_spec(model.state_dict())
    b = apps.Bench(model, spec, train=batches, val=batches, test=batches)
    seed0 = {e: {k: v + 0.01 * e * torch.randn_like(v) for k, v in model.state_dict().items()} for e in range(1, 7)}
    permuted = [
        {e: apply(spec, random_perms(spec, w, torch.Generator().manual_seed(s)), w) for e, w in seed0.items()}
        for s in (1, 2)
    ]  # seeds 1 and 2: the same functions, hidden units reordered
    out = apps.averaging(b, [seed0, *permuted], last_k=3, reference_epoch=5)
    assert abs(out["seed_avg_all_gain_aligned"]) < 1e-9 and out["seed_avg_all_gain"] < -0.05
    assert out["ref_epochs_averaged"] == [1, 2, 3, 4, 5] and out["epochs_averaged"] == [4, 5, 6]
    expected = b.acc(average([seed0[e] for e in range(1, 6)])) - b.acc(seed0[5])
    assert out["ref_epoch_avg_gain"] == pytest.approx(expected)  # all three seeds compute the same


def test_opt_in_reference_onecycle_bug_leaves_large_resnet50_cells_at_a_high_lr():
    from zoo.train.optim import build_optimizer

    def final_lr(*overrides):
        cfg = compose_config(["zoo=cifar10_resnet50", *overrides])
        opt, sched = build_optimizer([nn.Parameter(torch.zeros(1))], cfg.optim, 200)
        for _ in range(200):
            opt.step()
            sched.step()
        return cfg.optim.scheduler.get("stretch", 1), opt.param_groups[0]["lr"]

    bug = ["optim=sgd_reference_onecycle"]
    assert final_lr("model.width=256", "data.batch_size=1024")[1] < 1e-4  # ours: annealed
    stretch, lr = final_lr(*bug, "model.width=256", "data.batch_size=1024")
    assert stretch == 8 and 0.03 < lr < 0.1
    assert final_lr(*bug, "model.width=128", "data.batch_size=256") == final_lr(
        "model.width=128", "data.batch_size=256"
    )
