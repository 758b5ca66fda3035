"""`zoo-landscape [overrides]`: Hessian, CKA and mode connectivity for every model / seed pair
of the sweep the overrides select (same overrides as `zoo-train -m`)."""

import sys

from zoo.landscape.stage import run_landscape
from zoo.sweep import cell_configs


def main() -> None:
    cfgs = cell_configs(sys.argv[1:])
    counts = run_landscape(cfgs, workers=cfgs[0].landscape.workers)
    print(f"landscape: {counts['items']} items, {counts['measured']} measured now, {counts['failed']} failed")
    sys.exit(1 if counts["failed"] else 0)


if __name__ == "__main__":
    main()
