"""Population training for PINNs: K convection PINNs of one architecture trained at once, as stacked
tensors, in one Lightning fit (zoo.train.population.runner runs it: same run dirs, resume state,
divergence handling; this module is the math).

Every member is the model `train_model` would train alone with `zoo.train.pinn.PINN`: the same init
(`torch.manual_seed(seed)` then `build`), the same points, loss terms, full-batch steps, Adam/AdamW
update, schedule, evaluation, metrics lines and checkpoints. Members may differ in seed, `data.beta`
and every `optim` value but `name` and `no_decay_1d` (see `zoo.train.grouping.population_key`); the
points (`data` sizes) and the architecture are shared.

Layers are stacked as [K, out, in], biases as [K, 1, out], and a layer is `baddbmm` (nn.Linear on a
matrix is `addmm`): member k's outputs depend only on its own slice. So with the points stacked as
[K, N, 2], `torch.autograd.grad(u.sum(), points, create_graph=True)` gives every member's du/d(x, t)
at once, the members' losses are summed, and one backward gives each member the gradient of its own
loss. The graph has the ops and order of `pinn_terms`, so autograd sums the same partial gradients
in the same order. Adam is written out with the ops of torch.optim.Adam's single-tensor path (what
it runs on a CPU): hyperparameters shared by all members are Python numbers, as in torch; the lr
(and any value that differs) is a [K, 1, 1] tensor, rounded to float32 as torch rounds the number.
Measured on CPU with torch 2.13: members end bitwise equal to one-by-one training
(tests/test_pinn_population.py; other versions are held to float tolerance).

One Lightning step is one epoch of every member (`steps_per_epoch` full-batch steps; manual
optimization). A diverged member (non-finite epoch train loss) is frozen at zero weights and zero
Adam moments, its update masked: its slot keeps computing finite numbers nobody reads.
"""

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from zoo import data as datasets
from zoo.train.optim import build_optimizer
from zoo.train.pinn import Repeat
from zoo.train.pinn_loss import TERMS
from zoo.train.population.stacked import StackedMLPs

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "gelu": F.gelu}  # as nn.ReLU / nn.Tanh / nn.GELU call them
OPTIMIZERS = ("adam", "adamw")


def adam_settings(optim: DictConfig) -> dict:
    """What torch.optim.Adam/AdamW runs with for `optim`: per parameter kind ("weight": matrices,
    "bias": vectors) the weight decay; beta2, eps, and whether decay is decoupled (AdamW)."""
    weight, bias = torch.zeros(1, 1, requires_grad=True), torch.zeros(1, requires_grad=True)
    opt, _ = build_optimizer([weight, bias], optim, 1)
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    group = group_of[id(weight)]
    if group.get("amsgrad") or group.get("maximize"):
        raise ValueError("population training implements Adam without amsgrad/maximize")
    return {
        "weight_decay": {"weight": group["weight_decay"], "bias": group_of[id(bias)]["weight_decay"]},
        "beta2": group["betas"][1],
        "eps": group["eps"],
        "decoupled": bool(group.get("decoupled_weight_decay", optim.name == "adamw")),
    }


def shared_or_stacked(values: list[float], device: torch.device) -> "float | torch.Tensor":
    """One hyperparameter of every member: the Python number when all members share it (torch's own
    scalar path), else a float32 [K, 1, 1] tensor of the numbers (rounded as a kernel rounds a number)."""
    if all(v == values[0] for v in values):
        return float(values[0])
    return torch.tensor(values, dtype=torch.float64).float().to(device)[:, None, None]


