"""`zoo-train`: train one model, or a whole zoo with `-m` (Hydra multirun)."""

import multiprocessing

import hydra
from omegaconf import DictConfig

from zoo.config import CONF_DIR


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> str:
    # Imported here: a sweep sent to SLURM never trains in this process, and torch + Lightning
    # take seconds to import (on a login node, more).
    from zoo.train.run import train_model

    if multiprocessing.parent_process() is not None:  # a worker of the local (joblib) launcher
        from zoo.parallel import exit_with_parent

        exit_with_parent()
    return train_model(cfg).state


if __name__ == "__main__":
    main()
