"""Where every model of a zoo stands, from its run dir and the SLURM task that holds it (`zoo-status`).

ok, diverged   finished (DONE)
failed         the run recorded an error, or its SLURM task ended before it finished
running        started and not finished (on SLURM: its task is running)
pending        waiting in SLURM's queue (or for its turn within a running task's group)
missing        never started and not queued
"""

import shlex
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from omegaconf import DictConfig

from zoo.slurm import jobs
from zoo.slurm.submit import job_name
from zoo.summary import format_table
from zoo.train.rundir import run_dir, zoo_dir_of

STATES = ("ok", "diverged", "failed", "running", "pending", "missing")


@dataclass
class ModelState:
    cfg: DictConfig
    state: str
    reason: str = ""


def model_states(cfgs: Sequence[DictConfig], queue: jobs.Queue | None) -> list[ModelState]:
    """The state of each model; `queue` None when SLURM cannot be asked (run dirs only)."""
    if not cfgs:
        return []
    held = jobs.latest_tasks(jobs.read_records(zoo_dir_of(cfgs[0]), "train"))
    return [_state(cfg, held.get(cfg.id), queue) for cfg in cfgs]


def _state(cfg: DictConfig, held: tuple[jobs.Record, int] | None, queue: jobs.Queue | None) -> ModelState:
    run = run_dir(cfg)
    state, reason = run.status()  # ok, diverged, failed; `running` once started; `missing`
    if run.is_done() or held is None or queue is None:
        return ModelState(cfg, state, reason)
    record, task = held
    name = record.task_name(task)
    if (record.job_id, task) in queue:
        slurm_state, why = queue[record.job_id, task]
        if slurm_state == "RUNNING" and state == "running":
            return ModelState(cfg, "running", f"task {name}")
        return ModelState(cfg, "pending", f"task {name} {slurm_state.lower()} ({why})")
    if state in ("running", "missing"):
        why = "cancelled, time limit, out of memory, node failure?"
        return ModelState(
            cfg, "failed", f"task {name} ended before this model finished ({why}): see {record.log(task)}"
        )
    return ModelState(cfg, state, reason)


def progress_line(stage: str, states: Sequence[ModelState]) -> str:
    counts = Counter(s.state for s in states)
    return f"{stage}: {len(states)} models: " + ", ".join(f"{s} {counts[s]}" for s in STATES if counts[s])


def status_table(states: Sequence[ModelState]) -> str:
    """Counts per cell of the zoo's two axes (seeds pooled), then the totals."""
    axes = list(states[0].cfg.zoo.axes)
    cells: dict[tuple, Counter] = defaultdict(Counter)
    for s in states:
        cells[tuple(s.cfg.grid[a] for a in axes)][s.state] += 1
    rows = [[*key, sum(c.values()), *(c[s] or "" for s in STATES)] for key, c in sorted(cells.items())]
    total = Counter(s.state for s in states)
    rows.append(["total", *[""] * (len(axes) - 1), len(states), *(total[s] for s in STATES)])
    return format_table([*axes, "models", *STATES], rows)


def failed_lines(states: Sequence[ModelState], limit: int | None = None) -> list[str]:
    """`<id> <grid>: <reason>` per failed model, with its error.log when there is one."""
    lines = []
    for s in [s for s in states if s.state == "failed"][:limit]:
        grid = " ".join(f"{k}={v}" for k, v in s.cfg.grid.items())
        log = run_dir(s.cfg).path / "error.log"
        lines.append(f"  {s.cfg.id}  {grid}: {s.reason}" + (f" (traceback: {log})" if log.exists() else ""))
    return lines


def resubmit_command(cfg: DictConfig, overrides: Sequence[str]) -> str:
    """The sweep command again, on SLURM: it submits only the models that are missing or failed."""
    command = ["zoo-train", "-m", *overrides]
    if not any(o.startswith("hydra/launcher=") for o in overrides):
        command.append("hydra/launcher=slurm")
    if not any(o.startswith("cluster=") for o in overrides):
        command.append(f"cluster={cfg.cluster.name}")
    return shlex.join(command)


def report(cfgs: Sequence[DictConfig], overrides: Sequence[str], all_failed: bool = False) -> str:
    """The zoo-status text: table, totals, failed models (all of them with `all_failed`)."""
    queue, note = live_queue(cfgs)
    states = model_states(cfgs, queue)
    out = [
        f"zoo {cfgs[0].zoo.name}: {len(cfgs)} models in {zoo_dir_of(cfgs[0]) / 'models'}",
        note,
        "",
        status_table(states),
    ]
    failed = failed_lines(states, None if all_failed else 10)
    n_failed = sum(s.state == "failed" for s in states)
    if failed:
        out += ["", f"failed ({n_failed}):", *failed]
        if not all_failed:
            out.append(
                f"  ({n_failed - len(failed)} more) zoo-status --failed: all of them, and how to resubmit"
                if n_failed > len(failed)
                else "  zoo-status --failed: how to resubmit them"
            )
    if all_failed and n_failed:
        out += [
            "",
            "Resubmit them (finished models are skipped, queued ones are not submitted twice):",
            f"  {resubmit_command(cfgs[0], overrides)}",
        ]
    return "\n".join(line for line in out if line is not None)


def live_queue(cfgs: Sequence[DictConfig]) -> tuple[jobs.Queue | None, str | None]:
    """The zoo's queued tasks, if it was ever submitted to SLURM and squeue answers."""
    if not jobs.records_dir(zoo_dir_of(cfgs[0])).exists():
        return None, None
    try:
        return jobs.queue(job_name(cfgs[0].zoo.name)), None
    except jobs.SlurmError as err:
        return None, f"({err}: run dirs only)"
