"""Writes the run dir as training goes: metrics lines, safetensors checkpoints, `last.ckpt`."""

import json
import math
import time

import lightning.pytorch as pl
from safetensors.torch import save

from zoo.atomic import atomic_path, atomic_write
from zoo.train.rundir import RunDir, headline  # noqa: F401 (headline: for run.py, population.py)


class Diverged(RuntimeError):
    def __init__(self, epoch: int):
        super().__init__(f"non-finite train loss in epoch {epoch}")
        self.epoch = epoch


def save_weights(model, path, **metadata) -> None:
    """State dict as safetensors with a canonical header, written atomically (temp + rename)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_write(path) as f:
        f.write(canonical(save(state, metadata={k: str(v) for k, v in metadata.items()})))


def canonical(data: bytes) -> bytes:
    """Safetensors bytes with the header's keys sorted. safetensors writes `__metadata__` in hash-map
    order, random per process, so the same tensors gave different bytes (and sha256s) each time."""
    size = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + size]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # tensor data stays 8-byte aligned
    return len(header).to_bytes(8, "little") + header + data[8 + size :]


def metrics_row(epoch: int, train: dict, test: dict, lr: float, seconds: float) -> dict:
    """One line of metrics.jsonl: `train_<k>`, `test_<k>` per metric of the task (classifiers: loss, acc)."""
    return {
        "epoch": epoch,
        **{f"train_{k}": v for k, v in train.items()},
        **{f"test_{k}": v for k, v in test.items()},
        "lr": lr,
        "seconds": round(seconds, 4),
    }


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
        with atomic_path(self.run.last_ckpt) as tmp:  # a name of this process: two writers never share it
            trainer.save_checkpoint(tmp)

    def _write_epoch(self, trainer, module, epoch: int, train: dict) -> None:
        test = module.evaluate("test")
        if epoch in self.ckpt_epochs:
            save_weights(module.model, self.run.ckpt_path(epoch), id=self.run.id, epoch=epoch)
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.run.append_metrics(metrics_row(epoch, train, test, lr, time.perf_counter() - self.t0))
