"""Hydra accepts launchers only from the `hydra_plugins` package: this names zoo's SLURM launcher
(zoo/slurm/launcher.py) there, for `_target_` in conf/hydra/launcher/slurm.yaml."""

from zoo.slurm import launcher


class SlurmLauncher(launcher.SlurmLauncher):
    pass
