"""Which cells of a sweep train together as one population, and training a sweep that way.

Cells can share a population when `population_key` matches: the same architecture up to
width, data, batch size, epochs, checkpoints and optimizer type; members differ in seed,
width and optim values. `runtime.population` (auto | off | max K) turns this on or off.

In a width x batch-size grid only the seeds of one cell share a shape, which gives K = 2-3.
So, within one key (measured on 2 CPU cores, MLPs on mnist1d; see benchmarks/population.py):

- Small models are padded together: every member whose model has at most PAD_PARAMS
  parameters joins one population, zero-padded to the widest of them. Such models are
  overhead-bound (a K=2 step at batch 32 took the same ~0.33 ms from width 2 to 64), so padding
  costs little and K becomes every narrow cell of a row (demo zoo: widths 2-32, K = 10).
  Wider models are compute-bound, gain little from stacking and would pay for padding, so each
  width is a population of its own (its seeds, and any optim values of the row).
- K is capped by `runtime.population` (when a number), by MEMORY_FRACTION of the free memory
  shared by the parallel workers (GPU memory on a GPU; `member_bytes` per member), and on a CPU
  by CACHE_PARAMS stacked parameters: weights, gradients and momenta then stay in cache
  (measured: width 256 at batch 8 trained fastest per member at K = 4-8, ~4x slower at K = 32).
  A larger bucket is split into near-equal populations.

PINNs (data.task=pinn, zoo.train.population.pinn) share a population when everything but seed,
data.beta and optim values (not optim.name / no_decay_1d) matches: the whole beta x lr x seed grid of
one architecture (width included: members are not padded) is one bucket. A PINN step is full-batch
(every member runs on all its points), so it is compute-bound: measured on 2 CPU cores, smoke-sized
cells (64 points a step) cost 3 ms a step alone, 0.4-0.5 ms a member at K >= 16, flat from K = 64 to
350; full-sized ones (1,456 points) cost ~8 ms a member-step at any K. So K is bounded by memory only
(`member_bytes`: activations of a step and of the test grid dominate), and the bucket is split into a
multiple of `workers` near-equal populations, so that every worker trains one.
"""

import json
import logging
import math
import os
from collections import defaultdict
from functools import cache
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from zoo import plan_costs
from zoo.config import accumulation, population_setting, task_name
from zoo.parallel import process_pool
from zoo.sizes import PINN_SMOKE, SPLIT_SIZES
from zoo.train.ids import to_plain
from zoo.train.rundir import run_dir

if TYPE_CHECKING:
    from zoo.train.run import Result

# torch and Lightning are imported where models are built or trained: zoo-plan groups a sweep
# without them (the figures it needs come from zoo.plan_costs).

log = logging.getLogger(__name__)

# What the population trainers implement (zoo.train.population.mlp ACTIVATION_BACKWARD, .pinn
# ACTIVATIONS and OPTIMIZERS; tests/test_plan.py checks they agree), by name: no torch needed.
MLP_ACTIVATIONS = ("relu", "tanh")
PINN_ACTIVATIONS = ("relu", "tanh", "gelu")
PINN_OPTIMIZERS = ("adam", "adamw")

PAD_PARAMS = 4096  # models up to this size are padded into one population
CACHE_PARAMS = 2**20  # on a CPU, at most this many parameters per population (4 MiB of weights)
MEMORY_FRACTION = 0.5  # of the free memory, for all populations training at once
STEP_COST = 2**17  # a step's fixed cost in multiply-adds (~0.2 ms here), for ordering work
NETS = ("resnet", "vit", "gpt")  # trained by zoo.train.population.nets
NET_PRECISIONS = ("32", "32-true", "bf16-mixed")  # of zoo.train.population.nets (see its module doc)
# On a CPU, ResNet populations (a cell's seeds, K = 3) pay up to this width (first-stage channels), and
# beyond it while a member's step is at most CPU_MAX_MACS multiply-adds. Measured with `benchmarks/
# population.py --zoo cifar10_resnet18 --force` and three runs without it (one thread, grouped
# convolutions in channels-last, load from other agents from 1 to 11 on 2 cores: +-30% per cell):
# 1.1-2.4x faster than one by one at widths 2-8 and batches 8-64, 1.1-1.9x at width 16 / batch 8
# (280 M multiply-adds a member step), 0.9-1.0x at width 16 / batches 16-64 (grouped convolutions
# of many channels lose to separate ones). Padding narrower
# members into a wider population (K = 6-9) was slower than one population per width here (CPU
# convolutions are compute-bound at every width): not done.
# ViT and GPT populations (vmap; attention folded into one batch, zoo.models.transformer.attention) pay
# on a CPU while a member's step is at most 20 M multiply-adds (of the linear layers; attention's
# products are not counted). Measured with `benchmarks/population.py --zoo cifar10_vit --force` (one
# thread, load 2-4 on 2 cores): 1.1-1.7x at width 12 / batches 16-32 (7-13 M); 0.91-1.25x in three runs
# at 25-26 M (width 12 / batch 64, width 24 / batch 16: left one by one, as never slower per cell is
# the rule), 0.9-1.0x at 50-100 M, 0.8-0.9x beyond. GPT cells start far above it (width 32 / batch 8:
# 144 M, and its 50k-token head): one by one.
CPU_MAX_WIDTH = {"resnet": 8}
CPU_MAX_MACS = {"resnet": 300 * 2**20, "vit": 20 * 2**20, "gpt": 20 * 2**20}
TENSOR_DATA = ("mnist1d",)  # data sets held as plain tensors (no per-batch transform)


