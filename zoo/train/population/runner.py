"""Running a population: its Lightning fit, its members' run dirs and its resume state.

`train_population` trains configs that share a population key (zoo.train.grouping) as one module
from `build_population`: MLP classifiers (zoo.train.population.mlp), PINNs (.pinn), ResNets, ViTs
and GPTs (.nets). Lightning runs
the epochs, callbacks, checkpoints and devices; `PopulationWriter` writes every member's run dir as
`RunDirWriter` writes one model's. A diverged member (non-finite epoch train loss) is recorded and
frozen at zero weights, its slot masked out, so tensor shapes and the resume state never change.

Every population module has what PopulationWriter uses: `alive` [K] (bool buffer), `kill(k)`,
`member(k)` (member k as its own module), `evaluate(split)`, `epoch_train_metrics()` and
`lr(epoch)`, each per member.
"""

import contextlib
import logging
import math
import shutil
import time
import traceback
import warnings

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig

from zoo import data as datasets
from zoo.atomic import atomic_path, write_text
from zoo.config import validate
from zoo.lock import Locked
from zoo.train.callbacks import Diverged, metrics_row, save_weights
from zoo.train.ids import model_id, short_hash, with_identity
from zoo.train.population.mlp import MLPPopulation
from zoo.train.population.nets import NetPopulation
from zoo.train.population.pinn import PINNPopulation
from zoo.train.run import Result, checkpoint_epochs, make_trainer
from zoo.train.rundir import RunDir, run_dir, zoo_dir_of
from zoo.train.tasks import task_of

log = logging.getLogger(__name__)


class PopulationWriter(pl.Callback):
    """`RunDirWriter` for every member, in the same order per epoch: divergence check, test
    evaluation, checkpoints, metrics line, then one resume checkpoint for the whole population."""

    def __init__(self, runs: list[RunDir], ckpt_epochs: set[int], state: RunDir):
        self.runs, self.ckpt_epochs, self.state = runs, ckpt_epochs, state
        self.t0 = 0.0

    def on_train_start(self, trainer: pl.Trainer, pop: pl.LightningModule) -> None:
        # After Lightning restored the population state (if any): current_epoch = completed epochs.
        done = trainer.current_epoch
        for k in alive(pop):
            self.runs[k].truncate_metrics(done if done else -1)
        if done == 0:
            self.t0 = time.perf_counter()
            self._write_epoch(pop, 0, pop.evaluate("train"))

    def on_train_epoch_start(self, trainer: pl.Trainer, pop: pl.LightningModule) -> None:
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pop: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        train = pop.epoch_train_metrics()
        for k in alive(pop):
            if not math.isfinite(train[k]["loss"]):
                pop.kill(k)
                self.runs[k].write_status("diverged", str(Diverged(epoch)))
                self.runs[k].mark_done()
                log.info("%s: diverged in epoch %d, the rest of the population goes on", self.runs[k].id, epoch)
        if not alive(pop):
            trainer.should_stop = True
            return
        self._write_epoch(pop, epoch, train)
        self.state.path.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.state.last_ckpt) as tmp:  # a name of this process: two writers never share it
            trainer.save_checkpoint(tmp)

    def _write_epoch(self, pop: pl.LightningModule, epoch: int, train: list[dict]) -> None:
        test, lrs = pop.evaluate("test"), pop.lr(epoch)
        seconds = time.perf_counter() - self.t0  # the whole population's epoch
        for k in alive(pop):
            run = self.runs[k]
            if epoch in self.ckpt_epochs:
                save_weights(pop.member(k), run.ckpt_path(epoch), id=run.id, epoch=epoch)
            run.append_metrics(metrics_row(epoch, train[k], test[k], lrs[k], seconds))


def alive(pop: pl.LightningModule) -> list[int]:
    return pop.alive.nonzero().flatten().tolist()


def population_dir(cfgs: list[DictConfig]) -> RunDir:
    """`runs/<zoo>/populations/<8 hex of the member ids>/`: the population's resume state."""
    first = cfgs[0]
    name = short_hash({"members": sorted(cfg.id for cfg in cfgs)})
    return RunDir(zoo_dir_of(first) / "populations" / name)


