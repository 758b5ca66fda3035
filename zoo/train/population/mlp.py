"""MLP classifier populations: K MLPs of one zoo trained at once, as stacked tensors.

Every member is the model `train_model` would train alone, and ends in its own run dir:
the same init (`torch.manual_seed(seed)` then `build`), the same per-epoch shuffle
(`epoch_order(n, seed, epoch)`), the same SGD + schedule (the lr and momentum of each step
come from torch's own scheduler, per member), the same evaluation, metrics lines and
checkpoints. Members may differ in seed, width and every `optim` value but `name`, `nesterov`
and `no_decay_1d` (see `zoo.train.grouping.population_key`).

Layers are stacked as [K, out, in] (nn.Linear's layout) and narrower members are zero-padded
to the widest. A padded unit has zero weights in and out, so with an activation f(0) = 0 it
outputs 0, gets gradient 0 (also through weight decay and momentum) and stays exactly 0: the
padded member computes exactly its own narrow function.

Forward and backward are batched matmuls written out by hand, with the kernels autograd uses
for nn.Linear, cross-entropy and ReLU/tanh, and the SGD update uses the ops of
`torch.optim.SGD`; an unpadded member therefore gets bitwise the weights it gets alone on
CPU with torch 2.13 (padded ones agree to float tolerance: the matmuls sum over more, zero,
terms). Measured on 2 cores: autograd over the stacked graph was 1.5-2x slower than the
hand-written backward. tests/test_population.py checks the gradients against plain autograd.

One Lightning step is one epoch of every member (manual optimization; see zoo.train.population.runner).
"""

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from zoo import data as datasets
from zoo.train.population.stacked import StackedMLPs

# Gradient of each activation from its output, as autograd computes it (f(0) = 0 for both).
ACTIVATION_BACKWARD: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "relu": lambda grad, out: torch.where(out > 0, grad, 0.0),  # threshold_backward, bitwise
    "tanh": torch.ops.aten.tanh_backward,  # grad * (1 - out**2) written out differs in the last bit
}
ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


class EpochOrders:
    """One item per epoch: every member's shuffle of the n training samples, [K, n]. Row k is the
    order `Batches` gives member k alone in epoch `epoch()`."""

    def __init__(self, n: int, seeds: list[int], epoch: Callable[[], int]):
        self.n, self.seeds, self.epoch = n, seeds, epoch

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[torch.Tensor]:
        # A generator: the epoch is read when the item is drawn, as in `Batches`. On resume Lightning
        # calls iter() before it moves `current_epoch` past the restored epoch.
        yield torch.stack([datasets.epoch_order(self.n, seed, self.epoch()) for seed in self.seeds])


