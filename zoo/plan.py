"""The dry run of a zoo (`zoo-plan`): what training it costs, and what the SLURM launcher submits
for it, before anything runs.

Counts models and checkpoints; per architecture, parameters and checkpoint bytes, and the FLOPs and
activation bytes of one forward/backward step per input shape (zoo.plan_costs: a shipped table,
measured with torch on the meta device by zoo.plan_measure for what it lacks), scaled to a
training run; turns FLOPs into device-hours with the cluster profile (`conf/cluster/`: the peak
TFLOP/s of the model's `trainer.precision` x `mfu` per array task, plus `step_ms` per optimizer step,
which bounds small models at small batches).

The array tasks are the launcher's own (`zoo-train -m ... hydra/launcher=slurm`): its settings
(conf/hydra/launcher/slurm.yaml), its grouping into tasks (zoo.slurm.launcher.array_tasks: one
task per population), its split into arrays and submitit's sbatch script (zoo.slurm.submit), for
the models it would submit now: by its rules, not those whose run dir is DONE, nor those a pending
or running task of an earlier launch holds (its record under runs/<zoo>/slurm/arrays/ and squeue).
So what is printed is what it submits, and the device-hours are those still to spend, with the
same populations. Neither torch nor Lightning is imported for the shipped zoos.
"""

import json
import math
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from omegaconf import OmegaConf

from zoo import plan_costs
from zoo.atomic import write_json
from zoo.config import ConfigError, accumulation, task_memory, task_name
from zoo.sizes import PINN_SMOKE, SMOKE_SAMPLES, SMOKE_WINDOWS, SPLIT_SIZES
from zoo.slurm import jobs
from zoo.slurm.launcher import SlurmLauncher, array_tasks
from zoo.slurm.status import live_queue
from zoo.slurm.submit import array_size, groups_of, job_name, make_executor, sbatch_script
from zoo.sweep import Resolved, compose_config, fixed_overrides, sweep_cells, views
from zoo.train import grouping
from zoo.train.rundir import checkpoint_epochs, run_dir, zoo_dir_of

SHARD_OVERHEAD = 4096  # bytes per shard sample beyond its weights: meta.json and tar headers
OPTIMIZER_SLOTS = {"sgd": 1, "adam": 2, "adamw": 2}  # state tensors per parameter in last.ckpt
# trainer.precision (Lightning's names and short forms) -> the cluster key of the devices' peak TFLOP/s
PEAKS = {
    "32-true": "tflops",
    "32": "tflops",
    "16-mixed": "tflops_16bit",
    "16": "tflops_16bit",
    "bf16-mixed": "tflops_16bit",
    "bf16": "tflops_16bit",
}


@dataclass
class Cell:
    cfg: Resolved
    params: int
    weight_bytes: int
    flops: float  # one training run
    steps: int  # optimizer steps of one training run
    step_samples: int  # samples per (micro-)batch
    fixed_bytes: float  # memory of a training step: weights, gradients, optimizer state (PINN: all) ...
    sample_bytes: float  # ... plus the activations of each sample of the micro-batch
    checkpoints: int
    population: int = 1  # models trained with it as one population (its array task)

    def memory(self, micro_batch: int | None = None) -> float:
        """Bytes one training step needs on the device, at `micro_batch` samples (default: as configured)."""
        return self.fixed_bytes + self.sample_bytes * (micro_batch or self.step_samples)


@dataclass
class Submission:
    """What `zoo-train -m <overrides> hydra/launcher=slurm` submits: its array tasks (each a list of
    model ids; `population[i]`: whether task i trains them as one population) in arrays of at most
    `max_array_size` tasks, each array one sbatch script."""

    overrides: list[str]
    tasks: list[list[str]]
    population: list[bool]
    max_array_size: int
    scripts: list[str]


