"""`zoo-status`: how far a zoo is, from its run dirs and squeue."""

from zoo.cli import front

SCRIPT = front.Script(
    "zoo-status",
    "[--failed] [key=value ...]",
    "How far a zoo is: ok / diverged / failed / running / pending / missing per grid cell and in total,\n"
    "from the run dirs and squeue. Takes the overrides of `zoo-train -m` that selected the zoo.",
    ["zoo-status zoo=demo", "zoo-status zoo=cifar10_resnet18 cluster=example_gpu --failed"],
    flags={"--failed": "list every failed model and how to resubmit it"},
)


def run(args: list[str]) -> None:
    from zoo.slurm.status import report
    from zoo.sweep import cell_views

    overrides = [a for a in front.overrides_only(SCRIPT, args) if a != "--failed"]
    print(report(cell_views(overrides), overrides, all_failed="--failed" in args))


def main(argv: list[str] | None = None) -> None:
    front.main(SCRIPT, run, argv)


if __name__ == "__main__":
    main()
