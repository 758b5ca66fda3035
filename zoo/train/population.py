"""Population training: K MLPs of one zoo trained at once, as stacked tensors, in one Lightning fit.

Every member is the model `train_model` would train alone, and ends in its own run dir:
the same init (`torch.manual_seed(seed)` then `build`), the same per-epoch shuffle
(`epoch_order(n, seed, epoch)`), the same SGD + schedule (the lr and momentum of each step
come from torch's own scheduler, per member), the same evaluation, metrics lines and
checkpoints. Members may differ in seed, width and every `optim` value but `name`, `nesterov`
and `no_decay_1d` (see `zoo.train.grouping.population_key`).

Layers are stacked as [K, out, in] (nn.Linear's layout) and narrower members are zero-padded
to the widest. A padded unit has zero weights in and out, so with an activation f(0) = 0 it
outputs 0, gets gradient 0 (also through weight decay and momentum) and stays exactly 0: the
padded member computes exactly its own narrow function.

Forward and backward are batched matmuls written out by hand, with the kernels autograd uses
for nn.Linear, cross-entropy and ReLU/tanh, and the SGD update uses the ops of
`torch.optim.SGD`; an unpadded member therefore gets bitwise the weights it gets alone on
CPU (padded ones agree to float tolerance: the matmuls sum over more, zero, terms). Measured
on 2 cores: autograd over the stacked graph was 1.5-2x slower than the hand-written backward.

PINN populations (zoo.train.pinn_population: stacked PINNs, autograd, Adam) run through the same
`train_population`, run dirs, `PopulationWriter` and resume state; `build_population` picks the module.

Lightning runs the epochs, callbacks, checkpoints and devices; one Lightning step is one epoch
of every member (manual optimization). A diverged member (non-finite epoch train loss) is recorded and frozen at
zero weights, its slot masked out, so tensor shapes and the resume state never change.
"""

import json
import logging
import math
import shutil
import time
import traceback
import warnings
from collections.abc import Callable, Iterator

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from zoo import data as datasets
from zoo.atomic import write_text
from zoo.config import validate
from zoo.models import build
from zoo.train.callbacks import Diverged, headline, metrics_row, save_weights
from zoo.train.ids import model_id, short_hash, with_identity
from zoo.train.optim import build_optimizer
from zoo.train.rundir import RunDir, run_dir, zoo_dir_of
from zoo.train.run import Result, checkpoint_epochs, make_trainer

log = logging.getLogger(__name__)

# Gradient of each activation from its output, as autograd computes it (f(0) = 0 for both).
ACTIVATION_BACKWARD: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "relu": lambda grad, out: torch.ops.aten.threshold_backward(grad, out, 0),
    "tanh": torch.ops.aten.tanh_backward,
}
ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


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


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def stack_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """[K, *largest shape]: member tensors stacked, each zero-padded at the end of every dim."""
    shape = [max(sizes) for sizes in zip(*(t.shape for t in tensors))]
    out = torch.zeros(len(tensors), *shape)
    for k, t in enumerate(tensors):
        out[(k, *map(slice, t.shape))] = t
    return out


class EpochOrders:
    """One item per epoch: every member's shuffle of the n training samples, [K, n]. Row k is the
    order `Batches` gives member k alone in epoch `epoch()`."""

    def __init__(self, n: int, seeds: list[int], epoch: Callable[[], int]):
        self.n, self.seeds, self.epoch = n, seeds, epoch

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[torch.Tensor]:
        # A generator: the epoch is read when the item is drawn, as in `Batches`. On resume Lightning
        # calls iter() before it moves `current_epoch` past the restored epoch.
        yield torch.stack([datasets.epoch_order(self.n, seed, self.epoch()) for seed in self.seeds])


class StackedMLPs(pl.LightningModule):
    """What every population module shares: K members as `members` (their own modules), stacked
    weights `w` [K, out, in] and biases `b` [K, 1, out] (narrower members zero-padded), and the
    lr of every step in `lrs`."""

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
                    lin.bias.copy_(self.b[i][k, 0, :len(lin.bias)])
        return model