@dataclass
class Plan:
    """`cells`: every model of the sweep; `done`: the ids whose run dir is DONE; `queued`: id -> job
    id, for those a pending or running SLURM task holds; `queue_note`: why squeue was not asked.
    The submission holds the rest (`todo`)."""

    overrides: list[str]
    cells: list[Cell]
    submission: Submission
    done: set[str]
    queued: dict[str, str]
    queue_note: str | None = None

    @property
    def cluster(self) -> Mapping:
        return self.cells[0].cfg.cluster

    @property
    def todo(self) -> list[Cell]:
        return [c for c in self.cells if c.cfg.id not in self.done and c.cfg.id not in self.queued]

    def peak_key(self, cell: Cell) -> str:
        """The cluster key of the peak TFLOP/s the cell trains at: by its trainer.precision, and for
        32-bit floats by runtime.tf32 (TF32 tensor cores, or IEEE fp32)."""
        precision, name = str(cell.cfg.trainer.precision), self.cluster.name
        key = PEAKS.get(precision)
        if key is None:
            raise ConfigError(
                f"zoo-plan has no peak for trainer.precision={precision} on cluster {name}: it plans "
                "32-true (cluster.tflops, or tflops_fp32 with runtime.tf32=false), 16-mixed and bf16-mixed "
                "(cluster.tflops_16bit)"
            )
        if key == "tflops" and not cell.cfg.runtime.get("tf32", True):
            key = "tflops_fp32"
        if key not in self.cluster:
            raise ConfigError(
                f"trainer.precision={precision} needs cluster.{key} (peak TFLOP/s at that precision) in "
                f"cluster {name}: add it to conf/cluster/{name}.yaml (see conf/cluster/example_gpu.yaml)"
            )
        return key

    def flop_hours(self, cell: Cell) -> float:
        """The FLOPs of one cell's training run at MFU `mfu` of its precision's peak, in hours."""
        return cell.flops / (self.cluster[self.peak_key(cell)] * 1e12 * self.cluster.mfu) / 3600

    def hours(self, cell: Cell, population: bool = True) -> float:
        """Device-hours of one cell's training run on one array task of the cluster. A population
        pays the per-step overhead once for all its members: each member carries 1/K of it; with
        runtime.compile (zoo.train.capture) that overhead is the cluster's `captured_step_ms`."""
        cluster, k = self.cluster, cell.population if population else 1
        captured = population and cell.cfg.runtime.get("compile")
        step_ms = cluster.get("captured_step_ms", cluster.step_ms) if captured else cluster.step_ms
        return self.flop_hours(cell) + cell.steps * step_ms / 1e3 / k / 3600


@dataclass
class Work:
    """One training run in measurable pieces. `batch(n)` is the shapes of a training batch of n
    samples, ((shape, dtype), ...); the run trains `train_samples` samples in `steps` steps of
    `step_samples` (micro-batch) and evaluates `eval_samples` inputs. For a PINN a training
    "sample" is its whole point set (every step is full-batch) and an evaluation sample is one
    test point."""

    batch: Callable[[int], tuple]
    train_samples: float
    step_samples: int
    steps: int
    eval_samples: float


def plan_zoo(overrides: list[str]) -> Plan:
    """The plan of the sweep `overrides` select (e.g. `["zoo=cifar10_resnet18", "cluster=example_gpu"]`)."""
    launcher = compose_config([*fixed_overrides(overrides), "hydra/launcher=slurm"], hydra=True)
    launch = [*overrides, *_runtime_overrides(overrides, launcher.cluster)]
    cfgs = views(sweep_cells(launcher.hydra.sweeper.params, launch))
    done, queued, note = left_out(cfgs)
    todo = [cfg for cfg in cfgs if cfg.id not in done and cfg.id not in queued]
    settings = OmegaConf.to_container(launcher.hydra.launcher, resolve=True)
    submission = submit_plan(launch, todo, settings, task_memory(cfgs[0]), cfgs[0].zoo.name)
    k = {key: len(task) if pop else 1 for task, pop in zip(submission.tasks, submission.population) for key in task}
    return Plan(list(overrides), [_cell(cfg, k.get(cfg.id, 1)) for cfg in cfgs], submission, done, queued, note)


