"""The post-processing stage interface, shared by `zoo-landscape` and `zoo-apply` (and any later stage).

A stage splits its work into independent `Item`s (one per model, seed pair or grid cell), each
reading some run dirs and writing one JSON result. Running a stage is always the same:

    plan the items  →  skip the done ones  →  compute the rest (local processes or SLURM arrays)
                    →  each result written atomically, with the inputs it was computed from

An item is done when its result exists *and* records the same inputs (model ids, epochs,
settings): retrain the zoo with other settings, or change the stage's settings, and the item is
recomputed instead of silently reused.
"""

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from omegaconf import DictConfig

from zoo.atomic import write_json
from zoo.parallel import run_parallel

# Settings that say how to run, not what to compute: they never make a result stale.
RUN_ONLY = ("workers",)


@dataclass(frozen=True)
class Item:
    """One unit of a stage's work: `runs` (run dirs) at `epochs`, computed with `settings` (the
    stage's config section) on the data under `data_root`, written to `out`."""

    stage: str
    runs: tuple[str, ...]
    epochs: tuple[int, ...]
    out: str
    settings: Mapping = field(hash=False)
    data_root: str = ""

    @property
    def models(self) -> list[str]:
        return [Path(r).name for r in self.runs]

    def inputs(self) -> dict:
        """What the result depends on, recorded in it."""
        settings = {k: v for k, v in self.settings.items() if k not in RUN_ONLY}
        return {"stage": self.stage, "models": self.models, "epochs": list(self.epochs), "settings": settings}


def read_result(item: Item) -> dict | None:
    """The item's stored result if it was computed from the item's inputs, else None."""
    path = Path(item.out)
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    return stored if stored.get("inputs") == json.loads(json.dumps(item.inputs())) else None


def is_done(item: Item) -> bool:
    return read_result(item) is not None


def run_item(compute: Callable[[Item], dict], item: Item) -> Item:
    """Compute one item (in a worker process or SLURM task) and write its result atomically."""
    import torch

    torch.set_num_threads(1)  # workers run side by side, one per core
    write_json(item.out, {"inputs": item.inputs(), **compute(item)})
    return item


def run_stage(
    compute: Callable[[Item], dict],
    items: Sequence[Item],
    *,
    stage: str,
    workers: int = -1,
    slurm: Mapping | None = None,
    cfg: DictConfig | None = None,
) -> dict[str, int]:
    """Every item not done, in `workers` local processes, or as SLURM arrays with `slurm` (the
    resolved `hydra.launcher` settings; `cfg` names the zoo). `compute` must be a module-level
    function (it is pickled by name). Returns counts {"items", "computed", "failed"}."""
    run = partial(run_item, compute)
    if slurm:
        from zoo.slurm.items import run_items_slurm

        return run_items_slurm(items, run=run, done=is_done, settings=slurm, stage=stage, cfg=cfg)
    todo = [item for item in items if not is_done(item)]
    failed = run_parallel(run, todo, workers, f"{stage} items", name=lambda item: item.out)
    return {"items": len(items), "computed": len(todo) - len(failed), "failed": len(failed)}
