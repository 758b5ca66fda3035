"""Writes the run dir as training goes: metrics lines, safetensors checkpoints, `last.ckpt`."""

import math
import os
import time

import lightning.pytorch as pl
from safetensors.torch import save_file

from zoo.data import Batches
from zoo.train.evaluate import evaluate
from zoo.train.rundir import RunDir


class Diverged(RuntimeError):
    def __init__(self, epoch: int):
        super().__init__(f"non-finite train loss in epoch {epoch}")
        self.epoch = epoch


def save_weights(model, path, **metadata) -> None:
    """State dict as safetensors, written atomically (temp + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, tmp, metadata={k: str(v) for k, v in metadata.items()})
    os.replace(tmp, path)


class RunDirWriter(pl.Callback):
    """Per epoch: divergence check, test evaluation, checkpoint at `ckpt_epochs`, one metrics
    line, then `last.ckpt`. That order makes resume exact: lines past the epoch of
    `last.ckpt` are dropped on restart and the same epochs are recomputed bit for bit."""

    def __init__(self, run: RunDir, eval_batches: dict[str, Batches], ckpt_epochs: set[int]):
        self.run, self.eval_batches, self.ckpt_epochs = run, eval_batches, ckpt_epochs
        self.t0 = 0.0

    def on_train_start(self, trainer, module) -> None:
        # Runs after Lightning restored last.ckpt (if any): current_epoch = completed epochs.
        done = trainer.current_epoch
        self.run.truncate_metrics(done)
        if done == 0:
            self.t0 = time.perf_counter()
            train = evaluate(module.model, self.eval_batches["train"])
            self._write_epoch(trainer, module, 0, train)

    def on_train_epoch_start(self, trainer, module) -> None:
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        epoch = trainer.current_epoch + 1
        train = module.epoch_train_metrics()
        if not math.isfinite(train["loss"]):
            raise Diverged(epoch)
        self._write_epoch(trainer, module, epoch, train)
        tmp = self.run.path / ".last.ckpt.tmp"
        trainer.save_checkpoint(tmp)
        os.replace(tmp, self.run.last_ckpt)

    def _write_epoch(self, trainer, module, epoch: int, train: dict) -> None:
        test = evaluate(module.model, self.eval_batches["test"])
        if epoch in self.ckpt_epochs:
            save_weights(module.model, self.run.ckpt_path(epoch), id=self.run.id, epoch=epoch)
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.run.append_metrics({
            "epoch": epoch, "train_loss": train["loss"], "train_acc": train["acc"],
            "test_loss": test["loss"], "test_acc": test["acc"], "lr": lr,
            "seconds": round(time.perf_counter() - self.t0, 4),
        })
