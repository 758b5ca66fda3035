"""`hydra/launcher=population`: a sweep's cells trained as vectorized populations on this machine.

    zoo-train -m zoo=demo hydra/launcher=population [runtime.population=auto|off|<max K>]

The launcher composes every cell's config, groups them (zoo.train.grouping) and trains the
groups in worker processes; each cell still gets its own run dir, as with any launcher. It
calls the library, not the task function (zoo.cli.train.train) per cell: a population is one
job for many cells. Configured by conf/hydra/launcher/population.yaml.
"""

import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus, configure_log
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class PopulationLauncher(Launcher):
    def __init__(self, n_jobs: int = -1) -> None:
        self.n_jobs = n_jobs
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from zoo.sweep import compose_cells  # imported here: Hydra imports every plugin at startup
        from zoo.train.grouping import train_cells

        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(self.config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        cfgs = compose_cells([list(o) for o in job_overrides])
        results = train_cells(cfgs, self.n_jobs)
        return [
            JobReturn(
                overrides=list(o),
                cfg=cfg,
                task_name=self.config.hydra.job.name,
                status=JobStatus.COMPLETED,
                _return_value=r.state,
            )
            for o, cfg, r in zip(job_overrides, cfgs, results)
        ]
