"""Where the Hydra configs live, and the checks Hydra's own composition cannot make."""

import math
import os
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


def _shipped(name: str) -> Path:
    """`conf` or `manifests` of the installed package (setup.py ships the checkout's top-level
    folders as zoo/conf and zoo/manifests), else of the checkout this module runs from."""
    installed = Path(str(files("zoo") / name))
    return installed if installed.is_dir() else Path(__file__).resolve().parent.parent / name


CONF_DIR = _shipped("conf")
SCHEMA_PATH = _shipped("manifests") / "schema.json"
USER_CONFIG_ENV = "ZOO_CONFIG_DIR"  # folders of the user's own configs (os.pathsep-separated), searched first


def search_path_overrides() -> list[str]:
    """The Hydra override that adds $ZOO_CONFIG_DIR's folders to the config search path, so that a
    user's `<dir>/zoo/mine.yaml` is `zoo=mine` without editing the installed package."""
    dirs = [d for d in os.environ.get(USER_CONFIG_ENV, "").split(os.pathsep) if d]
    return [f"hydra.searchpath=[{','.join('file://' + str(Path(d).resolve()) for d in dirs)}]"] if dirs else []


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

POSITIVE_INTS = (
    "model.width",
    "model.depth",
    "data.batch_size",
    "data.eval_batch_size",
    "trainer.max_epochs",
    "apply.batch_size",
    "apply.bn_samples",
    "apply.max_iter",
    "apply.last_k",
    "apply.prune.finetune_steps",
    "apply.transfer.epochs",
    "apply.transfer.batch_size",
)
POSITIVE_FLOATS = ("optim.lr", "landscape.hessian.max_basis_gb")
BOOLEANS = ("runtime.tf32",)
FRACTIONS = ("apply.val_fraction", "apply.prune.margin")  # strictly between 0 and 1
AT_LEAST_TWO = ("apply.n_points",)  # points on a path, both ends included


class ConfigError(ValueError):
    """A config value that composes but cannot be trained with."""


def _numbers(node: DictConfig | ListConfig | Mapping | list, prefix: str = ""):
    """(dotted key, value) of every float in a config (the `hydra` node left out). A value whose
    interpolation cannot resolve in this config is skipped: where it is used, it says why."""
    for key in node.keys() if isinstance(node, (DictConfig, Mapping)) else range(len(node)):
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if dotted == "hydra":
            continue
        try:
            value = node[key]
        except OmegaConfBaseException:
            continue
        if isinstance(value, (DictConfig, ListConfig, Mapping, list)):
            yield from _numbers(value, dotted)
        elif isinstance(value, float):
            yield dotted, value


def _select(cfg: DictConfig | Mapping, key: str):
    if isinstance(cfg, DictConfig):
        return OmegaConf.select(cfg, key, default=None)
    for part in key.split("."):
        if not isinstance(cfg, Mapping) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


def validate(cfg: DictConfig | Mapping) -> None:
    """Reject bad values up front, naming the key, instead of failing deep inside training. `cfg`:
    a config, or one resolved into plain dicts."""
    for key, value in _numbers(cfg):
        if not math.isfinite(value):
            raise ConfigError(f"{key}={value!r} is not a finite number: fix the override or its conf/ file")
    for key in POSITIVE_INTS + POSITIVE_FLOATS:
        value = _select(cfg, key)
        kind = int if key in POSITIVE_INTS else (int, float)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind) or value <= 0):
            expected = "a positive integer" if key in POSITIVE_INTS else "a positive number"
            raise ConfigError(f"{key}={value!r} is not {expected}: fix the override or its conf/ file")
    for key in BOOLEANS:
        value = _select(cfg, key)
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is not true or false: fix the override or its conf/ file")
    for key in FRACTIONS + AT_LEAST_TWO:
        value = _select(cfg, key)
        fraction = key in FRACTIONS
        if value is not None and not (0 < value < 1 if fraction else isinstance(value, int) and value >= 2):
            expected = "a fraction strictly between 0 and 1" if fraction else "an integer of at least 2"
            raise ConfigError(f"{key}={value!r} is not {expected}: fix the override or its conf/ file")


def population_setting(cfg: DictConfig) -> str | int:
    """`runtime.population` as "auto", "off" or the largest population. YAML reads an unquoted `off`
    as false (and `on` as true), so false is off and true is auto."""
    value = cfg.runtime.get("population", "off")
    if value is False or value == "off":
        return "off"
    if value is True or value == "auto":
        return "auto"
    if isinstance(value, int) and value > 0:
        return value
    raise ConfigError(
        f"runtime.population={value!r} is not auto, off or a positive integer: fix the override or its conf/ file"
    )


def task_memory(cfg: DictConfig) -> int | None:
    """Bytes a population may plan with on one array task, from the cluster profile, as zoo-plan
    counts them: one GPU's memory (`gpu_mem_gb`: a population trains on one device) when tasks get
    GPUs, else the task's `mem_gb`. None when that is unset: grouping then takes what is free here."""
    cluster = cfg.cluster
    gb = cluster.gpu_mem_gb if cluster.gpus_per_task else cluster.mem_gb
    return int(gb * 2**30) if gb else None


def task_name(cfg: DictConfig | Mapping) -> str:
    """The task of a model config (`data.task`): classify, lm or pinn (zoo.train.tasks.task_of
    builds it)."""
    return cfg.data.get("task", "classify")


def accumulation(cfg: DictConfig) -> int:
    """Micro-batches per optimizer step. `runtime.micro_batch_size` splits every batch so that large
    cells fit in GPU memory (gradient accumulation: the same batches and steps; BatchNorm then
    normalizes per micro-batch, as under data parallelism without SyncBatchNorm)."""
    micro, batch = cfg.runtime.get("micro_batch_size"), cfg.data.get("batch_size")
    if not micro or not batch or micro >= batch:
        return 1
    if batch % micro:
        raise ConfigError(f"runtime.micro_batch_size={micro} does not divide data.batch_size={batch}")
    return batch // micro
