"""`zoo-pack`: pack a trained zoo into shards + manifest, verify shards, export HDF5.

    zoo-pack zoo=demo                                  shards + manifests/demo.json
    zoo-pack verify manifest=manifests/demo.json [shards=<dir or URL pattern>]
    zoo-pack hdf5 zoo=demo [pack.hdf5_dtype=float16]

Overrides are Hydra's `key=value` (conf/pack.yaml, which extends conf/train.yaml, so the overrides
of `zoo-train -m` work unchanged): the models packed are exactly those of the sweep they select
(run dirs of other sub-grids are reported and left out; `pack.all_runs=true` packs them too).
Exit code 1 when verify finds problems or a shard cannot be read.
"""

import sys
from pathlib import Path

from omegaconf import DictConfig

from zoo.pack import export_hdf5, pack_zoo, verify
from zoo.pack.packing import outside
from zoo.sweep import cell_configs, compose_config, fixed_overrides

COMMANDS = ("pack", "verify", "hdf5")


def compose(argv: list[str]) -> tuple[str, DictConfig, list[str]]:
    """`(command, config, overrides)` from `[command] key=value ...`."""
    command = argv[0] if argv and argv[0] in COMMANDS else "pack"
    overrides = argv[1:] if argv and argv[0] in COMMANDS else argv
    bad = [a for a in overrides if "=" not in a]
    if bad:
        sys.exit(f"zoo-pack: expected [{'|'.join(COMMANDS)}] key=value ..., got {bad}")
    return command, compose_config(fixed_overrides(overrides), config_name="pack"), overrides


def size(path: str | Path) -> str:
    path = Path(path)
    total = sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size
    return f"{total / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    command, cfg, overrides = compose(sys.argv[1:] if argv is None else argv)
    try:
        return run(command, cfg, overrides)
    except (OSError, ValueError) as err:  # user mistakes, bad shards, a full disk: their messages name the fix
        sys.exit(f"zoo-pack {command}: {err}")


def run(command: str, cfg: DictConfig, overrides: list[str]) -> int:
    p = cfg.pack
    if command == "pack":
        ids = None if p.all_runs else [c.id for c in cell_configs(overrides, config_name="pack")]
        others = [] if ids is None else outside(cfg.paths.runs, cfg.zoo.name, ids)
        if others:
            print(f"{len(others)} run dir(s) in {Path(cfg.paths.runs) / cfg.zoo.name / 'models'} are not models of "
                  f"this sweep (another sub-grid or override): left out (pack.all_runs=true packs them too)")
        manifest = pack_zoo(cfg.paths.runs, cfg.zoo.name, p.out, p.manifest, model_ids=ids,
                            max_shard_bytes=p.max_shard_bytes, max_shard_count=p.max_shard_count,
                            include_failed=p.include_failed)
        counts = manifest["counts"]
        print(f"packed {counts['packed_models']}/{counts['models']} models, {counts['samples']} samples into "
              f"{len(manifest['shards'])} shards in {p.out} ({size(p.out)}); manifest {p.manifest}")
        return 0
    if command == "hdf5":
        path = export_hdf5(p.manifest, p.hdf5, dtype=p.hdf5_dtype)
        print(f"wrote {path} ({size(path)})")
        return 0
    problems = verify(cfg.manifest, cfg.shards)
    for problem in problems:
        print(problem)
    print(f"{cfg.manifest}: {len(problems)} problem(s)" if problems else f"{cfg.manifest}: all shards verified")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
