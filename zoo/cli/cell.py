"""`zoo-cell INDEX [overrides]`: train cell INDEX of the sweep the overrides select, in
`zoo.sweep.cell_configs` order. What one SLURM array task of `zoo-plan`'s sbatch lines runs."""

from zoo.cli import front

SCRIPT = front.Script(
    "zoo-cell",
    "INDEX [key=value ...]",
    "Train cell INDEX (0-based, in zoo.sweep.cell_configs order) of the sweep the overrides select:\n"
    "what one SLURM array task of zoo-plan's sbatch lines runs.",
    ["zoo-cell 0 zoo=demo", "zoo-cell $SLURM_ARRAY_TASK_ID zoo=cifar10_resnet18 cluster=example_gpu"],
)


def run(args: list[str]) -> int:
    if not args or not args[0].isdigit():
        raise front.UsageError(f"the first argument is the cell's INDEX: {SCRIPT.name} {SCRIPT.usage}")
    import logging

    from zoo.sweep import cell_configs
    from zoo.train.run import train_model

    index, overrides = int(args[0]), front.overrides_only(SCRIPT, args[1:])
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    cfgs = cell_configs(overrides)
    if index >= len(cfgs):
        raise front.UsageError(f"cell {index} does not exist: the sweep has {len(cfgs)} cells (0..{len(cfgs) - 1})")
    return front.FAILED if train_model(cfgs[index]).state == "failed" else front.OK


def main(argv: list[str] | None = None) -> None:
    front.main(SCRIPT, run, argv)


if __name__ == "__main__":
    main()
