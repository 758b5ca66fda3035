"""`zoo-landscape [overrides]`: Hessian, CKA and mode connectivity for every model / seed pair
of the sweep the overrides select (same overrides as `zoo-train -m`); with hydra/launcher=slurm
the items go out as SLURM job arrays."""

import sys

from zoo.landscape.stage import run_landscape
from zoo.slurm.items import slurm_settings
from zoo.sweep import cell_configs


def main() -> None:
    cfgs = cell_configs(sys.argv[1:])
    counts = run_landscape(cfgs, workers=cfgs[0].landscape.workers, slurm=slurm_settings(sys.argv[1:]))
    print(f"landscape: {counts['items']} items, {counts['computed']} measured now, {counts['failed']} failed")
    sys.exit(1 if counts["failed"] else 0)


if __name__ == "__main__":
    main()
