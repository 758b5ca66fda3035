"""`zoo-apply app=<averaging|lmc|soup|prune|transfer>`: an application (zoo/apply/) over every grid cell of a zoo."""

from zoo.cli import front

SCRIPT = front.Script(
    "zoo-apply",
    "app=averaging|lmc|soup [key=value ...]",
    "Merge the seeds of every grid cell of the sweep the overrides select (those of `zoo-train -m`),\n"
    "as trained and after weight matching: averaging (checkpoints and seeds), lmc (loss barrier on the\n"
    "line between seeds), soup (uniform and greedy soups). Tables per cell and per phase, figures over\n"
    "the phase map (settings in conf/apply/). With hydra/launcher=slurm the cells go out as job arrays.",
    ["zoo-apply app=lmc zoo=demo", "zoo-apply app=soup zoo=demo model.width=64,128"],
)


def run(args: list[str]) -> int:
    from zoo.apply.stage import APPS, run_apply
    from zoo.slurm.items import slurm_settings
    from zoo.summary import format_table
    from zoo.sweep import cell_configs

    overrides = front.overrides_only(SCRIPT, args)
    cfgs = cell_configs(overrides)
    app = cfgs[0].app
    if app not in APPS:
        raise front.UsageError(f"zoo-apply needs app=<{'|'.join(APPS)}> (got app={app})")
    result = run_apply(cfgs, app, workers=cfgs[0].apply.workers, slurm=slurm_settings(overrides))
    for title, rows in (("per cell", result["rows"]), ("per phase", result["by_phase"])):
        if rows:
            columns = list(rows[0])
            print(f"\n{app} {title}:\n" + format_table(columns, [[_cell(r[c]) for c in columns] for r in rows]))
    print(f"\n{app}: {result['cells']} cells, {result['computed']} computed now, {result['failed']} failed")
    return front.FAILED if result["failed"] else front.OK


def _cell(value):
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else value


def main(argv: list[str] | None = None) -> None:
    front.main(SCRIPT, run, argv)


if __name__ == "__main__":
    main()
