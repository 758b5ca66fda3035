"""Model ids: `<prefix>-<8 hex>`, the hex a sha256 of every setting that changes the trained weights.

The same grid cell always gets the same id, so a relaunched sweep finds its finished
and unfinished models. Only the sections listed in `HASHED` enter the hash (an allowlist):
sections that say *where* or *how fast* (paths, which epochs are saved, launcher, cluster
profile, threads, post-processing, the zoo's name) do not, and a config group added later
changes no id unless it is added here — which is a decision to retrain every zoo.
"""

import hashlib
import json
from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf, open_dict

HASHED = ("model", "data", "optim", "trainer", "seed")


def to_plain(cfg: DictConfig | Mapping) -> dict:
    """A config as plain dicts, resolved."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def short_hash(obj) -> str:
    """8 hex of a sha256 of canonical JSON: for anything that must be named by its content."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def model_hash(cfg: DictConfig | Mapping) -> str:
    return short_hash({k: v for k, v in to_plain(cfg).items() if k in HASHED})


def model_id(cfg: DictConfig) -> str:
    """E.g. `mlp-w16-b32-s0-1a2b3c4d`; the prefix is the zoo's `zoo.prefix` template."""
    return f"{cfg.zoo.prefix}-{model_hash(cfg)}"


def grid_values(cfg: DictConfig) -> dict:
    """The values of this model on the zoo's grid axes, plus its seed (dotted keys)."""
    values = {axis: OmegaConf.select(cfg, axis, throw_on_missing=True) for axis in cfg.zoo.axes}
    values["seed"] = cfg.seed
    return values


def with_identity(cfg: DictConfig) -> DictConfig:
    """A resolved copy of `cfg` with `id` and `grid` filled in, as written to `config.yaml`."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(cfg):
        cfg.id = model_id(cfg)
        cfg.grid = grid_values(cfg)
    return cfg


def identity(resolved: Mapping) -> dict:
    """`resolved` (a config resolved into plain dicts) with `id` and `grid` added, as plain dicts."""

    def select(key: str):
        value = resolved
        for part in key.split("."):
            value = value[part]
        return value

    grid = {axis: select(axis) for axis in resolved["zoo"]["axes"]}
    return {
        **resolved,
        "id": f"{resolved['zoo']['prefix']}-{model_hash(resolved)}",
        "grid": {**grid, "seed": resolved["seed"]},
    }
