"""`zoo-plan`: the dry run of a zoo (see zoo.plan)."""

from zoo.cli import front

SCRIPT = front.Script(
    "zoo-plan",
    "zoo=NAME [cluster=PROFILE] [key=value ...]",
    "The dry run of a zoo, before anything trains: models, parameters, checkpoint bytes, FLOPs,\n"
    "device-hours on the cluster profile (conf/cluster/), memory per task, and the sbatch arrays.",
    ["zoo-plan zoo=demo", "zoo-plan zoo=cifar10_resnet18 cluster=example_gpu model.width=16,64"],
)


def run(args: list[str]) -> None:
    from zoo.plan import format_plan, plan_zoo

    print(format_plan(plan_zoo(front.overrides_only(SCRIPT, args))))


def main(argv: list[str] | None = None) -> None:
    front.main(SCRIPT, run, argv)


if __name__ == "__main__":
    main()
