"""The dry run of a zoo (`zoo-plan`): what training it costs, before anything runs.

Counts models, checkpoints and SLURM array tasks; builds each distinct architecture once on the
meta device (no memory, no init cost) to count parameters and checkpoint bytes; measures the FLOPs
of one forward/backward per architecture and input shape there, with torch's own per-op formulas,
and scales them to a training run; turns FLOPs into device-hours with the cluster profile
(`conf/cluster/`: `tflops` x `mfu` per array task, plus `step_ms` per optimizer step, which bounds
small models at small batches); and writes the sbatch arrays that would train
the zoo, split to respect the cluster's MaxArraySize. One array task trains one grid cell
(`python -m zoo.cli.cell INDEX ...`, INDEX as in `zoo.sweep.cell_configs`).
"""

import functools
import json
import math
import shlex
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from zoo.config import population_setting, task_memory
from zoo.data import SPLIT_SIZES
from zoo.data.convection import SMOKE as PINN_SMOKE
from zoo.data.images import SMOKE_SAMPLES
from zoo.data.tokens import SMOKE_WINDOWS
from zoo.models import build
from zoo.sweep import cell_configs
from zoo.train import grouping
from zoo.train.pinn import pinn_terms
from zoo.train.run import checkpoint_epochs
from zoo.train.tasks import accumulation, task_of

SHARD_OVERHEAD = 4096  # bytes per shard sample beyond its weights: meta.json and tar headers
OPTIMIZER_SLOTS = {"sgd": 1, "adam": 2, "adamw": 2}  # state tensors per parameter in last.ckpt


@dataclass
class Cell:
    cfg: DictConfig
    params: int
    weight_bytes: int
    flops: float  # one training run
    steps: int  # optimizer steps of one training run
    step_samples: int  # samples per (micro-)batch
    fixed_bytes: float  # memory of a training step: weights, gradients, optimizer state (PINN: all) ...
    sample_bytes: float  # ... plus the activations of each sample of the micro-batch
    checkpoints: int
    population: int = 1  # models trained with it as one population (zoo.train.grouping)

    def memory(self, micro_batch: int | None = None) -> float:
        """Bytes one training step needs on the device, at `micro_batch` samples (default: as configured)."""
        return self.fixed_bytes + self.sample_bytes * (micro_batch or self.step_samples)


@dataclass
class Plan:
    overrides: list[str]
    cells: list[Cell]

    @property
    def cluster(self) -> DictConfig:
        return self.cells[0].cfg.cluster

    def hours(self, cell: Cell, population: bool = True) -> float:
        """Device-hours of one cell's training run on one array task of the cluster. A population
        pays the per-step overhead once for all its members: each member carries 1/K of it; with
        runtime.compile (zoo.train.capture) that overhead is the cluster's `captured_step_ms`."""
        cluster, k = self.cluster, cell.population if population else 1
        captured = population and cell.cfg.runtime.get("compile")
        step_ms = cluster.get("captured_step_ms", cluster.step_ms) if captured else cluster.step_ms
        return (cell.flops / (cluster.tflops * 1e12 * cluster.mfu) + cell.steps * step_ms / 1e3 / k) / 3600


@dataclass
class Work:
    """One training run in measurable pieces. `batch(n)` is a meta training batch of n samples;
    the run trains `train_samples` samples in `steps` steps of `step_samples` (micro-batch) and
    evaluates `eval_samples` inputs. For a PINN a training "sample" is its whole point set (every
    step is full-batch) and an evaluation sample is one test point."""

    batch: Callable[[int], tuple]
    train_samples: float
    step_samples: int
    steps: int
    eval_samples: float


