"""Packing a zoo: models → shards + manifest. `pack_zoo` reads run dirs; `zoo.pack.importer`
feeds models of the reference layout through the same `pack_models`."""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from omegaconf import OmegaConf
from tqdm import tqdm

from zoo.atomic import write_json
from zoo.load.sources import read_manifest
from zoo.lock import hold
from zoo.pack.card import write_card
from zoo.pack.manifest import ModelRecord, build_manifest, relative_location
from zoo.pack.samples import Sample, landscape_fields, read_json, run_samples, untimed
from zoo.pack.shards import remove_stale, write_shards
from zoo.train.rundir import RunDir, list_runs, zoo_dir

FAILED = ("diverged", "failed")


@dataclass(frozen=True)
class Model:
    """One model to pack: what the manifest counts, and its samples, read when they are written."""

    id: str
    status: str  # ok | diverged | failed | running | missing
    phase: str | None
    grid: dict
    checkpoints: int
    samples: Callable[[], Iterator[Sample]]


def pack_models(
    models: list[Model],
    *,
    zoo_name: str,
    axes: list[str],
    out_dir: str | Path,
    manifest_path: str | Path,
    max_shard_bytes: int,
    max_shard_count: int,
    include_failed: bool,
) -> dict:
    """Write the samples of the models to pack into shards, then the manifest; returns the manifest.
    One pack at a time per shard folder and zoo (a lock file there); the manifest commits the pack.

    Models with status `ok` are packed; `diverged` and `failed` ones too if `include_failed`;
    unfinished ones never. All are counted in the manifest.
    """
    packed = {m.id for m in models if m.status == "ok" or (include_failed and m.status in FAILED)}
    first: list[dict] = []  # one sample's meta, for the dataset card's features

    def samples() -> Iterator[Sample]:
        for model in tqdm(models, desc=f"pack {zoo_name}", unit="model"):
            if model.id in packed:
                for sample in model.samples():
                    first[:] = first or [sample.meta]
                    yield sample

    with hold(Path(out_dir) / f".{zoo_name}.lock", wait=True, what=f"the pack of {zoo_name} in {out_dir}"):
        shards = write_shards(samples(), out_dir, zoo_name, max_bytes=max_shard_bytes, max_count=max_shard_count)
        records = [ModelRecord(m.id, m.status, m.phase, m.grid, m.checkpoints, m.id in packed) for m in models]
        manifest = build_manifest(
            zoo_name=zoo_name,
            axes=axes,
            records=records,
            shards=shards,
            location=relative_location(out_dir, manifest_path),
        )
        try:
            write_json(manifest_path, manifest)  # the commit: readers switch from the old shards to these
        except BaseException:  # e.g. a full disk: the old manifest and its shards stay as they were
            remove_stale(out_dir, zoo_name, keep=listed_shards(manifest_path))
            raise
        remove_stale(out_dir, zoo_name, keep={s["name"] for s in shards})
        if first:
            write_card(out_dir, manifest, first[0])
    return manifest


def listed_shards(manifest_path: str | Path) -> set[str]:
    """The shard names of the manifest at `manifest_path`; none if it is absent or unreadable."""
    try:
        return {s["name"] for s in read_manifest(manifest_path)["shards"]}
    except (OSError, ValueError):
        return set()


def pack_zoo(
    runs_root: str | Path,
    zoo_name: str,
    out_dir: str | Path,
    manifest_path: str | Path,
    *,
    model_ids: Sequence[str] | None = None,
    max_shard_bytes: int = 256 * 2**20,
    max_shard_count: int = 256,
    include_failed: bool = False,
) -> dict:
    """Pack the models `model_ids` (the sweep's; None: every run dir) of `runs_root/<zoo>/models/`
    into `out_dir/<zoo>-<generation>-%06d.tar` and write the manifest. Models of the sweep that never started
    are counted as `missing`; run dirs outside the sweep (another sub-grid or override) are left out.

    Uses `runs_root/<zoo>/phases.json` and each model's `landscape.json` where they exist.
    """
    found = {run.id: run for run in list_runs(runs_root, zoo_name)}
    if not found:
        raise FileNotFoundError(
            f"no models in {zoo_dir(runs_root, zoo_name) / 'models'}; train the zoo first "
            f"(`zoo-train -m zoo={zoo_name}`) or set paths.runs"
        )
    ids = list(found) if model_ids is None else list(model_ids)
    runs = [found.get(i) or RunDir(zoo_dir(runs_root, zoo_name) / "models" / i) for i in ids]
    phases = read_json(zoo_dir(runs_root, zoo_name) / "phases.json", {})
    fields = landscape_fields(untimed(m) for run in runs for m in read_json(run.path / "landscape.json", {}).values())
    models, axes = [], []
    for run in runs:
        config = OmegaConf.to_container(run.config()) if run.config_path.exists() else {}
        axes = axes or list(config.get("zoo", {}).get("axes", []))
        phase = phases.get(run.id)
        models.append(
            Model(
                id=run.id,
                status=run.status()[0],
                phase=phase,
                grid=config.get("grid", {}),
                checkpoints=len(run.checkpoints()),
                samples=partial(run_samples, run, zoo_name, phase, fields),
            )
        )
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


def outside(runs_root: str | Path, zoo_name: str, model_ids: Sequence[str]) -> list[str]:
    """Run dirs of the zoo that are not models of the sweep `model_ids`."""
    wanted = set(model_ids)
    return [run.id for run in list_runs(runs_root, zoo_name) if run.id not in wanted]