class Population(StackedMLPs):
    """K MLP classifiers with one depth, activation and bias setting, trained as one.

    Stacked state: weights [K, out, in], biases [K, 1, out], SGD momenta alike; per-member
    hyperparameters are [K, 1, 1] tensors, so one op updates every member.
    """

    def __init__(self, cfgs: list[DictConfig], data: datasets.TensorData):
        super().__init__()
        self.automatic_optimization = False
        first = cfgs[0]
        self.seeds, self.k = [cfg.seed for cfg in cfgs], len(cfgs)
        self.batch_size, self.eval_batch_size = first.data.batch_size, first.data.eval_batch_size
        self.act = first.model.activation
        self.nesterov = first.optim.get("nesterov", False)
        self.decay_biases = not first.optim.get("no_decay_1d", False)
        self.members = []  # each member as its own module, as train_model builds it (kept on the CPU)
        for cfg in cfgs:
            torch.manual_seed(cfg.seed)
            self.members.append(build(cfg.model))
        layers = list(zip(*map(linears, self.members)))
        self.weights = nn.ParameterList(stack_padded([lin.weight for lin in layer]) for layer in layers)
        self.biases = nn.ParameterList(stack_padded([lin.bias[None] for lin in layer]) for layer in layers
                                       if layer[0].bias is not None)
        self.momenta = nn.ParameterList(torch.zeros_like(p) for p in [*self.weights, *self.biases])
        for p in self.parameters():
            p.requires_grad_(False)  # updated by hand in training_step
        # Plain lists for the hot loop (ParameterList indexing costs microseconds); device moves
        # keep these Parameter objects and swap their data.
        self.w, self.b, self.v = list(self.weights), list(self.biases), list(self.momenta)
        self.register_buffer("alive", torch.ones(len(cfgs), dtype=torch.bool))
        self.steps_per_epoch = -(-len(data.x_train) // self.batch_size)
        total_steps = first.trainer.max_epochs * self.steps_per_epoch
        tables = {}  # members with the same optim config share one table
        for cfg in cfgs:
            if _plain(cfg.optim) not in tables:
                tables[_plain(cfg.optim)] = schedule(cfg.optim, total_steps)
        rows = torch.stack([tables[_plain(cfg.optim)] for cfg in cfgs], dim=1)  # [steps + 1, K, 2]
        self.register_buffer("lrs", rows[..., 0], persistent=False)  # float64: the logged values
        self.register_buffer("hyper", rows.permute(0, 2, 1).float()[..., None, None], persistent=False)
        decay = torch.tensor([float(cfg.optim.weight_decay) for cfg in cfgs])
        self.register_buffer("weight_decay", decay[:, None, None], persistent=False)
        for split in ("train", "test"):
            x, y = data.split(split)
            self.register_buffer(f"x_{split}", x, persistent=False)
            self.register_buffer(f"y_{split}", y, persistent=False)
        self.loss_sum = self.correct = None  # [K] each, over the current epoch

    def configure_optimizers(self) -> None:
        return None  # SGD is applied by hand: per-member hyperparameters on stacked tensors

    def train_dataloader(self) -> EpochOrders:
        return EpochOrders(len(self.x_train), self.seeds, epoch=lambda: self.current_epoch)

    # -- math ------------------------------------------------------------------
    def layer_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Inputs x [K, B, in] → every layer's input, then the logits, each [K, B, features]."""
        acts, last = [x], len(self.w) - 1
        for i, w in enumerate(self.w):
            z = torch.baddbmm(self.b[i], acts[-1], w.mT) if self.b else torch.bmm(acts[-1], w.mT)
            acts.append(z if i == last else ACTIVATIONS[self.act](z))
        return acts

    def gradients(self, acts: list[torch.Tensor], grad: torch.Tensor) -> list[torch.Tensor]:
        """Backward from dLoss/dlogits to the gradients of the weights (then biases), as autograd
        does it for nn.Linear: weight grad = grad^T @ input, input grad = grad @ weight."""
        weights, biases = [], []
        for i in reversed(range(len(self.w))):
            weights.insert(0, torch.bmm(grad.mT, acts[i]))
            if self.b:
                biases.insert(0, grad.sum(1, keepdim=True))
            if i:
                grad = ACTIVATION_BACKWARD[self.act](torch.bmm(grad, self.w[i]), acts[i])
        return weights + biases

    def sgd_step(self, grads: list[torch.Tensor], step: int) -> None:
        """torch.optim.SGD's update (dampening 0) with each member's lr, momentum and weight decay.
        `addcmul` with a [K, 1, 1] factor runs the same fused kernel as `add(..., alpha=)`."""
        lr, momentum = self.hyper[step]
        neg_lr = -lr * self.alive[:, None, None]  # diverged members stay frozen
        for i, (p, v, g) in enumerate(zip(self.w + self.b, self.v, grads)):
            if i < len(self.w) or self.decay_biases:
                g = torch.addcmul(g, p, self.weight_decay)  # grad.add(param, alpha=wd)
            v.mul_(momentum).add_(g)  # first step: v = 0, so v = g, as torch's clone
            p.addcmul_(torch.addcmul(g, v, momentum) if self.nesterov else v, neg_lr)

    # -- training --------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self.loss_sum = torch.zeros(self.k, device=self.device)
        self.correct = torch.zeros(self.k, device=self.device)

    @torch.no_grad()
    def training_step(self, orders: torch.Tensor, batch_idx: int) -> None:
        """One epoch: every member's mini-batches in its own order. (One Lightning step per epoch,
        not per batch: Lightning's ~0.17 ms a step is as much as a narrow population's step.)"""
        first = self.current_epoch * self.steps_per_epoch
        for step, idx in enumerate(orders.split(self.batch_size, dim=1), start=first):
            x, y = self.x_train[idx], self.y_train[idx]
            acts = self.layer_inputs(x)
            loss, correct, grad = cross_entropy(acts[-1], y)
            self.sgd_step(self.gradients(acts, grad), step)
            self.loss_sum.add_(loss * y.shape[1])  # as Classifier: the batch mean times its size
            self.correct.add_(correct)

    def epoch_train_metrics(self) -> list[dict[str, float]]:
        n = len(self.x_train)
        return [{"loss": s / n, "acc": c / n} for s, c in zip(self.loss_sum.tolist(), self.correct.tolist())]

    @torch.no_grad()
    def evaluate(self, split: str) -> list[dict[str, float]]:
        """`zoo.train.evaluate` for every member: mean cross-entropy and accuracy over `split`."""
        x_all, y_all = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
        loss, correct = [0.0] * self.k, [0] * self.k
        for start in range(0, len(x_all), self.eval_batch_size):
            x, y = x_all[start:start + self.eval_batch_size], y_all[start:start + self.eval_batch_size]
            logits = self.layer_inputs(x.expand(self.k, *x.shape))[-1]
            sums = torch.stack([F.cross_entropy(member, y, reduction="sum") for member in logits]).tolist()
            loss = [a + b for a, b in zip(loss, sums)]
            correct = [a + b for a, b in zip(correct, (logits.argmax(-1) == y).sum(1).tolist())]
        return [{"loss": s / len(y_all), "acc": c / len(y_all)} for s, c in zip(loss, correct)]

    @torch.no_grad()
    def kill(self, k: int) -> None:
        """Freeze member k at zero weights: it stays finite, and slots never mix."""
        self.alive[k] = False
        for p in self.parameters():  # weights, biases and momenta
            p[k] = 0


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per member: mean cross-entropy [K], correct count [K] and dLoss/dlogits [K, B, C], the
    gradient computed with autograd's kernels (nll_loss backward, then log_softmax backward)."""
    logp = torch.log_softmax(logits, -1)
    target = y.unsqueeze(-1)
    loss = -logp.gather(-1, target).squeeze(-1).mean(1)
    grad = torch.zeros_like(logp).scatter_(-1, target, -1.0 / y.shape[1])
    grad = torch._log_softmax_backward_data(grad, logp, -1, logp.dtype)
    return loss, (logits.argmax(-1) == y).sum(1).to(loss.dtype), grad


class PopulationWriter(pl.Callback):
    """`RunDirWriter` for every member, in the same order per epoch: divergence check, test
    evaluation, checkpoints, metrics line, then one resume checkpoint for the whole population."""

    def __init__(self, runs: list[RunDir], ckpt_epochs: set[int], state: RunDir):
        self.runs, self.ckpt_epochs, self.state = runs, ckpt_epochs, state
        self.t0 = 0.0

    def on_train_start(self, trainer: pl.Trainer, pop: Population) -> None:
        # After Lightning restored the population state (if any): current_epoch = completed epochs.
        done = trainer.current_epoch
        for k in alive(pop):
            self.runs[k].truncate_metrics(done if done else -1)
        if done == 0:
            self.t0 = time.perf_counter()
            self._write_epoch(pop, 0, pop.evaluate("train"))

    def on_train_epoch_start(self, trainer: pl.Trainer, pop: Population) -> None:
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pop: Population) -> None:
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
        tmp = self.state.path / ".last.ckpt.tmp"
        trainer.save_checkpoint(tmp)
        tmp.replace(self.state.last_ckpt)

    def _write_epoch(self, pop: Population, epoch: int, train: list[dict]) -> None:
        test, lrs = pop.evaluate("test"), pop.lr(epoch)
        seconds = time.perf_counter() - self.t0  # the whole population's epoch
        for k in alive(pop):
            run = self.runs[k]
            if epoch in self.ckpt_epochs:
                save_weights(pop.member(k), run.ckpt_path(epoch), id=run.id, epoch=epoch)
            run.append_metrics(metrics_row(epoch, train[k], test[k], lrs[k], seconds))