def plan_zoo(overrides: list[str]) -> Plan:
    """The plan of the sweep `overrides` select (e.g. `["zoo=cifar10_resnet18", "cluster=example_gpu"]`)."""
    cells = []
    cfgs = cell_configs(overrides)
    population = _populations(cfgs)
    for cfg in cfgs:
        model, work = _key(cfg.model), _work(cfg)
        params, weight_bytes = _size(model)
        task, beta = task_of(cfg).name, float(cfg.data.get("beta", 0))
        fixed = weight_bytes * (2 + OPTIMIZER_SLOTS.get(cfg.optim.name, 2))
        if task == "pinn":  # full-batch steps; evaluation runs the model on single (x, t) points
            _, flops, activations = _step(model, _shapes(work.batch(1)), task, beta)
            fixed, per_sample = fixed + activations, 0.0
            eval_flops = _forward_flops(model, (((1, 2), torch.float32),))
        else:  # per sample, from a batch of 2; evaluation is the training forward pass
            eval_flops, flops, per_sample = (v / 2 for v in _step(model, _shapes(work.batch(2)), task, beta))
        cells.append(
            Cell(
                cfg,
                params,
                weight_bytes,
                flops * work.train_samples + eval_flops * work.eval_samples,
                work.steps,
                work.step_samples,
                fixed,
                per_sample,
                len(checkpoint_epochs(cfg)),
                population[cfg.id],
            )
        )
    return Plan(list(overrides), cells)


def _populations(cfgs: list[DictConfig]) -> dict[str, int]:
    """K of each model's population as the grouping would train it on one task of the cluster
    (1 with runtime.population=off, or for cells that cannot share)."""
    if population_setting(cfgs[0]) == "off":
        return {cfg.id: 1 for cfg in cfgs}
    if cfgs[0].cluster.gpus_per_task:  # the tasks train on GPUs (`sbatch_lines` says so): group for them
        cfgs = [OmegaConf.merge(cfg, {"runtime": {"accelerator": "gpu"}}) for cfg in cfgs]
    return {cfg.id: len(group) for group in grouping.populations(cfgs, memory=task_memory(cfgs[0])) for cfg in group}


