"""`zoo-import src=<dir> zoo.name=<name>`: shards + manifest from a zoo in the reference layout
(per-model folders with params.json, result.json, checkpoint_%06d/checkpoints). Keys as zoo-pack's."""

import sys

from zoo.cli.pack import compose, size
from zoo.pack import import_reference


def main(argv: list[str] | None = None) -> int:
    _, cfg, _ = compose(sys.argv[1:] if argv is None else argv)
    if not cfg.src:
        sys.exit("zoo-import: pass src=<folder of the reference zoo> and zoo.name=<name for it>")
    p = cfg.pack
    manifest = import_reference(cfg.src, cfg.zoo.name, p.out, p.manifest, max_shard_bytes=p.max_shard_bytes,
                                max_shard_count=p.max_shard_count, include_failed=p.include_failed)
    print(f"imported {manifest['counts']['packed_models']} models, {manifest['counts']['samples']} samples into "
          f"{len(manifest['shards'])} shards in {p.out} ({size(p.out)}); manifest {p.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