def is_pinn(cfg: DictConfig) -> bool:
    return task_name(cfg) == "pinn"


def population_key(cfg: DictConfig) -> str | None:
    """Cells with equal keys can train as one population; None: this cell trains alone."""
    model, optim, trainer = cfg.model, cfg.optim, cfg.trainer
    if population_setting(cfg) != "off" and is_pinn(cfg):
        return _pinn_key(cfg)
    if population_setting(cfg) != "off" and model.name in NETS:
        return _net_key(cfg)
    if (
        population_setting(cfg) == "off"
        or model.name != "mlp"
        or model.activation not in MLP_ACTIVATIONS
        or cfg.data.name not in TENSOR_DATA
        or task_name(cfg) != "classify"
        or optim.name != "sgd"
        or trainer.gradient_clip_val is not None
        or str(trainer.precision) not in ("32", "32-true")
    ):
        return None
    plain = to_plain(cfg)
    shared = {
        "model": {k: v for k, v in plain["model"].items() if k != "width"},
        "optim": {k: plain["optim"].get(k) for k in ("name", "nesterov", "no_decay_1d")},
        **{k: plain[k] for k in ("data", "trainer", "checkpoint", "runtime")},
        "data_root": plain["paths"]["data"],
    }
    return json.dumps(shared, sort_keys=True)


def _pinn_key(cfg: DictConfig) -> str | None:
    """PINN cells: members differ in seed, data.beta and optim values (see module doc)."""
    model, optim, trainer = cfg.model, cfg.optim, cfg.trainer
    if (
        model.name != "mlp"
        or model.activation not in PINN_ACTIVATIONS
        or cfg.data.name != "convection"
        or optim.name not in PINN_OPTIMIZERS
        or trainer.gradient_clip_val is not None
        or str(trainer.precision) not in ("32", "32-true")
    ):
        return None
    plain = to_plain(cfg)
    shared = {
        "task": "pinn",
        "model": plain["model"],
        "optim": {k: plain["optim"].get(k) for k in ("name", "no_decay_1d")},
        "data": {k: v for k, v in plain["data"].items() if k != "beta"},
        **{k: plain[k] for k in ("trainer", "checkpoint", "runtime")},
        "data_root": plain["paths"]["data"],
    }
    return json.dumps(shared, sort_keys=True)


def net_population_pays(cfg: DictConfig) -> bool:
    """Whether a ResNet / ViT / GPT cell trains faster as a population than one by one. On a GPU a
    small model's step is launch-bound, so a population pays. On a CPU, as measured per cell by
    `benchmarks/population.py --zoo cifar10_resnet18|cifar10_vit --force` (see CPU_MAX_MACS).
    `runtime.population=<K>` asks for populations wherever they are possible."""
    if cfg.runtime.accelerator in ("gpu", "cuda") or cfg.runtime.population != "auto":
        return True
    name, step_macs = cfg.model.name, net_sizes(cfg)[1] * cfg.data.batch_size
    return cfg.model.width <= CPU_MAX_WIDTH.get(name, 0) or step_macs <= CPU_MAX_MACS[name]


def _net_key(cfg: DictConfig) -> str | None:
    """ResNet / ViT / GPT cells (zoo.train.population.nets): members differ in seed only. Gradient
    clipping (per member) and bf16-mixed are supported; 16-mixed is not (one loss scaler for all)."""
    if (
        task_name(cfg) not in ("classify", "lm")
        or str(cfg.trainer.precision) not in NET_PRECISIONS
        or accumulation(cfg) > 1
        or not net_population_pays(cfg)
    ):
        return None
    plain = to_plain(cfg)
    shared = {k: plain[k] for k in ("model", "optim", "data", "trainer", "checkpoint", "runtime")}
    return json.dumps({**shared, "data_root": plain["paths"]["data"]}, sort_keys=True)