def _work(cfg: DictConfig) -> Work:
    data, epochs, task = cfg.data, cfg.trainer.max_epochs, task_of(cfg).name
    meta = functools.partial(torch.zeros, device="meta")
    if task == "pinn":
        sizes = PINN_SMOKE if data.get("smoke") else data
        steps = data.steps_per_epoch * epochs
        points = (
            meta(sizes["n_collocation"], 2),
            meta(sizes["grid_x"], 2),
            meta(sizes["grid_x"], 1),
            meta(sizes["grid_t"], 2),
            meta(sizes["grid_t"], 2),
        )
        return Work(
            lambda n: points,
            steps + 1,
            1,
            steps,  # + 1: the loss at init
            sizes["grid_x"] * sizes["grid_t"] * (epochs + 1),
        )
    step_samples = data.batch_size // accumulation(cfg)
    if task == "lm":
        windows = SMOKE_WINDOWS if data.get("smoke") else data.tokens_per_epoch // data.context
        evals = SMOKE_WINDOWS if data.get("smoke") else data.eval_tokens // data.context
        tokens = functools.partial(meta, dtype=torch.long)
        return Work(
            lambda n: (tokens(n, data.context), tokens(n, data.context)),
            windows * epochs,
            step_samples,
            -(-windows // data.batch_size) * epochs,
            evals * (epochs + 2),
        )
    n_train, n_test = SPLIT_SIZES[data.name]
    n_train = data.get("n_train") or n_train
    if data.get("smoke"):
        n_train, n_test = min(n_train, SMOKE_SAMPLES), min(n_test, SMOKE_SAMPLES)
    shape = (data.channels, data.image_size, data.image_size) if "image_size" in data else (data.in_dim,)
    # per epoch: train on n_train, evaluate n_test; at epoch 0 also evaluate n_train
    return Work(
        lambda n: (meta(n, *shape), meta(n, dtype=torch.long)),
        n_train * epochs,
        step_samples,
        -(-n_train // data.batch_size) * epochs,
        n_test * (epochs + 1) + n_train,
    )


def _cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    return F.cross_entropy(model(x).flatten(0, -2), y.flatten())


def _pinn_loss(model: nn.Module, *batch: torch.Tensor, beta: float) -> torch.Tensor:
    return sum(pinn_terms(model, beta, *batch).values())


def _key(model_cfg: DictConfig) -> str:
    return json.dumps(OmegaConf.to_container(model_cfg, resolve=True), sort_keys=True)


def _shapes(batch: tuple) -> tuple:
    return tuple((tuple(t.shape), t.dtype) for t in batch)


def _meta_batch(shapes: tuple) -> list[torch.Tensor]:
    return [torch.zeros(shape, dtype=dtype, device="meta") for shape, dtype in shapes]


@functools.cache
def _meta_model(model_key: str) -> nn.Module:
    with torch.device("meta"):
        return build(json.loads(model_key))


@functools.cache
def _size(model_key: str) -> tuple[int, int]:
    """(parameters, bytes of the state dict as checkpointed)."""
    model = _meta_model(model_key)
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return sum(p.numel() for p in model.parameters()), weight_bytes


@functools.cache
def _step(model_key: str, shapes: tuple, task: str, beta: float) -> tuple[float, float, int]:
    """One training step of the task's loss on a meta batch: FLOPs of the forward pass, FLOPs of
    forward + backward, and the activation bytes autograd saves for the backward pass."""
    model, saved = _meta_model(model_key), [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, nn.Parameter) and not isinstance(t._base, nn.Parameter):  # weights are counted apart
            saved[0] += t.numel() * t.element_size()
        return t

    loss_fn = _pinn_loss if task == "pinn" else _cross_entropy
    with FlopCount() as count:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_fn(model, *_meta_batch(shapes), beta=beta)
        forward = count.total
        loss.backward()
    model.zero_grad(set_to_none=True)
    return forward, count.total, saved[0]


@functools.cache
def _forward_flops(model_key: str, shapes: tuple) -> float:
    with FlopCount() as count, torch.no_grad():
        _meta_model(model_key)(*_meta_batch(shapes))
    return count.total


class FlopCount(TorchDispatchMode):
    """FLOPs of the ops run inside it, by torch.utils.flop_counter's formulas (matmuls, convolutions,
    attention). `FlopCounterMode` itself cannot follow `autograd.grad` (its module tracker), which
    the PINN loss needs."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


# -- SLURM ------------------------------------------------------------------------------------
def array_chunks(n: int, max_array_size: int) -> list[tuple[int, int]]:
    """`(offset, count)` arrays covering tasks 0..n-1, each indexed 0..count-1 < MaxArraySize."""
    return [(start, min(max_array_size, n - start)) for start in range(0, n, max_array_size)]


def sbatch_lines(plan: Plan) -> list[str]:
    """The sbatch commands that train the zoo: one array task per cell, `--time` the profile's `timeout_min`."""
    cluster, name = plan.cluster, plan.cells[0].cfg.zoo.name
    minutes = cluster.timeout_min
    runtime = [
        f"runtime.accelerator={'gpu' if cluster.gpus_per_task else 'cpu'}",
        f"runtime.threads={cluster.cpus_per_task}",
    ]
    options = [
        f"--job-name=zoo-{name}",
        f"--partition={cluster.partition}",
        f"--cpus-per-task={cluster.cpus_per_task}",
        f"--mem={cluster.mem_gb}G",
        f"--time={minutes // 60}:{minutes % 60:02d}:00",
    ]
    if cluster.gpus_per_task:
        options.append(f"--gres=gpu:{cluster.gpus_per_task}")
    lines = []
    for offset, count in array_chunks(len(plan.cells), cluster.max_array_size):
        cell = f"$(({offset} + SLURM_ARRAY_TASK_ID))"  # expanded in the job: the cell this task trains
        task = f"python -m zoo.cli.cell {cell} {shlex.join([*plan.overrides, *runtime])}"
        array = f"--array=0-{count - 1}%{cluster.array_parallelism}"
        lines.append(shlex.join(["sbatch", *options, array, f"--wrap={task}"]))
    return lines


# -- report -----------------------------------------------------------------------------------
def format_plan(plan: Plan) -> str:
    cells, cluster = plan.cells, plan.cluster
    first = cells[0].cfg
    hours = [plan.hours(c) for c in cells]
    smallest, largest = min(cells, key=lambda c: c.params), max(cells, key=lambda c: c.params)
    ckpts = sum(c.checkpoints for c in cells)
    ckpt_bytes = sum(c.checkpoints * c.weight_bytes for c in cells)
    resume_bytes = sum(c.weight_bytes * (1 + OPTIMIZER_SLOTS.get(c.cfg.optim.name, 2)) for c in cells)
    per_model = sorted({c.checkpoints for c in cells})
    device = f"GPU x{cluster.gpus_per_task}" if cluster.gpus_per_task else f"{cluster.cpus_per_task} CPUs"
    arrays = array_chunks(len(cells), cluster.max_array_size)
    lines = [
        f"zoo: {first.zoo.name} (cluster: {cluster.name})",
        f"grid: {_grid(plan)}",
        f"models: {len(cells)}",
        f"checkpoints: {ckpts} ({'/'.join(map(str, per_model))} per model)",
        f"array tasks: {len(cells)} in {len(arrays)} array(s) (MaxArraySize {cluster.max_array_size})",
        f"parameters per cell: min {smallest.params:,} ({_prefix(smallest)}), "
        f"max {largest.params:,} ({_prefix(largest)})",
        f"training FLOPs per model: min {min(c.flops for c in cells):.3g}, max {max(c.flops for c in cells):.3g}, "
        f"total {sum(c.flops for c in cells):.3g}",
        f"device-hours ({device} per task at {cluster.tflops:g} TFLOP/s x MFU {cluster.mfu:g}): "
        f"total {sum(hours):,.3g}, max per model {max(hours):,.3g}",
        _population_line(plan),
        f"storage: checkpoints {_bytes(ckpt_bytes)}, resume state (last.ckpt) {_bytes(resume_bytes)}, "
        f"shards ~{_bytes(ckpt_bytes + ckpts * SHARD_OVERHEAD)}",
        memory_line(plan),
    ]
    slow = sum(h * 60 > cluster.timeout_min for h in hours)
    if slow:
        lines.append(
            f"note: {slow} model(s) take longer than timeout_min={cluster.timeout_min} (estimated): "
            "they resume from last.ckpt when their task is requeued or resubmitted"
        )
    return "\n".join(
        [
            *lines,
            "sbatch (one cell per array task; `zoo-train -m ... hydra/launcher=slurm` submits "
            "such arrays through submitit):",
            *(f"  {line}" for line in sbatch_lines(plan)),
        ]
    )


def _population_line(plan: Plan) -> str:
    groups = sum(1 / c.population for c in plan.cells)
    alone = sum(plan.hours(c, population=False) for c in plan.cells)
    if round(groups) == len(plan.cells):
        return "populations: none (every model trains alone; runtime.population or its architecture)"
    return (
        f"populations: {len(plan.cells)} models in {round(groups)} populations "
        f"(runtime.population={plan.cells[0].cfg.runtime.population}); one by one: {alone:,.3g} device-hours"
    )


def memory_line(plan: Plan) -> str:
    """The largest training step's memory against the task's device memory, and the
    `runtime.micro_batch_size` (a power of two: it divides every batch size of the grids) that fits."""
    cells = plan.cells
    limit = task_memory(cells[0].cfg) or grouping.free_memory(cells[0].cfg)
    worst = max(cells, key=Cell.memory)
    line = f"memory per training step: max {_bytes(worst.memory())} ({_prefix(worst)}), {_bytes(limit)} per task"
    over = [c for c in cells if c.memory() > limit]
    if not over:
        return line
    room = min((limit - c.fixed_bytes) / c.sample_bytes if c.sample_bytes else 0 for c in over)
    if room < 1:
        return f"{line}; {len(over)} cell(s) do not fit even one sample per step"
    micro = 2 ** int(math.log2(room))
    return f"{line}; {len(over)} cell(s) need runtime.micro_batch_size={micro} (gradient accumulation)"


def _grid(plan: Plan) -> str:
    axes = [*plan.cells[0].cfg.zoo.axes, "seed"]
    values = {axis: sorted({OmegaConf.select(c.cfg, axis) for c in plan.cells}) for axis in axes}
    return " x ".join(f"{axis} {_span(v)} ({len(v)})" for axis, v in values.items())


def _span(values: list) -> str:
    return str(values[0]) if len(values) == 1 else f"{values[0]}..{values[-1]}"


def _prefix(cell: Cell) -> str:
    return cell.cfg.id.rsplit("-", 1)[0]


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}"
        n /= 1024
