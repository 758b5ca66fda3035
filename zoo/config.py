"""Where the Hydra configs live, and the checks Hydra's own composition cannot make."""

import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# `${slug:${optim.lr}}` puts a number into `zoo.prefix` without a dot (0.001 -> 0p001): model ids
# key shard samples, and webdataset splits a key at its first dot.
OmegaConf.register_new_resolver("slug", lambda value: format(value, "g").replace(".", "p"), replace=True)


def reference_accumulation(depth: int, width: int, batch_size: int) -> int:
    """The gradient accumulation the reference study used for an RGB ResNet cell (its
    NN_tune_trainable.find_gradient_accumulation_from_config): only large ResNet-50 cells."""
    if depth != 50:
        return 1
    threshold = {64: 1024, 128: 512, 256: 256}.get(width)
    return batch_size // (128 * 256 // width) if threshold and batch_size >= threshold else 1


# conf/optim/sgd_reference_onecycle.yaml: `${reference_accumulation:${model.depth},${model.width},${data.batch_size}}`
OmegaConf.register_new_resolver("reference_accumulation", reference_accumulation, replace=True)

POSITIVE_INTS = ("model.width", "model.depth", "data.batch_size", "data.eval_batch_size", "trainer.max_epochs",
                 "apply.batch_size", "apply.bn_samples", "apply.max_iter", "apply.last_k", "apply.prune.finetune_steps",
                 "apply.transfer.epochs", "apply.transfer.batch_size")
POSITIVE_FLOATS = ("optim.lr",)
FRACTIONS = ("apply.val_fraction", "apply.prune.margin")  # strictly between 0 and 1
AT_LEAST_TWO = ("apply.n_points",)   # points on a path, both ends included


class ConfigError(ValueError):
    """A config value that composes but cannot be trained with."""


def _numbers(node, prefix: str = ""):
    """(dotted key, value) of every number in a plain config tree."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, (dict, list)):
            yield from _numbers(value, dotted)
        elif isinstance(value, float):
            yield dotted, value


def validate(cfg: DictConfig) -> None:
    """Reject bad values up front, naming the key, instead of failing deep inside training."""
    plain = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    for key, value in _numbers(plain):
        if not math.isfinite(value):
            raise ConfigError(f"{key}={value!r} is not a finite number: fix the override or its conf/ file")
    for key in POSITIVE_INTS + POSITIVE_FLOATS:
        value = OmegaConf.select(cfg, key, default=None)
        kind = int if key in POSITIVE_INTS else (int, float)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind) or value <= 0):
            expected = "a positive integer" if key in POSITIVE_INTS else "a positive number"
            raise ConfigError(f"{key}={value!r} is not {expected}: fix the override or its conf/ file")
    for key in FRACTIONS + AT_LEAST_TWO:
        value = OmegaConf.select(cfg, key, default=None)
        fraction = key in FRACTIONS
        if value is not None and not (0 < value < 1 if fraction else isinstance(value, int) and value >= 2):
            expected = "a fraction strictly between 0 and 1" if fraction else "an integer of at least 2"
            raise ConfigError(f"{key}={value!r} is not {expected}: fix the override or its conf/ file")


def task_memory(cfg: DictConfig) -> int | None:
    """Bytes a population may plan with on one array task, from the cluster profile, as zoo-plan
    counts them: one GPU's memory (`gpu_mem_gb`: a population trains on one device) when tasks get
    GPUs, else the task's `mem_gb`. None when that is unset: grouping then takes what is free here."""
    cluster = cfg.cluster
    gb = cluster.gpu_mem_gb if cluster.gpus_per_task else cluster.mem_gb
    return int(gb * 2**30) if gb else None