# -- stacked nn.Linear ------------------------------------------------------------------------------
# nn.Linear on [N, in] is addmm(b, h, W.t()). Batched as baddbmm(b, h, W.mT), forward and backward give
# each member bitwise what addmm gives it alone, except where MKL's batched gemm sums in another order
# than its single gemm (measured, torch 2.13 CPU). Two layers need help, by custom autograd functions
# that compute the same products in the orientation the single-model ops use (autograd's
# mm_mat2_backward picks grad.t() @ input for the column-major W.t()), on the transposed view W.mT
# (as nn.Linear's W.t(), so gradients meet in the same graph nodes and are summed in the same order):
#   - the first layer (in = 2 here): the weight gradient as grad^T @ input, not input^T @ grad;
#   - the output layer (out = 1): every product has a vector side, which a single gemm runs as a
#     matrix-vector product; batched, only `matrix @ vector` (bmm(A, v), v a column) agrees with it.
# The hidden layers agree with plain baddbmm (which is also the fastest).


class _First(torch.autograd.Function):
    """baddbmm(b, x, wt) (wt = W.mT [K, in, out]), weight gradient as nn.Linear's (grad^T @ x)^T."""

    @staticmethod
    def forward(ctx, x, wt, b):
        ctx.save_for_backward(x, wt)
        ctx.bias = b is not None
        return torch.baddbmm(b, x, wt) if b is not None else torch.bmm(x, wt)

    @staticmethod
    def backward(ctx, grad):
        x, wt = ctx.saved_tensors
        grad_x = torch.bmm(grad, wt.mT) if ctx.needs_input_grad[0] else None
        return grad_x, torch.bmm(grad.mT, x).mT, grad.sum(1, keepdim=True) if ctx.bias else None


class _Outer(torch.autograd.Function):
    """g [K, N, 1] @ w [K, 1, D]: the output layer's input gradient; its own backward as mm's."""

    @staticmethod
    def forward(ctx, g, w):
        ctx.save_for_backward(g, w)
        return torch.bmm(g, w)

    @staticmethod
    def backward(ctx, grad):
        g, w = ctx.saved_tensors
        grad_g = torch.bmm(w, grad.mT).mT if ctx.needs_input_grad[0] else None
        grad_w = torch.bmm(grad.mT, g).mT if ctx.needs_input_grad[1] else None
        return grad_g, grad_w


class _Head(torch.autograd.Function):
    """The output layer, out = 1: (W @ h^T)^T + b, gradients as matrix-vector products."""

    @staticmethod
    def forward(ctx, h, wt, b):
        ctx.save_for_backward(h, wt)
        ctx.bias = b is not None
        out = torch.baddbmm(b, wt.mT, h.mT) if b is not None else torch.bmm(wt.mT, h.mT)
        return out.mT

    @staticmethod
    def backward(ctx, grad):
        h, wt = ctx.saved_tensors
        # mm reads an expanded (stride 0) gradient as a dense one, bmm does not: make it dense
        grad_h = _Outer.apply(grad.contiguous(), wt.mT) if ctx.needs_input_grad[0] else None
        return grad_h, torch.bmm(h.mT, grad), grad.sum(1, keepdim=True) if ctx.bias else None


def linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, *, first: bool, last: bool) -> torch.Tensor:
    """nn.Linear for every member: h [K, N, in], w [K, out, in], b [K, 1, out] or None."""
    if last and w.shape[1] == 1:
        return _Head.apply(h, w.mT, b)  # b [K, 1, 1]
    if first:
        return _First.apply(h, w.mT, b)
    return torch.baddbmm(b, h, w.mT) if b is not None else torch.bmm(h, w.mT)


