"""zoo-train's exit code, as a Hydra callback (conf/train.yaml `hydra.callbacks`): every cell's
config is checked before anything runs (exit 2, naming the key), and a sweep in which models
failed exits 1 with one line per cause, whatever launcher ran it."""

import shlex
import sys

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from zoo.config import ConfigError


class SweepOutcome(Callback):
    def __init__(self) -> None:
        self.cfgs: list[DictConfig] = []

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from zoo.sweep import compose_cells, sweep_cells  # inside the running Hydra app

        cells = sweep_cells(config.hydra.sweeper.params, list(config.hydra.overrides.task))
        self.cfgs = _checked(lambda: compose_cells(cells))

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from zoo.config import validate
        from zoo.train.ids import with_identity

        cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        self.cfgs = _checked(lambda: (validate(cfg), [with_identity(cfg)])[1])

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        _exit_on_failures(self.cfgs, config.hydra.overrides.task)

    def on_run_end(self, config: DictConfig, **kwargs) -> None:
        _exit_on_failures(self.cfgs, config.hydra.overrides.task)


def _checked(compose):
    try:
        return compose()
    except ConfigError as err:
        print(f"zoo-train: {err}", file=sys.stderr)
        sys.exit(2)  # SystemExit: Hydra reports exceptions with a traceback, not exits


def _exit_on_failures(cfgs: list[DictConfig], overrides) -> None:
    from zoo.summary import failure_causes

    causes = failure_causes(cfgs)
    if causes:
        status = shlex.join(["zoo-status", "--failed", *overrides])
        print(
            *causes,
            f"{status}  lists each failed model; the same command again retrains only them",
            sep="\n",
            file=sys.stderr,
        )
        sys.exit(1)
