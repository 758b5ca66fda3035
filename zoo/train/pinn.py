"""LightningModule for a physics-informed network on the convection equation (zoo.data.convection).

Loss = mean squared PDE residual (u_t + beta u_x) at the collocation points + initial-condition error
+ periodic-boundary mismatch, unweighted, as Krishnapriyan et al. (2021). Every step is full-batch
on the same points; an epoch is `steps_per_epoch` steps.

metrics.jsonl keys: `train_loss` (the sum) and its terms `train_residual`, `train_initial`,
`train_boundary` (means over the epoch's steps; at epoch 0 measured at init); `test_loss` (mean
squared error against the exact solution on the test grid) and `test_rel_l2` (relative L2 error
||u - u*|| / ||u*||, the reference's error metric).
"""

from collections.abc import Iterator, Mapping

import lightning.pytorch as pl
import torch
from torch import nn

from zoo.data.convection import ConvectionData
from zoo.train.optim import build_optimizer
from zoo.train.pinn_loss import TERMS, pinn_terms


class Repeat:
    """The same batch `n` times: one epoch of full-batch steps."""

    def __init__(self, batch: tuple[torch.Tensor, ...], n: int):
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        return iter([self.batch] * self.n)


class PINN(pl.LightningModule):
    def __init__(
        self, model: nn.Module, data: ConvectionData, optim: Mapping, *, max_epochs: int, steps_per_epoch: int
    ):
        super().__init__()
        self.model, self.data, self.optim = model, data, optim
        self.max_epochs, self.steps_per_epoch = max_epochs, steps_per_epoch
        self.sums: torch.Tensor | None = None  # [loss, residual, initial, boundary, steps] over the epoch

    def train_dataloader(self) -> Repeat:
        return Repeat(self.data.train_batch(), self.steps_per_epoch)

    def on_train_epoch_start(self) -> None:
        self.sums = None

    def training_step(self, batch, batch_idx):
        terms = pinn_terms(self.model, self.data.beta, *batch)
        loss = sum(terms.values())
        ones = torch.ones((), device=loss.device)
        step = torch.stack([loss.detach(), *(t.detach() for t in terms.values()), ones])
        self.sums = step if self.sums is None else self.sums + step
        return loss

    def epoch_train_metrics(self) -> dict[str, float]:
        *sums, steps = self.sums.tolist()
        return dict(zip(("loss", *TERMS), (s / steps for s in sums)))

    def evaluate(self, split: str) -> dict[str, float]:
        """`train`: the loss terms on the training points; `test`: errors against the exact solution."""
        if split == "train":
            with torch.enable_grad():
                batch = [t.to(self.device) for t in self.data.train_batch()]
                terms = {k: v.item() for k, v in pinn_terms(self.model, self.data.beta, *batch).items()}
            return {"loss": sum(terms.values()), **terms}
        with torch.no_grad():
            grid = self.data.grid.to(self.device)
            u, exact = self.model(grid), self.data.exact(grid)
            return {"loss": (u - exact).pow(2).mean().item(), "rel_l2": ((u - exact).norm() / exact.norm()).item()}

    def configure_optimizers(self):
        steps = self.max_epochs * self.steps_per_epoch
        opt, scheduler = build_optimizer(self.model.parameters(), self.optim, steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
