"""Train one model of a zoo into its run dir: skip if done, resume if started."""

import logging
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig

from zoo import data as datasets
from zoo.config import validate
from zoo.lock import Locked
from zoo.models import build
from zoo.train.callbacks import Diverged, RunDirWriter
from zoo.train.capture import capture_module
from zoo.train.ids import with_identity
from zoo.train.rundir import RunDir, checkpoint_epochs, run_dir
from zoo.train.signals import trainer_options
from zoo.train.tasks import accumulation, build_module, task_of

log = logging.getLogger(__name__)


@dataclass
class Result:
    id: str
    state: str
    reason: str
    seconds: float
    path: Path


def train_model(cfg: DictConfig) -> Result:
    """Train the model `cfg` describes. Divergence and errors are recorded in the run dir's
    `status`, not raised, so one bad cell never stops a sweep."""
    validate(cfg)
    cfg = with_identity(cfg)
    run = run_dir(cfg)
    try:
        with run.lock():
            return _train_locked(cfg, run)
    except Locked as err:  # another launch of the same zoo trains it right now
        log.warning("%s: skipped: %s, which trains it", cfg.id, err)
        return Result(cfg.id, "running", str(err), 0.0, run.path)


def _train_locked(cfg: DictConfig, run: RunDir) -> Result:
    if run.is_done():
        log.info("%s: already done (%s), skipped", cfg.id, run.status()[0])
        return Result(cfg.id, *run.status(), 0.0, run.path)
    start = time.perf_counter()
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(cfg)
    run.status_path.unlink(missing_ok=True)  # a retried failure is running again
    try:
        _fit(cfg, run)
        state, reason = "ok", ""
    except Diverged as err:
        state, reason = "diverged", str(err)
    except Exception as err:  # noqa: BLE001 - recorded in the run dir, reported by the summary
        state, reason = "failed", f"{type(err).__name__}: {err}"
        (run.path / "error.log").write_text(traceback.format_exc())
        log.error("%s failed: %s (traceback in %s)", cfg.id, reason, run.path / "error.log")
    run.write_status(state, reason)
    if state != "failed":  # failed runs stay open: the next launch retries them
        run.mark_done()
    seconds = time.perf_counter() - start
    key = task_of(cfg).headline
    log.info("%s: %s %s %s=%s (%.1f s)", cfg.id, state, reason, key, (run.metrics() or [{}])[-1].get(key), seconds)
    return Result(cfg.id, state, reason, seconds, run.path)


def make_trainer(cfg: DictConfig, callbacks: list[pl.Callback], clip: bool = True) -> pl.Trainer:
    """The Lightning Trainer every model (or population) of a zoo is fitted with. `clip=False`: the
    module clips its gradients itself (Lightning clips in automatic optimization only)."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    for noise in (".*does not have many workers.*", ".*`srun` command is available.*", ".*LeafSpec.*"):
        warnings.filterwarnings("ignore", noise)
    slurm = trainer_options()
    return pl.Trainer(
        max_epochs=cfg.trainer.max_epochs,
        gradient_clip_val=cfg.trainer.gradient_clip_val if clip else None,
        accumulate_grad_batches=accumulation(cfg),
        precision=cfg.trainer.precision,
        accelerator=cfg.runtime.accelerator,
        devices=1,
        deterministic=cfg.runtime.deterministic,
        enable_progress_bar=cfg.runtime.progress_bar,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[*callbacks, *slurm["callbacks"]],
        plugins=slurm["plugins"],
    )


def _fit(cfg: DictConfig, run: RunDir) -> None:
    torch.set_num_threads(cfg.runtime.threads)
    data = datasets.load(cfg.data, cfg.paths.data)
    torch.manual_seed(cfg.seed)
    model = build(cfg.model)
    capture_module(model, cfg)
    module = build_module(model, data, cfg)
    trainer = make_trainer(cfg, [RunDirWriter(run, checkpoint_epochs(cfg))])
    resume = run.last_ckpt if run.last_ckpt.exists() else None
    if resume:
        log.info("%s: resuming from %s", cfg.id, resume)
    trainer.fit(module, ckpt_path=resume)
