"""`zoo-apply app=<averaging|lmc|soup|prune|transfer> [overrides]`: an application (zoo/apply/) over every grid cell of the sweep
the overrides select (same overrides as `zoo-train -m`), per cell, with figures over the phase map;
with hydra/launcher=slurm the cells go out as SLURM job arrays."""

import sys

from zoo.apply.stage import APPS, run_apply
from zoo.config import ConfigError
from zoo.slurm.items import slurm_settings
from zoo.summary import format_table
from zoo.sweep import cell_configs


def main() -> None:
    cfgs = cell_configs(sys.argv[1:])
    app = cfgs[0].app
    if app not in APPS:
        sys.exit(f"zoo-apply needs app=<{'|'.join(APPS)}> (got app={app})")
    try:
        result = run_apply(cfgs, app, workers=cfgs[0].apply.workers, slurm=slurm_settings(sys.argv[1:]))
    except ConfigError as err:  # a bad apply.* value
        sys.exit(f"zoo-apply: {err}")
    for title, rows in (("per cell", result["rows"]), ("per phase", result["by_phase"])):
        if rows:
            columns = list(rows[0])
            print(f"\n{app} {title}:\n" + format_table(columns, [[_cell(r[c]) for c in columns] for r in rows]))
    print(f"\n{app}: {result['cells']} cells, {result['computed']} computed now, {result['failed']} failed")
    sys.exit(1 if result["failed"] else 0)


def _cell(value):
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else value


if __name__ == "__main__":
    main()
