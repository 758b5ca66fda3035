"""Mode connectivity: the linear path and a trained Bezier curve between two models.

The curve follows Garipov et al. 2018 (timgaripov/dnn-mode-connectivity); the metric `mc`
follows Yang et al. 2021 ("Taxonomizing local versus global structure in neural network
loss landscapes"): mc = (L(θ0) + L(θ1)) / 2 - L(θ(t*)), with t* the point where
|L(t) - (L(θ0) + L(θ1)) / 2| is largest. mc < 0 means a barrier.
"""

import copy
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

Batches = Sequence[tuple[Tensor, ...]]
Task = Any  # a zoo.train.tasks task: loss(net, batch), measure(net, batches), inputs(batch), batchnorm


class BezierCurve(nn.Module):
    """θ(t) = Σ_i C(n-1, i) t^i (1-t)^(n-1-i) θ_i over n = `n_bends` control points.

    As in the reference, n_bends counts the endpoints: θ_0 and θ_{n-1} are the two models
    (fixed), the n-2 bends between them are trainable and start evenly spaced on the
    segment. n_bends=2 is the linear path; the default 3 is a quadratic curve.
    """

    def __init__(self, model_a: nn.Module, model_b: nn.Module, n_bends: int = 3):
        super().__init__()
        self.model = copy.deepcopy(model_a)  # the architecture, and BatchNorm buffers of its own
        self.model.requires_grad_(False)
        self.names = [name for name, _ in model_a.named_parameters()]
        a = [p.detach().clone() for p in model_a.parameters()]
        b = [p.detach().clone() for p in model_b.parameters()]
        s = torch.linspace(0, 1, n_bends)[1:-1]
        self.ends = [torch.stack([pa, pb]) for pa, pb in zip(a, b)]
        self.bends = nn.ParameterList(  # (n_bends - 2, *shape) per parameter
            [pa + (pb - pa) * s.to(pa).reshape(-1, *[1] * pa.dim()) for pa, pb in zip(a, b)]
        )
        self.n_bends = n_bends

    def params(self, t: float) -> dict[str, Tensor]:
        """The model parameters at curve position t in [0, 1]."""
        n = self.n_bends - 1
        w = torch.tensor([math.comb(n, i) * t**i * (1 - t) ** (n - i) for i in range(n + 1)])
        return {
            name: torch.tensordot(w.to(e), torch.cat([e[:1], bend, e[1:]]), 1)
            for name, e, bend in zip(self.names, self.ends, self.bends)
        }

    def forward(self, x: Tensor, t: float) -> Tensor:
        return functional_call(self.model, self.params(t), (x,))


