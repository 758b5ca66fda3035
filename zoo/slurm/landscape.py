"""The landscape stage on SLURM: its independent items (one per model, one per seed pair) as job
arrays, `group_size` items per task, waited on with progress (zoo-landscape / zoo-run with
hydra/launcher=slurm)."""

import traceback
from collections.abc import Mapping, Sequence

import submitit
from omegaconf import DictConfig, OmegaConf

from zoo.landscape.stage import Item, is_done, plan, run_item
from zoo.slurm import jobs
from zoo.slurm.submit import submit_and_wait
from zoo.status import zoo_dir_of
from zoo.sweep import compose_config, fixed_overrides

LAUNCHER = "hydra_plugins.zoo_slurm_launcher.slurm_launcher.SlurmLauncher"


def slurm_settings(overrides: Sequence[str]) -> dict | None:
    """The resolved `hydra.launcher` settings if the overrides select hydra/launcher=slurm, else None."""
    launcher = compose_config(fixed_overrides(list(overrides)), hydra=True).hydra.launcher
    return OmegaConf.to_container(launcher, resolve=True) if launcher.get("_target_") == LAUNCHER else None


class ItemsTask(submitit.helpers.Checkpointable):
    """One array task: its items in order, skipping finished ones; a failed item is logged and the
    rest go on. Checkpointable: a preempted or timed-out task is requeued with the same items."""

    def __call__(self, items: list[Item]) -> None:
        for item in items:
            if is_done(item):
                continue
            try:
                run_item(item)
            except Exception:  # noqa: BLE001 - the traceback goes to the task's log; the item stays open
                traceback.print_exc()


def run_landscape_slurm(cfgs: Sequence[DictConfig], settings: Mapping) -> dict[str, int]:
    """Measure every missing item of the zoo on SLURM; same counts as `run_landscape`."""
    items = plan(cfgs)
    todo = [item for item in items if not is_done(item)]

    def progress(queue: jobs.Queue) -> str:
        done = sum(map(is_done, todo))
        running = sum(state == "RUNNING" for state, _ in queue.values())
        pending = len(queue) - running
        return f"landscape: {done}/{len(todo)} items measured, tasks: {running} running, {pending} pending"

    if todo:
        submit_and_wait(settings, stage="landscape", zoo=cfgs[0].zoo.name, zoo_dir=zoo_dir_of(cfgs[0]),
                        fn=ItemsTask(), work=[(item.out, item) for item in todo], progress=progress)
    failed = sum(not is_done(item) for item in todo)
    return {"items": len(items), "measured": len(todo) - failed, "failed": failed}