def left_out(cfgs: list[Resolved]) -> tuple[set[str], dict[str, str], str | None]:
    """What the SLURM launcher leaves out of its submission, by its own rules: the models whose run
    dir is DONE (SlurmLauncher.launch), then those a pending or running task of an earlier launch
    holds (submit_and_wait: jobs.queued), id -> job id. squeue is asked only for a zoo that was
    submitted before (as zoo-status does); the note says why it could not be."""
    done = {cfg.id for cfg in cfgs if run_dir(cfg).is_done()}
    queue, note = live_queue(cfgs)
    held = jobs.queued(zoo_dir_of(cfgs[0]), "train", queue) if queue else {}
    open_ = {cfg.id for cfg in cfgs} - done  # an earlier launch may have held models of another sweep
    return done, {key: job for key, job in held.items() if key in open_}, note


def _runtime_overrides(overrides: list[str], cluster: Mapping) -> list[str]:
    """What an array task runs with on this cluster, unless the overrides say otherwise: its
    devices (the launcher warns when tasks get GPUs and runtime.accelerator=cpu) and its CPUs."""
    runtime = {
        "runtime.accelerator": "gpu" if cluster.gpus_per_task else "cpu",
        "runtime.threads": cluster.cpus_per_task,
    }
    given = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    return [f"{key}={value}" for key, value in runtime.items() if key not in given]


def submit_plan(overrides: list[str], cfgs: list[Resolved], launcher: dict, memory: int | None, zoo: str) -> Submission:
    """What the SLURM launcher (`launcher`: the `hydra.launcher` node of hydra/launcher=slurm)
    submits for the cells `cfgs` of the sweep `overrides` (those it would not leave out), planned
    for `memory` bytes per task: its own settings, array tasks, array split and submitit executor."""
    settings = SlurmLauncher(**{k: v for k, v in launcher.items() if k != "_target_"}).settings
    work = [(cfg.id, (cfg, [], i)) for i, cfg in enumerate(cfgs)]
    tasks = array_tasks(work, settings["group_size"], memory) if work else []
    executor = make_executor(settings, job_name(zoo))
    try:
        size = array_size(settings["max_array_size"])
    except (jobs.SlurmError, subprocess.TimeoutExpired):  # no SLURM here (a laptop): the profile's figure
        size = settings["max_array_size"]
    arrays = groups_of(tasks, size)
    return Submission(
        overrides,
        [[key for key, _ in task] for task in tasks],
        [len(task) > 1 and isinstance(task[0][1], Mapping) for task in tasks],  # one member trains alone
        size,
        [sbatch_script(executor, len(array)) for array in arrays],
    )


def _cell(cfg: Resolved, population: int) -> Cell:
    model, work = _key(cfg.model), _work(cfg)
    params, weight_bytes = _figure("size", model)
    task, beta = task_name(cfg), float(cfg.data.get("beta", 0))
    fixed = weight_bytes * (2 + OPTIMIZER_SLOTS.get(cfg.optim.name, 2))
    if task == "pinn":  # full-batch steps; evaluation runs the model on single (x, t) points
        _, flops, activations = _figure("step", model, work.batch(1), task, beta)
        fixed, per_sample = fixed + activations, 0.0
        eval_flops = _figure("forward_flops", model, (((1, 2), "float32"),))
    else:  # per sample, from a batch of 2; evaluation is the training forward pass
        eval_flops, flops, per_sample = (v / 2 for v in _figure("step", model, work.batch(2), task, beta))
    return Cell(
        cfg,
        params,
        weight_bytes,
        flops * work.train_samples + eval_flops * work.eval_samples,
        work.steps,
        work.step_samples,
        fixed,
        per_sample,
        len(checkpoint_epochs(cfg)),
        population,
    )