def pinn_points(cfg: DictConfig) -> tuple[int, int]:
    """A PINN's (training points of one step, test grid points), as zoo.data.convection draws them."""
    sizes = PINN_SMOKE if cfg.data.get("smoke") else cfg.data
    return sizes["n_collocation"] + sizes["grid_x"] + 2 * sizes["grid_t"], sizes["grid_x"] * sizes["grid_t"]


@cache
def _n_params(model_json: str) -> int:
    def measure() -> int:
        import torch

        from zoo.models import build

        with torch.device("meta"):  # shapes only: nothing allocated or initialized
            return sum(p.numel() for p in build(json.loads(model_json)).parameters())

    return plan_costs.figure("params", model_json, measure)


def n_params(cfg: DictConfig, width: int | None = None) -> int:
    """Parameters of the model of `cfg`, at `width` if given."""
    model = to_plain(cfg.model)
    return _n_params(json.dumps({**model, **({"width": width} if width else {})}, sort_keys=True))


@cache
def _layer_sizes(model_json: str, sample: tuple[int, ...], dtype: str) -> tuple[int, int]:
    """(floats every layer outputs, multiply-adds of its convolutions and matmuls) for one input
    sample of shape `sample`, counted on the meta device."""

    def measure() -> tuple[int, int]:
        import torch
        from torch import nn

        from zoo.models import build

        floats, macs = [0], [0]

        def count(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            floats[0] += out.numel()
            if isinstance(module, (nn.Conv2d, nn.Linear)):  # each output: one weight row (or kernel window)
                macs[0] += out.numel() * (module.weight[0].numel())

        with torch.device("meta"):
            model = build(json.loads(model_json))
        for module in model.modules():
            if not list(module.children()):
                module.register_forward_hook(count)
        with torch.no_grad():
            model(torch.zeros(1, *sample, dtype=getattr(torch, dtype), device="meta"))
        return floats[0], macs[0]

    key = json.dumps([json.loads(model_json), sample, dtype], sort_keys=True)
    return tuple(plan_costs.figure("layer_sizes", key, measure))


def net_sizes(cfg: DictConfig) -> tuple[int, int]:
    """`_layer_sizes` of the model of a ResNet / ViT / GPT cell."""
    model = json.dumps(to_plain(cfg.model), sort_keys=True)
    return _layer_sizes(model, *net_sample(cfg))


def net_sample(cfg: DictConfig) -> tuple[tuple[int, ...], str]:
    """The input shape of one sample of a ResNet / ViT / GPT cell, and its dtype."""
    if task_name(cfg) == "lm":
        return (cfg.data.context,), "long"
    return (cfg.data.channels, cfg.data.image_size, cfg.data.image_size), "float32"


def member_bytes(cfg: DictConfig, width: int) -> int:
    """Float32 bytes one member at `width` adds to a population: weights, gradients and momenta,
    and the activations of a training step and an evaluation chunk (values and gradients)."""
    m = cfg.model
    if m.name in NETS:  # weights, gradients, up to 2 optimizer slots; saved activations ~2x the layer outputs
        per_sample = net_sizes(cfg)[0]
        return 4 * (4 * n_params(cfg) + per_sample * (2 * cfg.data.batch_size + cfg.data.eval_batch_size))
    features = m.in_dim + m.depth * width + m.out_dim
    if is_pinn(cfg):  # weights, gradients, 2 Adam moments; the double-backward graph of a step (measured:
        # 2.4-2.6 floats per point and feature saved, x 2 for the backward's own buffers); the test grid's
        # activations (two layers at a time), points and exact solution
        train, grid = pinn_points(cfg)
        return 4 * (4 * n_params(cfg, width) + 6 * train * features + grid * (2 * width + 2 * m.in_dim + 2))
    return 4 * (3 * n_params(cfg, width) + 2 * features * (cfg.data.batch_size + cfg.data.eval_batch_size))


def free_memory(cfg: DictConfig) -> int:
    """Free bytes where the population trains: the GPU's, or the machine's."""
    if cfg.runtime.accelerator in ("gpu", "cuda"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.mem_get_info()[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def max_members(cfg: DictConfig, width: int, workers: int, memory: int) -> int:
    """The largest K for a population of `cfg`'s kind padded to `width` (see module doc)."""
    k = int(MEMORY_FRACTION * memory / workers) // member_bytes(cfg, width)
    if cfg.runtime.accelerator not in ("gpu", "cuda") and cfg.model.name == "mlp" and not is_pinn(cfg):
        k = min(k, CACHE_PARAMS // n_params(cfg, width))
    if population_setting(cfg) != "auto":
        k = min(k, population_setting(cfg))
    return max(k, 1)


def width_buckets(cfgs: list[DictConfig]) -> list[list[DictConfig]]:
    """The small models (<= PAD_PARAMS parameters) together, then one bucket per larger width."""
    buckets = defaultdict(list)
    for cfg in cfgs:
        buckets[0 if n_params(cfg) <= PAD_PARAMS else cfg.model.width].append(cfg)
    return [buckets[w] for w in sorted(buckets)]


def populations(cfgs: list[DictConfig], workers: int = 1, memory: int | None = None) -> list[list[DictConfig]]:
    """The populations that train `cfgs`, most expensive first (a cell that cannot share is a
    group of one). `memory`: bytes for all `workers` together (default: what is free now)."""
    groups, by_key = [], defaultdict(list)
    for cfg in cfgs:
        key = population_key(cfg)
        if key is None:
            groups.append([cfg])
        else:
            by_key[key].append(cfg)
    for members in by_key.values():
        for bucket in width_buckets(members):
            width = max(cfg.model.width for cfg in bucket)
            k = max_members(bucket[0], width, workers, memory or free_memory(bucket[0]))
            n = math.ceil(len(bucket) / k)
            if is_pinn(bucket[0]):  # compute-bound: one population per worker (or a multiple)
                n = min(len(bucket), workers * math.ceil(n / workers))
            groups += [bucket[i::n] for i in range(n)]
    return sorted(groups, key=cost, reverse=True)


def cost(group: list[DictConfig]) -> float:
    """Rough multiply-adds of training `group` together: steps x (fixed cost + K x batch x params)."""
    cfg = group[0]
    batch = pinn_points(cfg)[0] if is_pinn(cfg) else cfg.data.get("batch_size") or 1  # PINN: full batch
    n_train = cfg.data.get("n_train") or SPLIT_SIZES.get(cfg.data.name, (batch, 0))[0]
    steps = cfg.trainer.max_epochs * (cfg.data.get("steps_per_epoch") or math.ceil(n_train / batch))
    width = max(c.model.get("width", 0) for c in group) or None
    return steps * (STEP_COST + len(group) * batch * n_params(cfg, width))


def train_group(cfgs: list[DictConfig]) -> list["Result"]:
    """Train one group of `populations`: as a population, or alone if it holds one cell."""
    if not logging.getLogger().handlers:  # a fresh worker process: log like zoo-train does
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    from zoo.train.population import train_population
    from zoo.train.run import train_model

    if len(cfgs) == 1:  # nothing to stack: a population of one trains as the model alone
        return [train_model(cfgs[0])]
    return train_population(cfgs)


def describe(groups: list[list[DictConfig]]) -> str:
    """One line per group: K, batch size, widths (padded to the largest) and epochs."""
    lines = []
    for group in groups:
        cfg = group[0]
        widths = sorted({c.model.get("width") for c in group})
        kind = "population" if population_key(cfg) else "alone"
        if is_pinn(cfg):
            betas, lrs = sorted({c.data.beta for c in group}), sorted({c.optim.lr for c in group})
            lines.append(
                f"{kind} K={len(group)} pinn {cfg.model.name} width {cfg.model.width} "
                f"betas {betas} lrs {lrs} epochs {cfg.trainer.max_epochs}"
            )
            continue
        lines.append(
            f"{kind} K={len(group)} {cfg.model.name} batch {cfg.data.get('batch_size')} "
            f"widths {widths} epochs {cfg.trainer.max_epochs}"
        )
    return "\n".join(lines)


def train_cells(cfgs: list[DictConfig], n_jobs: int = -1) -> list["Result"]:
    """Train every cell of a sweep as `populations` groups them, `n_jobs` groups at a time
    (-1: one per core) in worker processes, each with `runtime.threads` torch threads; a single
    group trains in this process. Returns one result per cell, in order."""
    from joblib import cpu_count  # numpy: not for zoo-plan, which groups without training

    from zoo.train.run import Result

    results, todo = {}, {}
    for cfg in cfgs:
        run = run_dir(cfg)
        if run.is_done():
            log.info("%s: already done (%s), skipped", cfg.id, run.status()[0])
            results[cfg.id] = Result(cfg.id, *run.status(), 0.0, run.path)
        else:
            todo[cfg.id] = cfg
    workers = min(cpu_count() if n_jobs < 0 else n_jobs, len(todo)) or 1
    groups = populations(list(todo.values()), workers)
    log.info("%d cells to train in %d groups, %d at a time:\n%s", len(todo), len(groups), workers, describe(groups))
    if len(groups) == 1:
        done = [train_group(groups[0])]
    else:
        with process_pool(workers) as pool:
            done = list(pool.map(train_group, groups))  # handed out in order: most expensive first
    results.update((r.id, r) for group in done for r in group)
    return [results[cfg.id] for cfg in cfgs]