def _plain(cfg: DictConfig) -> str:
    return json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True)


def alive(pop: Population) -> list[int]:
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
    todo = [k for k, run in enumerate(runs) if not run.is_done()]
    for k in set(range(len(cfgs))) - set(todo):
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
            key, value = headline((run.metrics() or [{}])[-1])
            log.info("%s: %s %s %s=%s (population of %d, %.1f s)", cfg.id, state, reason, key, value,
                     len(todo), seconds)
        results.append(Result(cfg.id, state, reason, seconds if k in todo else 0.0, run.path))
    return results


def build_population(cfgs: list[DictConfig]) -> pl.LightningModule:
    """The population module for the task of `cfgs` (data.task): classifiers here, PINNs in
    zoo.train.pinn_population. Every module has what PopulationWriter uses: `alive`, `kill(k)`,
    `member(k)`, `evaluate(split)`, `epoch_train_metrics()` and `lr(epoch)`, each per member."""
    first = cfgs[0]
    if first.data.get("task", "classify") == "pinn":
        from zoo.train.pinn_population import PINNPopulation  # imported here: that module imports this one

        return PINNPopulation(cfgs)
    return Population(cfgs, datasets.load(first.data, first.paths.data))


def _fit(cfgs: list[DictConfig], runs: list[RunDir], state: RunDir) -> None:
    first = cfgs[0]
    torch.set_num_threads(first.runtime.threads)
    pop = build_population(cfgs)
    warnings.filterwarnings("ignore", ".*configure_optimizers.*returned `None`.*")
    trainer = make_trainer(first, [PopulationWriter(runs, checkpoint_epochs(first), state)])
    resume = state.last_ckpt if state.last_ckpt.exists() else None
    if resume:
        log.info("population of %d: resuming from %s", len(cfgs), resume)
    write_text(state.path / "members.txt", "".join(f"{cfg.id}\n" for cfg in cfgs))
    trainer.fit(pop, ckpt_path=resume)