class PINNPopulation(StackedMLPs):
    """K PINNs (zoo.models.MLP on (x, t)) with one architecture and one set of points, trained as one.

    Stacked state: weights [K, out, in], biases [K, 1, out], Adam's exp_avg and exp_avg_sq alike.
    """

    def __init__(self, cfgs: list[DictConfig]):
        first = cfgs[0]
        super().__init__(cfgs, steps_per_epoch=first.data.steps_per_epoch)
        self.act = ACTIVATIONS[first.model.activation]
        params = [*self.weights, *self.biases]  # trained through autograd (requires_grad)
        self.exp_avgs = nn.ParameterList(nn.Parameter(torch.zeros_like(p), requires_grad=False) for p in params)
        self.exp_avg_sqs = nn.ParameterList(nn.Parameter(torch.zeros_like(p), requires_grad=False) for p in params)
        self.m, self.v = list(self.exp_avgs), list(self.exp_avg_sqs)

        # Points: the same for every beta (only the exact solution depends on it).
        data = datasets.load(first.data, first.paths.data)
        betas = torch.tensor([float(cfg.data.beta) for cfg in cfgs])
        self.register_buffer("beta", betas[:, None], persistent=False)  # [K, 1] against du [K, N]
        for name in ("collocation", "initial", "left", "right", "grid"):
            points = getattr(data, name)
            self.register_buffer(name, points.expand(self.k, *points.shape).contiguous(), persistent=False)
        # u*(x, t) = sin(x - beta t), as ConvectionData.exact computes it for each member's beta
        for name in ("initial", "grid"):
            xt = getattr(self, name)
            self.register_buffer(
                f"exact_{name}", torch.sin(xt[..., :1] - betas[:, None, None] * xt[..., 1:]), persistent=False
            )

        self.beta1s = self.momenta_or_betas  # read per step as numbers: kept on the CPU
        self.beta1_shared = bool((self.beta1s == self.beta1s[:, :1]).all())
        settings = [adam_settings(cfg.optim) for cfg in cfgs]
        self.decoupled = settings[0]["decoupled"]  # optim.name is part of the population key
        self.settings = {key: [s[key] for s in settings] for key in ("beta2", "eps")}
        self.settings.update(
            {f"weight_decay_{kind}": [s["weight_decay"][kind] for s in settings] for kind in ("weight", "bias")}
        )
        self._hyper: tuple[torch.device, dict] | None = None
        self.sums: torch.Tensor | None = None  # [5, K]: loss, residual, initial, boundary, steps over the epoch

    def hyper(self) -> dict[str, float | torch.Tensor]:
        """`settings` as `shared_or_stacked` values on the module's device (rebuilt after a move)."""
        if self._hyper is None or self._hyper[0] != self.device:
            self._hyper = self.device, {k: shared_or_stacked(v, self.device) for k, v in self.settings.items()}
        return self._hyper[1]

    def train_dataloader(self) -> Repeat:
        return Repeat((torch.zeros(()),), 1)  # one item per epoch: training_step runs the epoch's steps

    # -- math ------------------------------------------------------------------
    def forward(self, xt: torch.Tensor) -> torch.Tensor:
        """[K, N, 2] points → [K, N, 1]: each member's network on its slice (see `linear`)."""
        h, last = xt, len(self.w) - 1
        for i, w in enumerate(self.w):
            h = linear(h, w, self.b[i] if self.b else None, first=i == 0, last=i == last)
            if i < last:
                h = self.act(h)
        return h

    def terms(self) -> dict[str, torch.Tensor]:
        """`pinn_terms` for every member, each [K]; differentiable w.r.t. the stacked parameters."""
        xt = self.collocation.detach().requires_grad_(True)
        du = torch.autograd.grad(self(xt).sum(), xt, create_graph=True)[0]
        return {
            "residual": (du[..., 1] + self.beta * du[..., 0]).pow(2).mean(-1),
            "initial": (self(self.initial) - self.exact_initial).pow(2).mean((1, 2)),
            "boundary": (self(self.left) - self(self.right)).pow(2).mean((1, 2)),
        }

    @torch.no_grad()
    def adam_step(self, grads: list[torch.Tensor], step: int) -> None:
        """torch.optim.Adam's (or AdamW's) single-tensor update for every member, with the ops and
        operand order of `_single_tensor_adam`; `step` counts from 0. Scalars as torch has them: the
        bias corrections in float64 from the step count, cast to float32 by the kernels."""
        hyper, n, device = self.hyper(), float(step + 1), self.lrs.device  # n: state["step"] after the update
        lr = self.lrs[step]
        if self.beta1_shared:
            beta1 = self.beta1s[step, 0].item()
            bias_correction1, weight1 = 1 - beta1**n, 1 - beta1
        else:
            beta1 = self.beta1s[step].tolist()
            bias_correction1 = torch.tensor([1 - b**n for b in beta1], dtype=torch.float64, device=device)
            weight1 = shared_or_stacked([1 - b for b in beta1], device)
        beta2 = hyper["beta2"]
        if isinstance(beta2, float):
            bias_correction2_sqrt, weight2 = (1 - beta2**n) ** 0.5, 1 - beta2
        else:
            betas2 = self.settings["beta2"]
            bias_correction2_sqrt = shared_or_stacked([(1 - b**n) ** 0.5 for b in betas2], device)
            weight2 = shared_or_stacked([1 - b for b in betas2], device)
        alive = self.alive.to(lr.dtype)
        neg_step_size = (-(lr / bias_correction1) * alive).float()[:, None, None]  # frozen members: 0
        for i, (p, g, m, v) in enumerate(zip(self.w + self.b, grads, self.m, self.v)):
            kind = "weight" if i < len(self.w) else "bias"
            decay = hyper[f"weight_decay_{kind}"]
            if not (isinstance(decay, float) and decay == 0):  # torch skips a zero weight decay
                if self.decoupled:  # AdamW: param.mul_(1 - lr * weight_decay)
                    rates = torch.tensor(self.settings[f"weight_decay_{kind}"], dtype=torch.float64, device=device)
                    p.mul_((1 - lr * rates * alive).float()[:, None, None])
                elif isinstance(decay, float):
                    g = g.add(p, alpha=decay)
                else:
                    g = torch.addcmul(g, p, decay)  # grad.add(param, alpha=wd): the same fused kernel
            m.lerp_(g, weight1)
            if isinstance(weight2, float):
                v.mul_(beta2).addcmul_(g, g, value=weight2)
            else:
                v.mul_(beta2).addcmul_(g * weight2, g)  # value * g * g, as the kernel multiplies
            denom = (v.sqrt() / bias_correction2_sqrt).add_(hyper["eps"])
            # param.addcdiv_(exp_avg, denom, value=-step_size): the kernel computes (value * exp_avg) / denom
            p.addcdiv_(m * neg_step_size, denom)

    # -- training --------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self.sums = None

    def training_step(self, batch, batch_idx: int) -> None:
        """One epoch: `steps_per_epoch` full-batch steps of every member."""
        params = self.w + self.b
        first = self.current_epoch * self.steps_per_epoch
        ones = torch.ones(self.k, device=self.device)
        for step in range(first, first + self.steps_per_epoch):
            terms = self.terms()
            loss = sum(terms.values())
            grads = torch.autograd.grad(loss.sum(), params)  # member k's grads: of its own loss only
            self.adam_step(list(grads), step)
            row = torch.stack([loss.detach(), *(t.detach() for t in terms.values()), ones])
            self.sums = row if self.sums is None else self.sums + row

    def epoch_train_metrics(self) -> list[dict[str, float]]:
        *sums, steps = self.sums.tolist()
        return [dict(zip(("loss", *TERMS), (s[k] / steps[k] for s in sums))) for k in range(self.k)]

    def evaluate(self, split: str) -> list[dict[str, float]]:
        """`PINN.evaluate` for every member: the loss terms on the training points (`train`), or the
        errors against the exact solution on the test grid (`test`)."""
        if split == "train":
            with torch.enable_grad():
                terms = {k: v.detach().tolist() for k, v in self.terms().items()}
            return [
                {"loss": sum(t[k] for t in terms.values()), **{name: t[k] for name, t in terms.items()}}
                for k in range(self.k)
            ]
        with torch.no_grad():
            u, exact = self(self.grid), self.exact_grid
            loss = (u - exact).pow(2).mean((1, 2)).tolist()
            rel = torch.linalg.vector_norm(u - exact, dim=(1, 2)) / torch.linalg.vector_norm(exact, dim=(1, 2))
            return [{"loss": a, "rel_l2": b} for a, b in zip(loss, rel.tolist())]