def bezier_curve(
    model_a: nn.Module,
    model_b: nn.Module,
    train_batches: Batches,
    task: Task,
    *,
    n_bends: int = 3,
    steps: int = 1000,
    lr: float = 1e-2,
    optimizer: str = "adam",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    l2: float = 0.0,
    compound_lr: bool = False,
    seed: int = 0,
) -> BezierCurve:
    """Train the bends to minimize E_{t~U(0,1)} L(θ(t)) + l2/2·‖θ(t)‖² (L: the task's loss): one random t
    per step, cycling batches.

    `optimizer` is "adam" or "sgd" (with `momentum`). `schedule`: "cosine" decays the learning
    rate to 0 over the steps; "garipov" is Garipov et al.'s per-epoch schedule (epoch = one pass
    over `train_batches`): lr until half-way, linear down to 1% at 90%, then 1% — the reference
    study's; `compound_lr` reproduces its bug of applying that factor to the previous epoch's lr
    (ptmz/loss_landscape/curve_fitting.py), off by default. `l2` is the reference's regularizer
    on θ(t) (its `curves.l2_regularizer`), unlike `weight_decay`, which acts on the bends.
    Adam at 1e-2 for ~1,000 steps with a cosine is our default because SGD for a few hundred
    steps left large false barriers between well-trained models.
    """
    curve = BezierCurve(model_a, model_b, n_bends)
    if optimizer == "adam":
        opt = torch.optim.Adam(curve.bends, lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(curve.bends, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer={optimizer!r}; choose 'adam' or 'sgd'")
    if schedule == "cosine":
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    elif schedule == "garipov":
        per_epoch = garipov_rates(lr, math.ceil(steps / len(train_batches)), compound_lr)
    elif schedule != "constant":
        raise ValueError(f"unknown schedule={schedule!r}; choose 'cosine', 'garipov' or 'constant'")
    gen = torch.Generator().manual_seed(seed)
    curve.model.train()  # BatchNorm uses batch statistics while training, as in the reference
    for step, batch in zip(range(steps), _passes(train_batches)):
        if schedule == "garipov":
            opt.param_groups[0]["lr"] = per_epoch[step // len(train_batches)]
        t = torch.rand((), generator=gen).item()
        loss = task.loss(lambda x, t=t: curve(x, t), batch)
        if l2:
            loss = loss + 0.5 * l2 * sum(p.pow(2).sum() for p in curve.params(t).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if schedule == "cosine":
            cosine.step()
    return curve


def garipov_rates(lr: float, epochs: int, compound: bool = False) -> list[float]:
    """The learning rate of each epoch under Garipov et al.'s schedule (factor of `lr`: 1 up to
    half-way, linear down to 0.01 at 90%, then 0.01); `compound` multiplies the previous epoch's."""
    rates, current = [], lr
    for epoch in range(1, epochs + 1):
        alpha = epoch / epochs
        factor = 1.0 if alpha <= 0.5 else 1.0 - (alpha - 0.5) / 0.4 * 0.99 if alpha <= 0.9 else 0.01
        current = factor * (current if compound else lr)
        rates.append(current)
    return rates


def _passes(batches: Batches) -> Iterator[tuple[Tensor, ...]]:
    """Pass after pass over `batches` (an augmenting loader draws new augmentations each pass)."""
    while True:
        yield from batches


def evaluate_curve(
    curve: BezierCurve, task: Task, train_batches: Batches, test_batches: Batches | None = None, n_points: int = 21
) -> dict[str, list[float]]:
    """Loss and error at n_points evenly spaced t (endpoints included) on train (and test) batches.

    BatchNorm statistics (if the task has any) are recomputed from the train batches at every t.
    """
    splits = {"train": train_batches}
    if test_batches:
        splits["test"] = test_batches
    out: dict[str, list[float]] = {"t": torch.linspace(0, 1, n_points).tolist()}
    for t in out["t"]:
        params = {n: p.detach() for n, p in curve.params(t).items()}
        for key, value in evaluate_params(curve.model, params, task, train_batches, splits).items():
            out.setdefault(key, []).append(value)
    return out


def evaluate_params(
    model: nn.Module, params: dict[str, Tensor], task: Task, train_batches: Batches, splits: dict[str, Batches]
) -> dict[str, float]:
    """`loss_<split>` and `err_<split>` (`task.measure`) of `model` at `params` (its parameters by
    name), BatchNorm statistics first recomputed from `train_batches` (a merged model's own would be
    wrong) where the task has BatchNorm."""
    if task.batchnorm:
        _recompute_batchnorm(model, params, [task.inputs(b) for b in train_batches])
    model.eval()
    out = {}
    for split, batches in splits.items():
        measured = task.measure(lambda x: functional_call(model, params, (x,)), batches)
        out[f"loss_{split}"], out[f"err_{split}"] = measured["loss"], measured["err"]
    return out


@torch.no_grad()
def _recompute_batchnorm(model: nn.Module, params: dict[str, Tensor], inputs: Sequence[Tensor]) -> None:
    """Running stats = sample-weighted average of the batch stats at these params."""
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if bns:
        model.train()
        seen = 0
        for x in inputs:
            for bn in bns:
                bn.momentum = len(x) / (seen + len(x))  # 1 on the first batch: old stats are dropped
            functional_call(model, params, (x,))
            seen += len(x)


def linear_path(
    model_a: nn.Module,
    model_b: nn.Module,
    train_batches: Batches,
    task: Task,
    test_batches: Batches | None = None,
    n_points: int = 21,
) -> dict[str, list[float]]:
    """`evaluate_curve` along the straight segment between the two models."""
    return evaluate_curve(BezierCurve(model_a, model_b, n_bends=2), task, train_batches, test_batches, n_points)


def mode_connectivity(values: Sequence[float]) -> float:
    """mc of a curve of losses (or errors) whose first and last values are the endpoints."""
    mid = (values[0] + values[-1]) / 2
    peak = max(values, key=lambda v: abs(v - mid))
    return mid - peak


def connectivity_metrics(
    model_a: nn.Module,
    model_b: nn.Module,
    train_batches: Batches,
    test_batches: Batches,
    task: Task,
    *,
    n_points: int = 21,
    **bezier_kwargs,
) -> dict:
    """mc of loss and error, train and test, on the trained Bezier curve (`mc_*`) and the linear
    path (`linear_mc_*`), plus both raw curves (`curve`, `linear`: dicts of lists) for plotting."""
    curve = bezier_curve(model_a, model_b, train_batches, task, **bezier_kwargs)
    curves = {
        "curve": evaluate_curve(curve, task, train_batches, test_batches, n_points),
        "linear": linear_path(model_a, model_b, train_batches, task, test_batches, n_points),
    }
    metrics = {
        f"{prefix}mc_{key}": mode_connectivity(values)
        for prefix, name in (("", "curve"), ("linear_", "linear"))
        for key, values in curves[name].items()
        if key != "t"
    }
    return {**metrics, **curves}
