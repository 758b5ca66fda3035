"""The manifest of a packed zoo, `manifests/<zoo>.json` (schema: manifests/schema.json).

It lists every shard with its size, sample count and sha256, and counts every model of
the zoo — packed or not — by status and phase, so a user sees what a pack left out.
"""

import json
import os
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import zoo
from zoo.phases.rules import PHASES
from zoo.shard_format import SCHEMA_VERSION

UNLABELED = "unlabeled"


@dataclass(frozen=True)
class ModelRecord:
    """What the manifest counts of one model."""

    id: str
    status: str
    phase: str | None
    grid: dict
    checkpoints: int
    packed: bool


def grid_values(records: list[ModelRecord], axes: list[str]) -> dict[str, list]:
    """Distinct values per grid axis (and `seed`), numbers ascending before other values."""
    keys = list(axes) + [k for r in records for k in r.grid if k not in axes]
    values = {}
    for key in dict.fromkeys(keys):
        distinct = {json.dumps(r.grid[key], sort_keys=True): r.grid[key] for r in records if key in r.grid}
        values[key] = sorted(
            distinct.values(),
            key=lambda v: (
                (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, json.dumps(v))
            ),
        )
    return values


def build_manifest(
    *, zoo_name: str, axes: list[str], records: list[ModelRecord], shards: list[dict], location: str
) -> dict:
    packed = [r for r in records if r.packed]
    phases = Counter(r.phase or UNLABELED for r in records)
    return {
        "schema_version": SCHEMA_VERSION,
        "zoo": zoo_name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "version": zoo.__version__,
        "grid": {"axes": list(axes), "values": grid_values(records, axes)},
        "location": location,
        "shards": shards,
        "counts": {
            "models": len(records),
            "checkpoints": sum(r.checkpoints for r in records),
            "packed_models": len(packed),
            "samples": sum(s["samples"] for s in shards),
            "bytes": sum(s["bytes"] for s in shards),
            "status": dict(sorted(Counter(r.status for r in records).items())),
            "phase": {p: phases[p] for p in (*PHASES, UNLABELED) if phases[p]},
        },
    }


def relative_location(out_dir: str | Path, manifest_path: str | Path) -> str:
    """The shard directory as the manifest records it: relative to the manifest, so both can move together."""
    return os.path.relpath(Path(out_dir).resolve(), Path(manifest_path).resolve().parent)
