"""Shard samples: one per model × checkpoint epoch, keyed `<id>_e<epoch:04d>` (docs/design.md).

A sample is two tar members: `<key>.weights.safetensors` (the checkpoint's bytes, unchanged)
and `<key>.meta.json` (who the model is, how it was trained, how it did at that epoch).
"""

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

import zoo
from zoo.models import build
from zoo.pack.manifest import UNLABELED
from zoo.shard_format import MACHINE_SECTIONS, layout, sample_key
from zoo.train.rundir import RunDir


@dataclass(frozen=True)
class Sample:
    key: str
    meta: dict
    weights: bytes

    def members(self) -> list[tuple[str, bytes]]:
        """`(name, bytes)` of the tar members, in a fixed order with canonical JSON."""
        meta = json.dumps(self.meta, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()
        return [(f"{self.key}.meta.json", meta), (f"{self.key}.weights.safetensors", self.weights)]


def make_sample(
    *,
    zoo_name: str,
    model_id: str,
    epoch: int,
    arch: str,
    grid: Mapping,
    config: Mapping,
    status: str,
    phase: str | None,
    metrics: Mapping | None,
    landscape: Mapping | None,
    weights: bytes,
    order: list[str],
    landscape_fields: Mapping[str, int | None] | None = None,
) -> Sample:
    """The sample of one checkpoint; `order` lists the tensor names in module order; `landscape_fields`
    what the zoo's landscape stage measured (see `stable_landscape`)."""
    spec = layout(weights, order)
    meta = {
        "zoo": zoo_name,
        "id": model_id,
        "epoch": epoch,
        "arch": arch,
        "grid": dict(grid),
        "config": {k: v for k, v in config.items() if k not in MACHINE_SECTIONS},
        "n_params": sum(torch.Size(s["shape"]).numel() for s in spec if getattr(torch, s["dtype"]).is_floating_point),
        "layout": spec,
        "metrics": metrics,
        "landscape": stable_landscape(landscape, landscape_fields or {}),
        "phase": phase or UNLABELED,
        "status": status,
        "sha256": hashlib.sha256(weights).hexdigest(),
        "version": zoo.__version__,
    }
    return Sample(sample_key(model_id, epoch), meta, weights)


def landscape_fields(measurements: Iterable[Mapping]) -> dict[str, int | None]:
    """Every field the landscape stage measured in a zoo (any model, any epoch): None for a number,
    the longest length for a list of numbers."""
    fields: dict[str, int | None] = {}
    for measured in measurements:
        for key, value in measured.items():
            fields[key] = max(len(value), fields.get(key) or 0) if isinstance(value, list) else None
    return dict(sorted(fields.items()))


def stable_landscape(measured: Mapping | None, fields: Mapping[str, int | None]) -> dict:
    """A sample's `landscape` with the same keys and types in every sample of a zoo, measured or not,
    so that tools which infer a schema from the first samples (Hugging Face `datasets`) read them all:
    `measured`, then each field as a float, or a list of floats, NaN where this checkpoint was not measured."""
    measured_values = measured or {}
    landscape = {"measured": measured is not None}
    for key, length in fields.items():
        value = measured_values.get(key)
        if length is None:
            landscape[key] = math.nan if value is None else float(value)
        else:
            landscape[key] = [math.nan] * length if value is None else [float(v) for v in value]
    return landscape


def module_order(model_cfg: Mapping) -> list[str]:
    """State-dict names of the model, in module order (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        return list(build({**model_cfg, "init": "default"}).state_dict())


def read_json(path: Path, default=None):
    return json.loads(path.read_text()) if path.exists() else default


def untimed(row: Mapping | None, *drop: str) -> dict | None:
    """A result without its `seconds` (and `drop`): a timing is no property of the model, and the
    same weights and results must give the same sample bytes."""
    return None if row is None else {k: v for k, v in row.items() if k not in ("seconds", *drop)}


def run_samples(
    run: RunDir, zoo_name: str, phase: str | None, landscape_fields: Mapping[str, int | None] | None = None
) -> Iterator[Sample]:
    """The samples of one run dir, epoch by epoch; one checkpoint in memory at a time."""
    config = OmegaConf.to_container(run.config())
    metrics = {row["epoch"]: untimed(row, "epoch") for row in run.metrics()}
    landscape = read_json(run.path / "landscape.json", {})
    order = module_order(config["model"])
    status = run.status()[0]
    for epoch, path in run.checkpoints().items():
        yield make_sample(
            zoo_name=zoo_name,
            model_id=run.id,
            epoch=epoch,
            arch=config["model"]["name"],
            grid=config["grid"],
            config=config,
            status=status,
            phase=phase,
            metrics=metrics.get(epoch),
            landscape=untimed(landscape.get(str(epoch))),
            weights=path.read_bytes(),
            order=order,
            landscape_fields=landscape_fields,
        )
