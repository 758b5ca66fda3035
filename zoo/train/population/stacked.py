"""What every stacked-MLP population shares: members built as `train_model` builds them, their
layers stacked as [K, out, in] tensors, and the per-member (lr, momentum) table of every step."""

import json
import warnings

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from zoo.models import build
from zoo.train.optim import build_optimizer


def schedule(optim: DictConfig, total_steps: int) -> torch.Tensor:
    """[total_steps + 1, 2] float64: the (lr, momentum) step s trains with, as torch's scheduler
    from `build_optimizer` sets them (row `total_steps` is what the last metrics line reports).
    For Adam/AdamW the momentum column is beta1 (which OneCycle cycles in its place)."""
    opt, scheduler = build_optimizer([torch.zeros(1, 1)], optim, total_steps)
    group, rows = opt.param_groups[0], []
    with warnings.catch_warnings():  # get_lr outside step() warns; it is a pure function of last_epoch
        warnings.simplefilter("ignore")
        for step in range(total_steps + 1):
            scheduler.last_epoch = step
            group["lr"] = scheduler.get_lr()[0]  # OneCycle sets group["momentum"] (or "betas") in get_lr
            rows.append((group["lr"], group["momentum"] if "momentum" in group else group["betas"][0]))
    return torch.tensor(rows, dtype=torch.float64)


def schedules(cfgs: list[DictConfig], total_steps: int) -> torch.Tensor:
    """[total_steps + 1, K, 2] float64: `schedule` of every member (equal optim configs computed once)."""
    tables = {}
    for cfg in cfgs:
        if optim_key(cfg.optim) not in tables:
            tables[optim_key(cfg.optim)] = schedule(cfg.optim, total_steps)
    return torch.stack([tables[optim_key(cfg.optim)] for cfg in cfgs], dim=1)


def optim_key(optim: DictConfig) -> str:
    return json.dumps(OmegaConf.to_container(optim, resolve=True), sort_keys=True)


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def stack_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """[K, *largest shape]: member tensors stacked, each zero-padded at the end of every dim."""
    shape = [max(sizes) for sizes in zip(*(t.shape for t in tensors))]
    out = torch.zeros(len(tensors), *shape)
    for k, t in enumerate(tensors):
        out[(k, *map(slice, t.shape))] = t.detach()
    return out


class StackedMLPs(pl.LightningModule):
    """K MLPs (zoo.models.MLP) of one depth, trained as one with manual optimization.

    Holds each member as its own module (`members`, built from its seed as `train_model` builds
    it, kept on the CPU), their stacked weights `weights` [K, out, in] and biases `biases`
    [K, 1, out] (narrower members zero-padded to the widest), `alive` (a diverged member is
    frozen, its slot kept), and `lrs` [steps + 1, K], the lr of every step, with `momenta_or_betas`
    [steps + 1, K] beside it (SGD's momentum, or Adam's beta1; both float64, as torch's numbers).
    """

    def __init__(self, cfgs: list[DictConfig], steps_per_epoch: int):
        super().__init__()
        self.automatic_optimization = False
        self.k, self.seeds, self.steps_per_epoch = len(cfgs), [cfg.seed for cfg in cfgs], steps_per_epoch
        self.members = []
        for cfg in cfgs:
            torch.manual_seed(cfg.seed)
            self.members.append(build(cfg.model))
        layers = list(zip(*map(linears, self.members)))
        self.weights = nn.ParameterList(stack_padded([lin.weight for lin in layer]) for layer in layers)
        self.biases = nn.ParameterList(
            stack_padded([lin.bias[None] for lin in layer]) for layer in layers if layer[0].bias is not None
        )
        # Plain lists for the hot loop (ParameterList indexing costs microseconds); device moves
        # keep these Parameter objects and swap their data.
        self.w, self.b = list(self.weights), list(self.biases)
        self.register_buffer("alive", torch.ones(self.k, dtype=torch.bool))
        rows = schedules(cfgs, cfgs[0].trainer.max_epochs * steps_per_epoch)
        self.register_buffer("lrs", rows[..., 0].contiguous(), persistent=False)
        self.momenta_or_betas = rows[..., 1].contiguous()

    def configure_optimizers(self) -> None:
        return None  # the update is written out: per-member hyperparameters on stacked tensors

    def lr(self, epoch: int) -> list[float]:
        """Each member's lr after `epoch` epochs, as its optimizer's param group would show it."""
        return self.lrs[epoch * self.steps_per_epoch].tolist()

    def member(self, k: int) -> nn.Module:
        """Member k as its own (unpadded) module, holding its current weights."""
        model = self.members[k]
        with torch.no_grad():
            for i, lin in enumerate(linears(model)):
                lin.weight.copy_(self.w[i][(k, *map(slice, lin.weight.shape))])
                if lin.bias is not None:
                    lin.bias.copy_(self.b[i][k, 0, : len(lin.bias)])
        return model

    @torch.no_grad()
    def kill(self, k: int) -> None:
        """Freeze member k at zero weights and optimizer state: it stays finite, and slots never mix."""
        self.alive[k] = False
        for p in self.parameters():
            p[k] = 0
