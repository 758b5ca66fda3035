"""Populations of ResNets, ViTs and GPTs: K seeds of one cell trained as one network.

Every member is the model `train_model` would train alone (zoo.train.module.Classifier) and
ends in its own run dir: the same init (`torch.manual_seed(seed)` then `build`), the same data
order and augmentation stream (its own `data.batches(..., seed=its seed)`, stacked per step),
the same optimizer and schedule (torch's own, from `build_optimizer`, on the stacked tensors:
its updates act element by element, so each member's slice gets its own update), its own
BatchNorm statistics, evaluation, metrics lines and checkpoints. Members share everything but
the seed (see `zoo.train.grouping.population_key`), so one lr schedule serves them all.

ResNets are stacked as grouped convolutions (zoo.train.population.grouped), other architectures
through torch.func.vmap (.vmapped). Both kernels sum in another order than a single model's, so
members match one-by-one training to float tolerance, not bitwise (tests/test_net_population.py).

One Lightning step is one optimizer step of every member (manual optimization: the loss of the
population is the sum of the members' losses, whose gradient is each member's own gradient).
A diverged member is frozen at zero weights, buffers and optimizer state, its gradient masked.

`trainer.gradient_clip_val` clips each member's gradient by its own norm, where and as Lightning
clips a model trained alone (`on_before_optimizer_step`). `trainer.precision=bf16-mixed` needs
nothing here: Lightning autocasts `training_step` (the forward; autograd runs the backward in the
forward's dtypes, as it does for a model alone) and neither evaluation, which runs from callbacks
in float32 both ways. Not 16-mixed: one GradScaler would skip every member's step when one
member's gradient overflows (zoo.train.grouping keeps such cells alone).
"""

from collections.abc import Iterator

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from zoo.models import build
from zoo.train.capture import captured
from zoo.train.optim import build_optimizer
from zoo.train.population.grouped import GroupedNet
from zoo.train.population.vmapped import VmappedNet

STACKING = {"resnet": GroupedNet}  # others: VmappedNet


class MemberBatches:
    """Each member's training batches (`data.batches(..., seed=its seed)`), stacked per step:
    (x [K, B, ...], y [K, B, ...])."""

    def __init__(self, data, batch_size: int, seeds: list[int], epoch):
        self.loaders = [data.batches("train", batch_size, shuffle=True, seed=seed, epoch=epoch) for seed in seeds]

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # A generator: each loader reads the epoch when the first batch is drawn (see EpochOrders).
        for batches in zip(*self.loaders):
            yield torch.stack([x for x, _ in batches]), torch.stack([y for _, y in batches])