class MLPPopulation(StackedMLPs):
    """K MLP classifiers with one depth, activation and bias setting, trained as one.

    Stacked state: weights [K, out, in], biases [K, 1, out], SGD momenta alike; per-member
    hyperparameters are [K, 1, 1] tensors, so one op updates every member.
    """

    def __init__(self, cfgs: list[DictConfig], data: datasets.TensorData):
        first = cfgs[0]
        super().__init__(cfgs, steps_per_epoch=-(-len(data.x_train) // first.data.batch_size))
        self.batch_size, self.eval_batch_size = first.data.batch_size, first.data.eval_batch_size
        self.act = first.model.activation
        self.nesterov = first.optim.get("nesterov", False)
        self.decay_biases = not first.optim.get("no_decay_1d", False)
        self.momenta = nn.ParameterList(torch.zeros_like(p) for p in [*self.weights, *self.biases])
        for p in self.parameters():
            p.requires_grad_(False)  # updated by hand in training_step
        self.v = list(self.momenta)
        hyper = torch.stack([self.lrs, self.momenta_or_betas], dim=1)  # [steps + 1, 2, K]
        self.register_buffer("hyper", hyper.float()[..., None, None], persistent=False)
        decay = torch.tensor([float(cfg.optim.weight_decay) for cfg in cfgs])
        self.register_buffer("weight_decay", decay[:, None, None], persistent=False)
        for split in ("train", "test"):
            x, y = data.split(split)
            self.register_buffer(f"x_{split}", x, persistent=False)
            self.register_buffer(f"y_{split}", y, persistent=False)
        self.loss_sum = self.correct = None  # [K] each, over the current epoch

    def train_dataloader(self) -> EpochOrders:
        return EpochOrders(len(self.x_train), self.seeds, epoch=lambda: self.current_epoch)

    # -- math ------------------------------------------------------------------
    def layer_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Inputs x [K, B, in] → every layer's input, then the logits, each [K, B, features]."""
        acts, last = [x], len(self.w) - 1
        for i, w in enumerate(self.w):
            z = torch.baddbmm(self.b[i], acts[-1], w.mT) if self.b else torch.bmm(acts[-1], w.mT)
            acts.append(z if i == last else ACTIVATIONS[self.act](z))
        return acts

    def gradients(self, acts: list[torch.Tensor], grad: torch.Tensor) -> list[torch.Tensor]:
        """Backward from dLoss/dlogits to the gradients of the weights (then biases), as autograd
        does it for nn.Linear: weight grad = grad^T @ input, input grad = grad @ weight."""
        weights, biases = [], []
        for i in reversed(range(len(self.w))):
            weights.insert(0, torch.bmm(grad.mT, acts[i]))
            if self.b:
                biases.insert(0, grad.sum(1, keepdim=True))
            if i:
                grad = ACTIVATION_BACKWARD[self.act](torch.bmm(grad, self.w[i]), acts[i])
        return weights + biases

    def sgd_step(self, grads: list[torch.Tensor], step: int) -> None:
        """torch.optim.SGD's update (dampening 0) with each member's lr, momentum and weight decay.
        `addcmul` with a [K, 1, 1] factor runs the same fused kernel as `add(..., alpha=)`."""
        lr, momentum = self.hyper[step]
        neg_lr = -lr * self.alive[:, None, None]  # diverged members stay frozen
        for i, (p, v, g) in enumerate(zip(self.w + self.b, self.v, grads)):
            if i < len(self.w) or self.decay_biases:
                g = torch.addcmul(g, p, self.weight_decay)  # grad.add(param, alpha=wd)
            v.mul_(momentum).add_(g)  # first step: v = 0, so v = g, as torch's clone
            p.addcmul_(torch.addcmul(g, v, momentum) if self.nesterov else v, neg_lr)

    # -- training --------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self.loss_sum = torch.zeros(self.k, device=self.device)
        self.correct = torch.zeros(self.k, device=self.device)

    @torch.no_grad()
    def training_step(self, orders: torch.Tensor, batch_idx: int) -> None:
        """One epoch: every member's mini-batches in its own order. (One Lightning step per epoch,
        not per batch: Lightning's ~0.17 ms a step is as much as a narrow population's step.)"""
        first = self.current_epoch * self.steps_per_epoch
        for step, idx in enumerate(orders.split(self.batch_size, dim=1), start=first):
            x, y = self.x_train[idx], self.y_train[idx]
            acts = self.layer_inputs(x)
            loss, correct, grad = cross_entropy(acts[-1], y)
            self.sgd_step(self.gradients(acts, grad), step)
            self.loss_sum.add_(loss * y.shape[1])  # as Classifier: the batch mean times its size
            self.correct.add_(correct)

    def epoch_train_metrics(self) -> list[dict[str, float]]:
        n = len(self.x_train)
        return [{"loss": s / n, "acc": c / n} for s, c in zip(self.loss_sum.tolist(), self.correct.tolist())]

    @torch.no_grad()
    def evaluate(self, split: str) -> list[dict[str, float]]:
        """`zoo.train.evaluate` for every member: mean cross-entropy and accuracy over `split`."""
        x_all, y_all = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
        loss, correct = [0.0] * self.k, [0] * self.k
        for start in range(0, len(x_all), self.eval_batch_size):
            x, y = x_all[start : start + self.eval_batch_size], y_all[start : start + self.eval_batch_size]
            logits = self.layer_inputs(x.expand(self.k, *x.shape))[-1]
            sums = torch.stack([F.cross_entropy(member, y, reduction="sum") for member in logits]).tolist()
            loss = [a + b for a, b in zip(loss, sums)]
            correct = [a + b for a, b in zip(correct, (logits.argmax(-1) == y).sum(1).tolist())]
        return [{"loss": s / len(y_all), "acc": c / len(y_all)} for s, c in zip(loss, correct)]


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per member: mean cross-entropy [K], correct count [K] and dLoss/dlogits [K, B, C], the
    gradient computed with autograd's kernels (nll_loss backward, then log_softmax backward)."""
    logp = torch.log_softmax(logits, -1)
    target = y.unsqueeze(-1)
    loss = -logp.gather(-1, target).squeeze(-1).mean(1)
    grad = torch.zeros_like(logp).scatter_(-1, target, -1.0 / y.shape[1])
    grad = log_softmax_backward(grad, logp)
    return loss, (logits.argmax(-1) == y).sum(1).to(loss.dtype), grad


def log_softmax_backward(grad: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """dLoss/dlogits from dLoss/dlogp: autograd's own kernel where torch has it (public API through
    autograd costs ~1.7x this op), else its formula (equal to float rounding)."""
    if hasattr(torch, "_log_softmax_backward_data"):
        return torch._log_softmax_backward_data(grad, logp, -1, logp.dtype)
    return grad - logp.exp() * grad.sum(-1, keepdim=True)
