"""Submitting a stage's work to SLURM as job arrays with submitit, and waiting for it.

The settings are `hydra.launcher` of conf/hydra/launcher/slurm.yaml: submitit's SLURM
parameters (filled from the cluster profile, conf/cluster/<name>.yaml) plus ours:
`group_size` (work items per array task), `max_array_size`, `wait`, `poll_s`.
"""

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit
from submitit.slurm.slurm import _make_sbatch_string  # what map_array submits, as text

from zoo.slurm import jobs

OURS = ("_target_", "group_size", "max_array_size", "wait", "poll_s")
# submitit's cluster-independent parameters; the others take a `slurm_` prefix.
SHARED = (
    "timeout_min",
    "cpus_per_task",
    "gpus_per_node",
    "tasks_per_node",
    "mem_gb",
    "nodes",
    "name",
    "stderr_to_stdout",
)


def job_name(zoo: str) -> str:
    """The SLURM job name of every array of a zoo: `squeue --name zoo-<zoo>` shows them."""
    return f"zoo-{zoo}"


def make_executor(settings: Mapping, name: str) -> submitit.AutoExecutor:
    """A submitit SLURM executor; unset (null, empty) settings are left to SLURM's defaults."""
    params = {k: v for k, v in settings.items() if k not in OURS and v not in (None, "", [], {})}
    gpus = params.pop("gpus_per_task", 0)
    if gpus:  # as --gres, which every SLURM version understands (one task per job); 0: CPU only
        params["gres"] = f"gpu:{gpus}"
    executor = submitit.AutoExecutor(
        folder=params.pop("submitit_folder"), cluster="slurm", slurm_max_num_timeout=params.pop("max_num_timeout", 0)
    )
    params["name"] = name
    executor.update_parameters(**{k if k in SHARED else f"slurm_{k}": v for k, v in params.items()})
    return executor


def sbatch_script(executor: submitit.AutoExecutor, n_tasks: int) -> str:
    """The sbatch script `submit_arrays` has submitit write for `n_tasks` tasks of `executor`: an
    array of them, or one job for a single task (submitit's rule), by submitit's own writer."""
    slurm = executor._executor  # submitit's SlurmExecutor, as map_array uses it
    params = slurm.parameters | ({"map_count": n_tasks} if n_tasks > 1 else {})
    return _make_sbatch_string(command=slurm._submitit_command_str, folder=slurm.folder, **params)


def groups_of(items: Sequence, size: int) -> list[list]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def submit_arrays(
    executor: submitit.AutoExecutor,
    fn: Callable,
    groups: Sequence[list[tuple[str, Any]]],
    *,
    max_array_size: int,
    stage: str,
    zoo_dir: Path,
) -> list[str]:
    """One array task per group of (key, item) pairs, running `fn([items])`; arrays hold at most
    `max_array_size` tasks (SLURM caps the task *index*, so each array numbers its tasks from 0).
    Each array is recorded under the zoo dir. Returns the job ids."""
    job_ids = []
    for part in groups_of(groups, max_array_size):
        submitted = executor.map_array(fn, [[item for _, item in group] for group in part])
        job_id = submitted[0].job_id.split("_")[0]
        tasks = [[key for key, _ in group] for group in part]
        jobs.write_record(zoo_dir, jobs.Record(job_id, stage, str(executor.folder), tasks))
        job_ids.append(job_id)
    return job_ids


def wait(job_ids: Collection[str], name: str, progress: Callable[[jobs.Queue], str], poll_s: float) -> None:
    """Block until none of `job_ids` is queued or running, printing `progress(queue)` when it changes."""
    last = None
    try:
        while True:
            try:
                live = {key: v for key, v in jobs.queue(name).items() if key[0] in job_ids}
            except jobs.SlurmError as err:  # a busy slurmctld times out now and then: ask again
                print(f"{err}; retrying in {poll_s} s", flush=True)
            else:
                line = progress(live)
                if line != last:
                    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)
                    last = line
                if not live:
                    return
            time.sleep(poll_s)
    except KeyboardInterrupt:
        raise SystemExit(
            f"\nstopped waiting; the jobs go on (squeue --name {name}). Run the same command "
            "again to wait for them: it submits nothing twice."
        ) from None


Tasks = Callable[[list[tuple[str, Any]]], list[list[tuple[str, Any]]]]  # work -> the work of each array task


def array_size(max_array_size: int) -> int:
    """Tasks per array: the profile's `max_array_size`, or the cluster's MaxArraySize (scontrol) if smaller."""
    return min(max_array_size, jobs.max_array_size())


def submit_and_wait(
    settings: Mapping,
    *,
    stage: str,
    zoo: str,
    zoo_dir: Path,
    fn: Callable,
    work: Sequence[tuple[str, Any]],
    progress: Callable[[jobs.Queue], str],
    tasks: Tasks | None = None,
) -> None:
    """Submit the (key, item) work that no queued task holds yet, split into array tasks by `tasks`
    (default: `group_size` items per task), and (with `wait`) wait for all of it, including what
    earlier submissions hold."""
    name = job_name(zoo)
    held = jobs.queued(zoo_dir, stage, jobs.queue(name))
    new = [(key, item) for key, item in work if key not in held]
    job_ids = []
    if new:
        size = array_size(settings["max_array_size"])
        groups = tasks(new) if tasks else groups_of(new, settings["group_size"])
        job_ids = submit_arrays(
            make_executor(settings, name), fn, groups, max_array_size=size, stage=stage, zoo_dir=zoo_dir
        )
    print(
        f"{stage}: {len(work)} to do: {len(work) - len(new)} already queued, {len(new)} submitted"
        + (f" as job(s) {', '.join(job_ids)}" if job_ids else "")
        + f" (logs in {settings['submitit_folder']})",
        flush=True,
    )
    if settings["wait"]:
        wait(set(job_ids) | set(held.values()), name, progress, settings["poll_s"])
    else:
        print(f"not waiting (wait=false): follow with squeue --name {name}, or zoo-status", flush=True)