class NetPopulation(pl.LightningModule):
    """K classifiers (or language models) of one architecture trained as one; see the module doc."""

    def __init__(self, cfgs: list[DictConfig], data):
        super().__init__()
        self.automatic_optimization = False
        first = cfgs[0]
        self.k, self.seeds, self.data, self.optim = len(cfgs), [cfg.seed for cfg in cfgs], data, first.optim
        self.batch_size, self.eval_batch_size = first.data.batch_size, first.data.eval_batch_size
        self.max_epochs, self.clip = first.trainer.max_epochs, first.trainer.gradient_clip_val or 0.0
        self.members = []  # each member as its own module, as train_model builds it (kept on the CPU)
        for cfg in cfgs:
            torch.manual_seed(cfg.seed)
            self.members.append(build(cfg.model))
        self.net = STACKING.get(first.model.name, VmappedNet)(self.members)
        self.stacked = self.net.module  # registered: Lightning moves and checkpoints it
        self.register_buffer("alive", torch.ones(self.k, dtype=torch.bool))
        self.sums: torch.Tensor | None = None  # [3, K]: loss * n, correct, n over the current epoch
        self.train_losses = captured(self._train_losses, first)  # runtime.compile (zoo.train.capture)

    def train_dataloader(self) -> MemberBatches:
        return MemberBatches(self.data, self.batch_size, self.seeds, epoch=lambda: self.current_epoch)

    def configure_optimizers(self):
        steps = self.max_epochs * len(self.train_dataloader())
        # no_decay_1d tells gains from matrices by the member's shape, not the stacked one
        params = list(self.stacked.parameters())
        dims = {id(p): self.net.split(p.detach()).dim() - 1 for p in params}
        opt, scheduler = build_optimizer(params, self.optim, steps, ndim=lambda p: dims[id(p)], foreach=True)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def losses(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per member: mean cross-entropy [K] and correct count [K], as Classifier (per position for LMs)."""
        logits, y = logits.flatten(1, -2), y.flatten(1)  # [K, n, classes], [K, n]
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y)
        return loss.mean(1), (logits.argmax(-1) == y).sum(1)

    def _train_losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.losses(self.net.forward(x), y)

    def on_train_epoch_start(self) -> None:
        self.sums = None

    def training_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        loss, correct = self.train_losses(x, y)
        opt, scheduler = self.optimizers(), self.lr_schedulers()
        opt.zero_grad()
        self.manual_backward(loss.sum())  # the members' losses are independent: each gets its own gradient
        if not self.alive.all():
            self._mask_dead_gradients()
        opt.step()
        scheduler.step()
        n = torch.full_like(loss, y[0].numel())
        step = torch.stack([loss.detach() * n, correct.to(loss.dtype), n])
        self.sums = step if self.sums is None else self.sums + step

    def on_before_optimizer_step(self, optimizer) -> None:
        # Lightning calls this inside opt.step(), before the update: where it clips a model trained alone.
        if self.clip > 0:
            self.clip_member_gradients(self.clip)

    @torch.no_grad()
    def clip_member_gradients(self, max_norm: float) -> torch.Tensor:
        """`torch.nn.utils.clip_grad_norm_(member.parameters(), max_norm)` for every member at once:
        each member's gradients scaled by max_norm / (norm + 1e-6), clamped to 1, where norm is the
        2-norm of all its gradients (the norm of its per-tensor norms, as torch computes it).
        Returns the members' norms [K]."""
        grads = [self.net.split(p.grad) for p in self.stacked.parameters() if p.grad is not None]  # [K, ...]
        norms = torch.stack([torch.linalg.vector_norm(g, dim=tuple(range(1, g.dim()))) for g in grads])
        total = torch.linalg.vector_norm(norms, dim=0)
        scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))
        return total

    def epoch_train_metrics(self) -> list[dict[str, float]]:
        loss_sum, correct, n = self.sums.tolist()
        return [{"loss": loss_sum[k] / n[k], "acc": correct[k] / n[k]} for k in range(self.k)]

    @torch.no_grad()
    def evaluate(self, split: str) -> list[dict[str, float]]:
        """`zoo.train.evaluate` for every member: mean cross-entropy and accuracy over `split`, in eval mode."""
        was_training = self.stacked.training
        self.stacked.eval()
        loss, correct, count = [0.0] * self.k, [0.0] * self.k, 0
        for x, y in self.data.batches(split, self.eval_batch_size):
            x, y = x.to(self.device), y.to(self.device)
            logits, y = self.net.forward(x, shared=True).flatten(1, -2), y.flatten()
            sums = F.cross_entropy(logits.flatten(0, 1), y.repeat(self.k), reduction="none").view(self.k, -1).sum(1)
            loss = [a + b for a, b in zip(loss, sums.tolist())]
            correct = [a + b for a, b in zip(correct, (logits.argmax(-1) == y).sum(1).tolist())]
            count += len(y)
        self.stacked.train(was_training)
        return [{"loss": s / count, "acc": c / count} for s, c in zip(loss, correct)]

    def lr(self, epoch: int) -> list[float]:
        """Each member's lr now (the members share one schedule), as its optimizer would show it."""
        return [self.trainer.optimizers[0].param_groups[0]["lr"]] * self.k

    def member(self, k: int) -> nn.Module:
        """Member k as its own module, holding its current weights and buffers."""
        model = self.members[k]
        state = {name: self.net.split(t.detach())[k].cpu() for name, t in self.stacked.state_dict().items()}
        model.load_state_dict(state)
        return model

    @torch.no_grad()
    def kill(self, k: int) -> None:
        """Freeze member k at zero weights, buffers and optimizer state: it stays finite, and slots never mix."""
        self.alive[k] = False
        opt = self.trainer.optimizers[0]
        for p in self.stacked.parameters():
            self.net.split(p)[k] = 0
            for state in opt.state.get(p, {}).values():
                if torch.is_tensor(state) and state.shape == p.shape:
                    self.net.split(state)[k] = 0
        for b in self.stacked.buffers():
            if b.dim() > 0:  # a grouped BatchNorm's step count is shared
                self.net.split(b)[k] = 0

    def _mask_dead_gradients(self) -> None:
        dead = (~self.alive).nonzero().flatten().tolist()
        for p in self.stacked.parameters():
            for k in dead:
                self.net.split(p.grad)[k] = 0
