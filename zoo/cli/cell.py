"""`python -m zoo.cli.cell INDEX [overrides]`: train cell INDEX of the sweep the overrides select, in
`zoo.sweep.cell_configs` order. What one SLURM array task of `zoo-plan`'s sbatch lines runs."""

import logging
import sys

from zoo.sweep import cell_configs
from zoo.train.run import train_model


def main() -> None:
    if len(sys.argv) < 2 or not sys.argv[1].isdigit():
        sys.exit("usage: python -m zoo.cli.cell INDEX [overrides]")
    index, overrides = int(sys.argv[1]), sys.argv[2:]
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    cfgs = cell_configs(overrides)
    if index >= len(cfgs):
        sys.exit(f"cell {index} does not exist: the sweep has {len(cfgs)} cells (0..{len(cfgs) - 1})")
    sys.exit(0 if train_model(cfgs[index]).state != "failed" else 1)


if __name__ == "__main__":
    main()
