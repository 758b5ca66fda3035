"""`zoo-import src=<dir> zoo.name=<name>`: shards + manifest from a zoo in the reference layout
(per-model folders with params.json, result.json, checkpoint_%06d/checkpoints). Keys as zoo-pack's."""

from zoo.cli import front
from zoo.cli.pack import compose, size

SCRIPT = front.Script(
    "zoo-import",
    "src=DIR zoo.name=NAME [key=value ...]",
    "Shards + manifest, as zoo-pack writes them, from a zoo in the reference study's published layout\n"
    "(per-model folders with params.json, result.json, checkpoint_%06d/checkpoints; read with\n"
    "torch.load(weights_only=True) only). Settings in conf/pack.yaml.",
    ["zoo-import src=/data/ptmz/cifar10_resnet18 zoo.name=ptmz_cifar10_resnet18"],
)


def run(args: list[str]) -> int:
    from zoo.pack import import_reference

    _, cfg, _ = compose(SCRIPT, args)
    if not cfg.src:
        raise front.UsageError("pass src=<folder of the reference zoo> and zoo.name=<name for it>")
    p = cfg.pack
    manifest = import_reference(
        cfg.src,
        cfg.zoo.name,
        p.out,
        p.manifest,
        max_shard_bytes=p.max_shard_bytes,
        max_shard_count=p.max_shard_count,
        include_failed=p.include_failed,
    )
    print(
        f"imported {manifest['counts']['packed_models']} models, {manifest['counts']['samples']} samples into "
        f"{len(manifest['shards'])} shards in {p.out} ({size(p.out)}); manifest {p.manifest}"
    )
    return front.OK


def main(argv: list[str] | None = None) -> None:
    front.main(SCRIPT, run, argv)


if __name__ == "__main__":
    main()
