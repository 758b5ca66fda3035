"""`zoo-train`: train one model, or a whole zoo with `-m` (Hydra multirun)."""

import multiprocessing
import sys

from zoo.cli import front
from zoo.config import CONF_DIR, search_path_overrides

SCRIPT = front.Script(
    "zoo-train",
    "[-m] [key=value ...]",
    "Train one model (its run dir under runs/<zoo>/models/<id>/), or with -m every cell of a zoo's grid\n"
    "(command-line sweeps replace the zoo's axis values). Finished models are skipped, killed ones\n"
    "resume. Hydra's own flags (-m, --cfg job, --info, --hydra-help) work as in any Hydra app.",
    [
        "zoo-train model.width=64 data.batch_size=32 seed=3",
        "zoo-train -m zoo=demo model.width=8,16 trainer.max_epochs=3",
        "zoo-train -m zoo=demo hydra/launcher=population",
        "zoo-train -m zoo=cifar10_resnet18 hydra/launcher=slurm cluster=example_gpu",
    ],
    flags={"-m, --multirun": "train every cell of the sweep (the zoo's grid and command-line sweeps)"},
    own_flags_only=False,
)


def train(cfg) -> str:
    """Hydra's task function: one model. Imported here: a sweep sent to SLURM never trains in this
    process, and torch + Lightning take seconds to import (on a login node, more)."""
    from zoo.train.run import train_model

    if multiprocessing.parent_process() is not None:  # a worker of the local (joblib) launcher
        from zoo.parallel import exit_with_parent

        exit_with_parent()
    return train_model(cfg).state


def run(args: list[str]) -> None:
    import hydra

    sys.argv = [sys.argv[0], *search_path_overrides(), *args]  # Hydra reads its arguments there
    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")(train)()


def main(argv: list[str] | None = None) -> None:
    front.main(SCRIPT, run, argv)


if __name__ == "__main__":
    main()
