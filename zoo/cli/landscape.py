"""`zoo-landscape`: Hessian, CKA and mode connectivity of a zoo."""

from zoo.cli import front

SCRIPT = front.Script(
    "zoo-landscape",
    "[key=value ...]",
    "Hessian (top eigenvalue, trace) of every finished model, CKA and mode connectivity of every seed\n"
    "pair of a grid cell, for the sweep the overrides select (those of `zoo-train -m`; settings in\n"
    "conf/landscape/). With hydra/launcher=slurm the items go out as SLURM job arrays.",
    ["zoo-landscape zoo=demo", "zoo-landscape zoo=demo landscape.bezier.steps=200 landscape.workers=2"],
)


def run(args: list[str]) -> int:
    from zoo.landscape.stage import run_landscape
    from zoo.slurm.items import slurm_settings
    from zoo.sweep import cell_configs

    overrides = front.overrides_only(SCRIPT, args)
    cfgs = cell_configs(overrides)
    counts = run_landscape(cfgs, workers=cfgs[0].landscape.workers, slurm=slurm_settings(overrides))
    print(f"landscape: {counts['items']} items, {counts['computed']} measured now, {counts['failed']} failed")
    return front.FAILED if counts["failed"] else front.OK


def main(argv: list[str] | None = None) -> None:
    front.main(SCRIPT, run, argv)


if __name__ == "__main__":
    main()
