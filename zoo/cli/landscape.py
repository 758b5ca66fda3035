"""`zoo-landscape [overrides]`: Hessian, CKA and mode connectivity for every model / seed pair
of the sweep the overrides select (same overrides as `zoo-train -m`); with hydra/launcher=slurm
the items go out as SLURM job arrays."""

import sys

from zoo.landscape.stage import is_done, plan, run_item, run_landscape
from zoo.slurm.items import run_items_slurm, slurm_settings
from zoo.sweep import cell_configs


def main() -> None:
    cfgs = cell_configs(sys.argv[1:])
    settings = slurm_settings(sys.argv[1:])
    counts = (run_items_slurm(plan(cfgs), run=run_item, done=is_done, settings=settings, stage="landscape",
                              cfg=cfgs[0], verb="measured") if settings
              else run_landscape(cfgs, workers=cfgs[0].landscape.workers))
    print(f"landscape: {counts['items']} items, {counts['measured']} measured now, {counts['failed']} failed")
    sys.exit(1 if counts["failed"] else 0)


if __name__ == "__main__":
    main()
