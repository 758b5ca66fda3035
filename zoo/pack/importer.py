"""Importing a zoo in the reference study's published layout into shards + manifest.

    <zoo dir>/<model folder>/params.json                  the model's config (ray tune's flat keys)
                             result.json                  one JSON line per epoch: training_iteration, train_loss, ...
                             checkpoint_%06d/checkpoints  torch.save(state_dict); the number is the epoch

Checkpoints are read with `torch.load(weights_only=True)` only: a pickle holding anything but
tensors and plain containers is refused, never executed. Each becomes a safetensors sample.
Metrics at an epoch come from the result.json line whose `training_iteration` is that epoch.
A model type with a `zoo.models` twin (ResNet-18/50_width, MLP: zoo.pack.reference) is stored under
our tensor names with its config in `config["model"]`, so `zoo.models.from_meta` loads it strictly;
other types keep the reference's names and arch.
"""

import json
import math
import re
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import save

from zoo.pack import reference
from zoo.pack.packing import Model, pack_models
from zoo.pack.samples import Sample, make_sample
from zoo.train.ids import short_hash

CHECKPOINT = re.compile(r"checkpoint_(\d+)")


def checkpoints(folder: Path) -> dict[int, Path]:
    found = {
        int(m.group(1)): p / "checkpoints"
        for p in folder.iterdir()
        if (m := CHECKPOINT.fullmatch(p.name)) and (p / "checkpoints").is_file()
    }
    return dict(sorted(found.items()))


def results(folder: Path) -> dict[int, dict]:
    """Scalar results by epoch (`training_iteration`), from result.json; {} if absent."""
    path = folder / "result.json"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return {
        row.get("training_iteration", i): {k: v for k, v in row.items() if not isinstance(v, (dict, list))}
        for i, row in enumerate(rows)
    }


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict, read without executing pickled code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises various types for unsafe or broken pickles
        raise ValueError(
            f"{path}: not loadable with torch.load(weights_only=True) ({type(err).__name__}: "
            f"{str(err).splitlines()[0]}); only plain state dicts of tensors are imported"
        ) from None
    if not isinstance(state, Mapping) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    return dict(state)


def reference_samples(
    folder: Path, *, zoo_name: str, model_id: str, arch: str, grid: dict, config: dict, status: str
) -> Iterator[Sample]:
    metrics = results(folder)
    model_cfg = config.get("model")
    for epoch, path in checkpoints(folder).items():
        state = load_state_dict(path)
        if model_cfg is not None:
            state = reference.to_zoo(state, model_cfg, str(path))
        weights = save({k: t.detach().clone().contiguous() for k, t in state.items()})  # clone: untie shared tensors
        yield make_sample(
            zoo_name=zoo_name,
            model_id=model_id,
            epoch=epoch,
            arch=arch,
            grid=grid,
            config=config,
            status=status,
            phase=None,
            metrics=metrics.get(epoch),
            landscape=None,
            weights=weights,
            order=list(state),
        )


def reference_models(src: str | Path, zoo_name: str) -> tuple[list[Model], list[str]]:
    """The models of a reference-layout zoo and its grid axes (the params that vary between models)."""
    folders = sorted(p for p in Path(src).iterdir() if (p / "params.json").is_file())
    if not folders:
        raise FileNotFoundError(f"no model folders with params.json in {src}; is it an unpacked reference zoo?")
    params = {f: json.loads((f / "params.json").read_text()) for f in folders}
    keys = dict.fromkeys(k for p in params.values() for k in p)
    axes = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in params.values()}) > 1]
    prefix = re.sub(r"[^A-Za-z0-9_-]", "_", zoo_name)[:40]
    models, seen = [], {}
    for folder in folders:
        p = params[folder]
        model_id = f"{prefix}-{short_hash(p)}"  # all of params.json: any flat `model::…` key may differ
        if model_id in seen:
            raise ValueError(f"{folder} and {seen[model_id]} have identical params.json; remove the duplicate")
        seen[model_id] = folder
        losses = [v for row in results(folder).values() for k, v in row.items() if k.endswith("loss")]
        status = "diverged" if any(isinstance(v, float) and not math.isfinite(v) for v in losses) else "ok"
        grid = {k: p.get(k) for k in axes}
        model_cfg = reference.model_config(p)  # the flat "model::..." keys cannot collide with "model"
        config, arch = (
            (p, str(p.get("model::type", "unknown")))
            if model_cfg is None
            else ({**p, "model": model_cfg}, model_cfg["name"])
        )
        models.append(
            Model(
                id=model_id,
                status=status,
                phase=None,
                grid=grid,
                checkpoints=len(checkpoints(folder)),
                samples=partial(
                    reference_samples,
                    folder,
                    zoo_name=zoo_name,
                    model_id=model_id,
                    arch=arch,
                    grid=grid,
                    config=config,
                    status=status,
                ),
            )
        )
    return models, axes


def import_reference(
    src: str | Path,
    zoo_name: str,
    out_dir: str | Path,
    manifest_path: str | Path,
    *,
    max_shard_bytes: int = 256 * 2**20,
    max_shard_count: int = 256,
    include_failed: bool = False,
) -> dict:
    """Convert the reference-layout zoo in `src` into `out_dir/<zoo>-%06d.tar` + manifest; returns the manifest."""
    models, axes = reference_models(src, zoo_name)
    return pack_models(
        models,
        zoo_name=zoo_name,
        axes=axes,
        out_dir=out_dir,
        manifest_path=manifest_path,
        max_shard_bytes=max_shard_bytes,
        max_shard_count=max_shard_count,
        include_failed=include_failed,
    )
