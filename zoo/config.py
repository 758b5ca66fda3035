"""Where the Hydra configs live, and the checks Hydra's own composition cannot make."""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# `${slug:${optim.lr}}` puts a number into `zoo.prefix` without a dot (0.001 -> 0p001): model ids
# key shard samples, and webdataset splits a key at its first dot.
OmegaConf.register_new_resolver("slug", lambda value: format(value, "g").replace(".", "p"), replace=True)

POSITIVE_INTS = ("model.width", "model.depth", "data.batch_size", "data.eval_batch_size", "trainer.max_epochs")
POSITIVE_FLOATS = ("optim.lr",)


class ConfigError(ValueError):
    """A config value that composes but cannot be trained with."""


def validate(cfg: DictConfig) -> None:
    """Reject bad values up front, naming the key, instead of failing deep inside training."""
    for key in POSITIVE_INTS + POSITIVE_FLOATS:
        value = OmegaConf.select(cfg, key, default=None)
        kind = int if key in POSITIVE_INTS else (int, float)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind) or value <= 0):
            expected = "a positive integer" if key in POSITIVE_INTS else "a positive number"
            raise ConfigError(f"{key}={value!r} is not {expected}: fix the override or its conf/ file")
