"""`zoo-pack`: pack a trained zoo into shards + manifest, verify shards, export HDF5.

Overrides are Hydra's `key=value` (conf/pack.yaml, which extends conf/train.yaml, so the overrides
of `zoo-train -m` work unchanged): the models packed are exactly those of the sweep they select
(run dirs of other sub-grids are reported and left out; `pack.all_runs=true` packs them too).
Exit code 1 when verify finds problems or a shard cannot be read.
"""

from pathlib import Path

from zoo.cli import front

COMMANDS = ("pack", "verify", "hdf5")
SCRIPT = front.Script(
    "zoo-pack",
    "[pack|verify|hdf5] [key=value ...]",
    "pack (default): webdataset shards + manifests/<zoo>.json of every trained model of a zoo;\n"
    "verify: check every shard and sample hash against a manifest (exit code 1 on a problem);\n"
    "hdf5: one HDF5 file of the packed zoo. Settings in conf/pack.yaml; the overrides of `zoo-train -m`\n"
    "select the zoo and its sweep (pack.all_runs=true also packs run dirs of other sub-grids).",
    [
        "zoo-pack zoo=demo",
        "zoo-pack verify manifest=manifests/demo.json [shards=DIR or URL pattern]",
        "zoo-pack hdf5 zoo=demo pack.hdf5_dtype=float16",
    ],
)


def compose(script: front.Script, args: list[str]):
    """`(command, config, overrides)` from `[command] key=value ...`."""
    from zoo.sweep import compose_config, fixed_overrides

    command = args[0] if args and args[0] in COMMANDS else "pack"
    overrides = front.overrides_only(script, args[1:] if args and args[0] in COMMANDS else args)
    return command, compose_config(fixed_overrides(overrides), config_name="pack"), overrides


def size(path: str | Path) -> str:
    path = Path(path)
    total = sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size
    return f"{total / 2**20:.1f} MiB"


def run(args: list[str]) -> int:
    from zoo.pack import export_hdf5, pack_zoo, verify
    from zoo.pack.packing import outside
    from zoo.sweep import cell_configs

    command, cfg, overrides = compose(SCRIPT, args)
    p = cfg.pack
    if command == "pack":
        ids = None if p.all_runs else [c.id for c in cell_configs(overrides, config_name="pack")]
        others = [] if ids is None else outside(cfg.paths.runs, cfg.zoo.name, ids)
        if others:
            print(
                f"{len(others)} run dir(s) in {Path(cfg.paths.runs) / cfg.zoo.name / 'models'} are not models of "
                f"this sweep (another sub-grid or override): left out (pack.all_runs=true packs them too)"
            )
        manifest = pack_zoo(
            cfg.paths.runs,
            cfg.zoo.name,
            p.out,
            p.manifest,
            model_ids=ids,
            max_shard_bytes=p.max_shard_bytes,
            max_shard_count=p.max_shard_count,
            include_failed=p.include_failed,
        )
        counts = manifest["counts"]
        print(
            f"packed {counts['packed_models']}/{counts['models']} models, {counts['samples']} samples into "
            f"{len(manifest['shards'])} shards in {p.out} ({size(p.out)}); manifest {p.manifest}"
        )
        return front.OK
    if command == "hdf5":
        path = export_hdf5(p.manifest, p.hdf5, dtype=p.hdf5_dtype)
        print(f"wrote {path} ({size(path)})")
        return front.OK
    problems = verify(cfg.manifest, cfg.shards)
    for problem in problems:
        print(problem)
    print(f"{cfg.manifest}: {len(problems)} problem(s)" if problems else f"{cfg.manifest}: all shards verified")
    return front.FAILED if problems else front.OK


def main(argv: list[str] | None = None) -> None:
    front.main(SCRIPT, run, argv)


if __name__ == "__main__":
    main()
