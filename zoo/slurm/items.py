"""Post-processing stages on SLURM (`zoo.stage`): a stage's independent items (landscape: one per
model and one per seed pair; zoo-apply: one per cell) as job arrays, `group_size` items per task, waited on with
progress (zoo-landscape, zoo-apply, zoo-run with hydra/launcher=slurm)."""

import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import submitit
from omegaconf import DictConfig, OmegaConf

from zoo.slurm import jobs
from zoo.slurm.submit import submit_and_wait
from zoo.sweep import compose_config, fixed_overrides
from zoo.train.rundir import zoo_dir_of

LAUNCHER = "hydra_plugins.zoo_slurm_launcher.slurm_launcher.SlurmLauncher"


def slurm_settings(overrides: Sequence[str]) -> dict | None:
    """The resolved `hydra.launcher` settings if the overrides select hydra/launcher=slurm, else None."""
    launcher = compose_config(fixed_overrides(list(overrides)), hydra=True).hydra.launcher
    return OmegaConf.to_container(launcher, resolve=True) if launcher.get("_target_") == LAUNCHER else None


class ItemsTask(submitit.helpers.Checkpointable):
    """One array task: `run` each of its items in order, skipping those `done`; a failed item is
    logged and the rest go on. Checkpointable: a preempted or timed-out task is requeued with the
    same items. `run` and `done` are module-level functions (pickled by name)."""

    def __init__(self, run: Callable[[Any], Any], done: Callable[[Any], bool]):
        self.run, self.done = run, done

    def __call__(self, items: list) -> None:
        for item in items:
            if self.done(item):
                continue
            try:
                self.run(item)
            except Exception:  # noqa: BLE001 - the traceback goes to the task's log; the item stays open
                traceback.print_exc()


def run_items_slurm(
    items: Sequence, *, run: Callable, done: Callable, settings: Mapping, stage: str, cfg: DictConfig
) -> dict[str, int]:
    """Every item not `done` (items have an `out` path, their key) as SLURM arrays; returns counts
    {"items", "computed", "failed"} as the local stages do (`zoo.stage.run_stage`)."""
    todo = [item for item in items if not done(item)]

    def progress(queue: jobs.Queue) -> str:
        running = sum(state == "RUNNING" for state, _ in queue.values())
        return (
            f"{stage}: {sum(map(done, todo))}/{len(todo)} items computed, tasks: {running} running, "
            f"{len(queue) - running} pending"
        )

    if todo:
        submit_and_wait(
            settings,
            stage=stage,
            zoo=cfg.zoo.name,
            zoo_dir=zoo_dir_of(cfg),
            fn=ItemsTask(run, done),
            work=[(item.out, item) for item in todo],
            progress=progress,
        )
    failed = sum(not done(item) for item in todo)
    return {"items": len(items), "computed": len(todo) - failed, "failed": failed}
