"""`hydra/launcher=slurm`: a Hydra sweep as SLURM job arrays (conf/hydra/launcher/slurm.yaml).

hydra-submitit-launcher's SlurmLauncher (same settings), plus what a zoo needs:
- models that are DONE, or held by a pending or running task of an earlier launch, are not
  submitted again, so re-running the sweep command submits only what is missing or failed;
- with `runtime.population` not off, cells that can share (zoo.train.grouping) train as vectorized
  populations, one array task per population, planned for one task's memory (`task_memory`);
- the other models run through Hydra's `run_job` on the node, `group_size` per array task, one after
  the other;
- arrays are split to stay below the cluster's MaxArraySize;
- it waits for every model of the sweep with progress lines, then names the ones that failed.

Preemption and time limits: the task is checkpointable (hydra-submitit's `checkpoint` resubmits
the same models), so on SLURM's warning signal (USR2, `signal_delay_s` before the time limit, or
on preemption) submitit requeues it, at most `max_num_timeout` times for time limits. The
requeued task skips finished models and resumes the interrupted one from its last.ckpt (a
population from runs/<zoo>/populations/<hash>/last.ckpt), which is written at the end of every
epoch: at most the epoch in progress is trained again, bit for bit.
"""

import logging
from collections.abc import Sequence
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from zoo.config import task_memory
from zoo.slurm.status import model_states, progress_line
from zoo.slurm.submit import groups_of, submit_and_wait
from zoo.sweep import compose_cells
from zoo.train.rundir import run_dir, zoo_dir_of

log = logging.getLogger(__name__)


class SlurmLauncher(SubmititSlurmLauncher):
    def __init__(
        self, *, group_size: int = 1, max_array_size: int = 1001, wait: bool = True, poll_s: float = 30, **params
    ) -> None:
        super().__init__(**params)
        self.settings = {
            **self.params,
            "group_size": group_size,
            "max_array_size": max_array_size,
            "wait": wait,
            "poll_s": poll_s,
        }
        self.singleton_state = None  # Hydra's global state, shipped to the tasks with the launcher

    def __call__(self, task: list) -> list:
        """One array task, on a node: a population (its members' configs, see `array_tasks`) or
        models one after the other ((overrides, job number) each, through Hydra's run_job)."""
        if isinstance(task[0], DictConfig):
            from zoo.train.grouping import train_group  # imported here: torch, Lightning

            return train_group(task)
        run_job = super().__call__  # out here: zero-argument super() fails inside a comprehension (< 3.12)
        return [
            run_job(overrides, "hydra.sweep.dir", num, f"job_id_for_{num}", self.singleton_state)
            for overrides, num in task
        ]

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        cfgs = compose_cells([list(o) for o in job_overrides], self.config.hydra.job.config_name)
        _warn_cpu_on_gpus(cfgs[0])
        open_ = [(i, cfg) for i, cfg in enumerate(cfgs) if not run_dir(cfg).is_done()]
        print(f"train: {len(cfgs)} models, {len(cfgs) - len(open_)} done", flush=True)
        if not open_:
            return []
        self.singleton_state = Singleton.get_state()
        work = [(cfg.id, (cfg, list(job_overrides[i]), initial_job_idx + i)) for i, cfg in open_]
        waiting, memory = [cfg for _, cfg in open_], task_memory(cfgs[0])
        submit_and_wait(
            self.settings,
            stage="train",
            zoo=cfgs[0].zoo.name,
            zoo_dir=zoo_dir_of(cfgs[0]),
            fn=self,
            work=work,
            tasks=lambda new: array_tasks(new, self.settings["group_size"], memory),
            progress=lambda queue: progress_line("train", model_states(waiting, queue)),
        )
        if not self.settings["wait"]:
            return []
        states = model_states(waiting, {})  # nothing of ours is queued any more; failures: zoo/cli/outcome.py
        return [
            JobReturn(overrides=list(job_overrides[i]), status=JobStatus.COMPLETED, _return_value=s.state)
            for (i, _), s in zip(open_, states)
        ]


def array_tasks(
    work: list[tuple[str, tuple[DictConfig, list[str], int]]], group_size: int, memory: int | None
) -> list[list[tuple[str, Any]]]:
    """The array tasks of the open cells, (id, (config, overrides, job number)) each: one task per
    population that `grouping.populations` makes of the cells that can share (`memory` bytes per task),
    holding their configs, most expensive first; then the other cells, `group_size` per task in
    sweep order, as (overrides, job number). A task's work stays keyed by its models' ids, so a
    relaunch sees every member of a queued population as queued."""
    from zoo.train import grouping  # imported here: torch, and Hydra imports every plugin at startup

    shared, alone = [], []
    for key, (cfg, overrides, num) in work:
        if grouping.population_key(cfg):
            shared.append(cfg)
        else:
            alone.append((key, (overrides, num)))
    populations = grouping.populations(shared, workers=1, memory=memory)
    return [[(cfg.id, cfg) for cfg in group] for group in populations] + groups_of(alone, group_size)


def _warn_cpu_on_gpus(cfg: DictConfig) -> None:
    gpus = OmegaConf.select(cfg, "cluster.gpus_per_task", default=0)
    if gpus and cfg.runtime.accelerator == "cpu":
        log.warning(
            "cluster %s gives each task %s GPU(s) but runtime.accelerator=cpu: add runtime.accelerator=gpu",
            cfg.cluster.name,
            gpus,
        )
