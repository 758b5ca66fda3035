"""Writes the run dir as training goes: metrics lines, safetensors checkpoints, `last.ckpt`."""

import math
import os
import time

import lightning.pytorch as pl
from safetensors.torch import save_file

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


def metrics_row(epoch: int, train: dict, test: dict, lr: float, seconds: float) -> dict:
    """One line of metrics.jsonl: `train_<k>`, `test_<k>` per metric of the task (classifiers: loss, acc)."""
    return {"epoch": epoch, **{f"train_{k}": v for k, v in train.items()},
            **{f"test_{k}": v for k, v in test.items()}, "lr": lr, "seconds": round(seconds, 4)}


class RunDirWriter(pl.Callback):
    """Per epoch: divergence check, test evaluation, checkpoint at `ckpt_epochs`, one metrics
    line, then `last.ckpt`. That order makes resume exact: lines past the epoch of
    `last.ckpt` are dropped on restart and the same epochs are recomputed bit for bit.
    The module evaluates itself (`module.evaluate(split)`, see zoo.train.tasks)."""

    def __init__(self, run: RunDir, ckpt_epochs: set[int]):
        self.run, self.ckpt_epochs = run, ckpt_epochs
        self.t0 = 0.0

    def on_train_start(self, trainer, module) -> None:
        # Runs after Lightning restored last.ckpt (if any): current_epoch = completed epochs.
        done = trainer.current_epoch
        self.run.truncate_metrics(done if done else -1)  # a fresh start keeps no line, not even epoch 0
        if done == 0:
            self.t0 = time.perf_counter()
            train = module.evaluate("train")
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
        test = module.evaluate("test")
        if epoch in self.ckpt_epochs:
            save_weights(module.model, self.run.ckpt_path(epoch), id=self.run.id, epoch=epoch)
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.run.append_metrics(metrics_row(epoch, train, test, lr, time.perf_counter() - self.t0))
