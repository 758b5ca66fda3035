"""What a model is trained to do, picked by `data.task` (default `classify`): the LightningModule
that trains it. Every module has `.model`, `evaluate(split) -> metrics` and `epoch_train_metrics()`,
so every task writes the same run dir; metrics.jsonl has `train_<k>` / `test_<k>` for its metrics:

    classify  cross-entropy on (x, y) batches (mnist1d, images)    loss, acc
    lm        next-token cross-entropy on random context windows  loss, acc (next-token accuracy)
              (a language model classifies the next token at every position: the same module)
    pinn      residual + initial + boundary loss (zoo.train.pinn)  train: loss, residual, initial,
                                                                   boundary; test: loss, rel_l2
"""

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig
from torch import nn

from zoo.config import ConfigError
from zoo.train.module import Classifier
from zoo.train.pinn import PINN


def accumulation(cfg: DictConfig) -> int:
    """Micro-batches per optimizer step. `runtime.micro_batch_size` splits every batch so that large
    cells fit in GPU memory (gradient accumulation: the same batches and steps; BatchNorm then
    normalizes per micro-batch, as under data parallelism without SyncBatchNorm)."""
    micro, batch = cfg.runtime.get("micro_batch_size"), cfg.data.get("batch_size")
    if not micro or not batch or micro >= batch:
        return 1
    if batch % micro:
        raise ConfigError(f"runtime.micro_batch_size={micro} does not divide data.batch_size={batch}")
    return batch // micro


def _classifier(model: nn.Module, data: Any, cfg: DictConfig) -> Classifier:
    return Classifier(model, data, cfg.optim, batch_size=cfg.data.batch_size, max_epochs=cfg.trainer.max_epochs,
                      seed=cfg.seed, eval_batch_size=cfg.data.eval_batch_size, accumulate=accumulation(cfg))


def _pinn(model: nn.Module, data: Any, cfg: DictConfig) -> PINN:
    return PINN(model, data, cfg.optim, max_epochs=cfg.trainer.max_epochs,
                steps_per_epoch=cfg.data.steps_per_epoch)


TASKS: dict[str, Callable[[nn.Module, Any, DictConfig], pl.LightningModule]] = {
    "classify": _classifier, "lm": _classifier, "pinn": _pinn}


def task_of(cfg: DictConfig) -> str:
    task = cfg.data.get("task", "classify")
    if task not in TASKS:
        raise ValueError(f"unknown data.task={task!r}; choose one of {sorted(TASKS)}")
    return task


def build_module(model: nn.Module, data: Any, cfg: DictConfig) -> pl.LightningModule:
    """The LightningModule that trains `model` on `data` as `cfg` says."""
    return TASKS[task_of(cfg)](model, data, cfg)