def _figure(kind: str, model_key: str, *args):
    """`zoo.plan_measure.<kind>(model_key, *args)`, looked up first (zoo.plan_costs)."""

    def measure():
        from zoo import plan_measure  # torch: only for what the table lacks

        return getattr(plan_measure, kind)(model_key, *args)

    return plan_costs.figure(kind, json.dumps([json.loads(model_key), *args], sort_keys=True), measure)


def _work(cfg: Resolved) -> Work:
    data, epochs, task = cfg.data, cfg.trainer.max_epochs, task_name(cfg)
    if task == "pinn":
        sizes = PINN_SMOKE if data.get("smoke") else data
        steps = data.steps_per_epoch * epochs
        points = tuple(
            ((n, width), "float32")
            for n, width in (
                (sizes["n_collocation"], 2),
                (sizes["grid_x"], 2),
                (sizes["grid_x"], 1),
                (sizes["grid_t"], 2),
                (sizes["grid_t"], 2),
            )
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
        return Work(
            lambda n: (((n, data.context), "int64"), ((n, data.context), "int64")),
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
        lambda n: (((n, *shape), "float32"), ((n,), "int64")),
        n_train * epochs,
        step_samples,
        -(-n_train // data.batch_size) * epochs,
        n_test * (epochs + 1) + n_train,
    )


def _key(model_cfg: Mapping) -> str:
    return json.dumps(model_cfg, sort_keys=True)


# -- report -----------------------------------------------------------------------------------
def format_plan(plan: Plan) -> str:
    cells, cluster = plan.cells, plan.cluster
    first = cells[0].cfg
    hours = [plan.hours(c) for c in plan.todo]
    smallest, largest = min(cells, key=lambda c: c.params), max(cells, key=lambda c: c.params)
    ckpts = sum(c.checkpoints for c in cells)
    ckpt_bytes = sum(c.checkpoints * c.weight_bytes for c in cells)
    resume_bytes = sum(c.weight_bytes * (1 + OPTIMIZER_SLOTS.get(c.cfg.optim.name, 2)) for c in cells)
    per_model = sorted({c.checkpoints for c in cells})
    device = f"GPU x{cluster.gpus_per_task}" if cluster.gpus_per_task else f"{cluster.cpus_per_task} CPUs"
    lines = [
        f"zoo: {first.zoo.name} (cluster: {cluster.name})",
        f"grid: {_grid(plan)}",
        f"models: {len(cells)}",
        _todo_line(plan),
        f"checkpoints: {ckpts} ({'/'.join(map(str, per_model))} per model)",
        _tasks_line(plan.submission),
        f"parameters per cell: min {smallest.params:,} ({_prefix(smallest)}), "
        f"max {largest.params:,} ({_prefix(largest)})",
        f"training FLOPs per model: min {min(c.flops for c in cells):.3g}, max {max(c.flops for c in cells):.3g}, "
        f"total {sum(c.flops for c in cells):.3g}",
        _hours_line(plan, hours, device),
        *([_population_line(plan)] if hours else []),
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
    if plan.queue_note:
        lines.append(f"note: SLURM's queue could not be read {plan.queue_note}: queued models are planned too")
    return "\n".join([*lines, *submission_lines(plan.submission)])


def _todo_line(plan: Plan) -> str:
    """What the launcher would submit, and what it leaves out."""
    job_ids = sorted(set(plan.queued.values()), key=int)
    held = f" (job(s) {', '.join(job_ids)})" if job_ids else ""
    return (
        f"to submit: {len(plan.todo)} models ({len(plan.done)} done, {len(plan.queued)} held by pending "
        f"or running SLURM tasks{held})"
    )


def _hours_line(plan: Plan, hours: list[float], device: str) -> str:
    if not hours:
        return "device-hours: none left to spend (nothing to submit)"
    return (
        f"device-hours of the {len(hours)} to submit ({device} per task at {_peaks(plan)} x MFU {plan.cluster.mfu:g}): "
        f"total {sum(hours):,.3g}, max per model {max(hours):,.3g}"
    )


def _peaks(plan: Plan) -> str:
    """The peak each precision of the models to submit trains at, and its cluster key."""
    used = sorted({(str(c.cfg.trainer.precision), plan.peak_key(c)) for c in plan.todo})
    return ", ".join(f"{plan.cluster[key]:g} TFLOP/s for {precision} (cluster.{key})" for precision, key in used)


def _tasks_line(submission: Submission) -> str:
    if not submission.tasks:
        return "array tasks: none (nothing left to submit)"
    sizes = [len(t) for t, pop in zip(submission.tasks, submission.population) if pop]
    kinds = [f"{len(sizes)} population(s) of {_span(sorted(set(sizes)))} models"] if sizes else []
    alone = len(submission.tasks) - len(sizes)
    kinds += [f"{alone} of models one after the other"] if alone else []
    return (
        f"array tasks: {len(submission.tasks)} in {len(submission.scripts)} array(s) "
        f"(MaxArraySize {submission.max_array_size}): {', '.join(kinds)}"
    )


def submission_lines(submission: Submission, shown: int = 8) -> list[str]:
    """The launch command, what its first `shown` array tasks train, and each array's sbatch script."""
    command = shlex.join(["zoo-train", "-m", *submission.overrides, "hydra/launcher=slurm"])
    if not submission.tasks:
        return [f"SLURM: `{command}` submits nothing: every model is done or held by a pending or running task"]
    lines = [f"SLURM: `{command}` submits (zoo/slurm/launcher.py; each task runs its models through submitit):"]
    for i, (task, pop) in enumerate(zip(submission.tasks[:shown], submission.population)):
        ids = ", ".join(task[:4]) + (f", ... ({len(task) - 4} more)" if len(task) > 4 else "")
        how = "as one population" if pop else "one after the other"
        lines.append(f"  task {i}: {len(task)} model(s) {how}: {ids}")
    if len(submission.tasks) > shown:
        lines.append(f"  ... {len(submission.tasks) - shown} more task(s)")
    for i, script in enumerate(submission.scripts):
        lines.append(f"sbatch script {i + 1} of {len(submission.scripts)} (as submitit writes it):")
        lines += [f"  {line}" for line in script.strip().splitlines() if line]
    return lines


def _population_line(plan: Plan) -> str:
    todo = plan.todo
    groups = sum(1 / c.population for c in todo)
    alone = sum(plan.hours(c, population=False) for c in todo)
    if round(groups) == len(todo):
        return "populations: none (every model trains alone; runtime.population or its architecture)"
    return (
        f"populations: {len(todo)} models in {round(groups)} populations "
        f"(runtime.population={todo[0].cfg.runtime.population}); one by one: {alone:,.3g} device-hours"
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
    values = {axis: sorted({c.cfg.grid[axis] for c in plan.cells}) for axis in axes}
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


def refresh_costs() -> None:
    """Write the shipped cost table (zoo/plan_costs.json): every figure zoo-plan needs for every
    shipped zoo under every shipped cluster profile, measured with torch."""
    from zoo.config import CONF_DIR

    with plan_costs.measuring() as measured:
        for zoo in sorted(p.stem for p in (CONF_DIR / "zoo").glob("*.yaml")):
            for cluster in sorted(p.stem for p in (CONF_DIR / "cluster").glob("*.yaml")):
                print(f"zoo={zoo} cluster={cluster}", flush=True)
                plan_zoo([f"zoo={zoo}", f"cluster={cluster}"])
    table = {kind: dict(sorted(figures.items())) for kind, figures in sorted(measured.measured.items())}
    write_json(plan_costs.SHIPPED, table)
    print(f"{plan_costs.SHIPPED}: {sum(len(f) for f in table.values())} figures")


if __name__ == "__main__":
    if sys.argv[1:] != ["--refresh-costs"]:
        raise SystemExit("usage: python -m zoo.plan --refresh-costs   (rewrites zoo/plan_costs.json)")
    refresh_costs()