def train_population(cfgs: list[DictConfig]) -> list[Result]:
    """Train configs that share a population key as one population (MLP classifiers, or PINNs: see
    `build_population`). Each member ends in its own run dir as `train_model` would leave it: done
    members are skipped, a diverged member is recorded and frozen while the rest go on, and an error
    fails the members still running (retried by the next launch). A killed population resumes from
    its state if relaunched with the same members; otherwise its members restart from epoch 0."""
    for cfg in cfgs:
        validate(cfg)
    # Configs from cell_configs carry their id already (with_identity costs ~15 ms a config).
    cfgs = [cfg if cfg.get("id") == model_id(cfg) else with_identity(cfg) for cfg in cfgs]
    runs = [run_dir(cfg) for cfg in cfgs]
    with contextlib.ExitStack() as locks:
        todo = [k for k, run in enumerate(runs) if _lock(locks, run)]
        return _train_locked(cfgs, runs, todo)


def _lock(locks: contextlib.ExitStack, run: RunDir) -> bool:
    """Take the run dir's lock for the population's lifetime; False (and why, logged) if it is taken."""
    try:
        locks.enter_context(run.lock())
        return True
    except Locked as err:
        log.warning("%s: skipped: %s, which trains it", run.id, err)
        return False


def _train_locked(cfgs: list[DictConfig], runs: list[RunDir], locked: list[int]) -> list[Result]:
    todo = [k for k in locked if not runs[k].is_done()]
    for k in set(locked) - set(todo):
        log.info("%s: already done (%s), skipped", cfgs[k].id, runs[k].status()[0])
    start = time.perf_counter()
    if todo:
        for k in todo:
            runs[k].path.mkdir(parents=True, exist_ok=True)
            runs[k].write_config(cfgs[k])
            runs[k].last_ckpt.unlink(missing_ok=True)  # a one-by-one resume state no longer matches
        state = population_dir([cfgs[k] for k in todo])
        try:
            _fit([cfgs[k] for k in todo], [runs[k] for k in todo], state)
            for k in todo:
                if not runs[k].is_done():
                    runs[k].write_status("ok")
                    runs[k].mark_done()
            shutil.rmtree(state.path, ignore_errors=True)
        except Exception as err:  # noqa: BLE001 - recorded in the run dirs, reported by the summary
            reason = f"{type(err).__name__}: {err}"
            for k in todo:
                if not runs[k].is_done():
                    write_text(runs[k].path / "error.log", traceback.format_exc())
                    runs[k].write_status("failed", reason)
            log.error("population of %d failed: %s (traceback in error.log of each member)", len(todo), reason)
    seconds = time.perf_counter() - start
    results = []
    for k, (cfg, run) in enumerate(zip(cfgs, runs)):
        state, reason = run.status()
        if k in todo:
            key = task_of(cfg).headline
            log.info(
                "%s: %s %s %s=%s (population of %d, %.1f s)",
                cfg.id,
                state,
                reason,
                key,
                (run.metrics() or [{}])[-1].get(key),
                len(todo),
                seconds,
            )
        results.append(Result(cfg.id, state, reason, seconds if k in todo else 0.0, run.path))
    return results


def build_population(cfgs: list[DictConfig]) -> pl.LightningModule:
    """The population module for `cfgs` (one population key): PINNs, MLP classifiers (hand-written
    kernels), or any other network (ResNet, ViT, GPT)."""
    first = cfgs[0]
    if task_of(first).name == "pinn":
        return PINNPopulation(cfgs)
    data = datasets.load(first.data, first.paths.data)
    return MLPPopulation(cfgs, data) if first.model.name == "mlp" else NetPopulation(cfgs, data)


def _fit(cfgs: list[DictConfig], runs: list[RunDir], state: RunDir) -> None:
    first = cfgs[0]
    torch.set_num_threads(first.runtime.threads)
    pop = build_population(cfgs)
    warnings.filterwarnings("ignore", ".*configure_optimizers.*returned `None`.*")
    # manual optimization: NetPopulation clips each member itself
    trainer = make_trainer(first, [PopulationWriter(runs, checkpoint_epochs(first), state)], clip=False)
    resume = state.last_ckpt if state.last_ckpt.exists() else None
    if resume:
        log.info("population of %d: resuming from %s", len(cfgs), resume)
    write_text(state.path / "members.txt", "".join(f"{cfg.id}\n" for cfg in cfgs))
    trainer.fit(pop, ckpt_path=resume)
