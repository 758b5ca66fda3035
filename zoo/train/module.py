"""LightningModule for one classifier: cross-entropy, per-batch LR schedule, epoch sums.

Also trains language models (task `lm`): a model that returns logits per position `(b, t, vocab)`
is a classifier of the next token at every position.
"""

from collections.abc import Mapping

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from zoo.data import Batches, TensorData
from zoo.train.evaluate import evaluate
from zoo.train.optim import build_optimizer


class Classifier(pl.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        data: TensorData,
        optim: Mapping,
        *,
        batch_size: int,
        max_epochs: int,
        seed: int,
        eval_batch_size: int = 1000,
        accumulate: int = 1,
    ):
        super().__init__()
        self.model, self.data, self.optim = model, data, optim
        self.batch_size, self.max_epochs, self.seed = batch_size, max_epochs, seed
        # A batch may arrive as `accumulate` consecutive micro-batches (the Trainer accumulates them).
        self.eval_batch_size, self.accumulate = eval_batch_size, accumulate
        self.sums: torch.Tensor | None = None  # [loss * n, correct, n] over the current epoch

    def train_dataloader(self) -> Batches:
        # The shuffle depends on (seed, epoch) only, so a resumed run sees the same batches.
        return self.data.batches(
            "train", self.batch_size // self.accumulate, shuffle=True, seed=self.seed, epoch=lambda: self.current_epoch
        )

    def on_train_epoch_start(self) -> None:
        self.sums = None

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits, y = self.model(x).flatten(0, -2), y.flatten()  # (b, t, c) -> (b*t, c); no-op for (b, c)
        loss = F.cross_entropy(logits, y)
        # Accumulate on the device: no host sync per step.
        step = torch.stack(
            [loss.detach() * len(y), (logits.argmax(1) == y).sum(), torch.tensor(len(y), device=y.device)]
        )
        self.sums = step if self.sums is None else self.sums + step
        return loss

    def epoch_train_metrics(self) -> dict[str, float]:
        loss_sum, correct, n = self.sums.tolist()
        return {"loss": loss_sum / n, "acc": correct / n}

    def evaluate(self, split: str) -> dict[str, float]:
        """Loss and accuracy on `split` ('train' or 'test'), in eval mode."""
        return evaluate(self.model, self.data.batches(split, self.eval_batch_size))

    def configure_optimizers(self):
        steps = self.max_epochs * -(-len(self.train_dataloader()) // self.accumulate)
        opt, scheduler = build_optimizer(self.model.parameters(), self.optim, steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
