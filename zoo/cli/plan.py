"""`zoo-plan`: the dry run of a zoo (see zoo.plan)."""

from zoo.cli import front

SCRIPT = front.Script(
    "zoo-plan",
    "zoo=NAME [cluster=PROFILE] [key=value ...]",
    "The dry run of a zoo (before a launch or a relaunch): models, parameters, checkpoint bytes, FLOPs,\n"
    "device-hours on the cluster profile (conf/cluster/; the peak of each trainer.precision), memory\n"
    "per task, and what `zoo-train -m ... hydra/launcher=slurm` submits now: the models not DONE nor\n"
    "held by a pending or running SLURM task, its array tasks and sbatch scripts.",
    ["zoo-plan zoo=demo", "zoo-plan zoo=cifar10_resnet18 cluster=example_gpu model.width=16,64"],
)


def run(args: list[str]) -> None:
    from zoo import plan_costs
    from zoo.plan import format_plan, plan_zoo

    print(format_plan(plan_zoo(front.overrides_only(SCRIPT, args))))
    plan_costs.save()  # what was measured for architectures the shipped table lacks


def main(argv: list[str] | None = None) -> None:
    front.main(SCRIPT, run, argv)


if __name__ == "__main__":
    main()
