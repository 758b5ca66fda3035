"""`zoo-status [--failed] [overrides]`: how far a zoo is — ok / diverged / failed / running / pending /
missing per grid cell and in total, from the run dirs and squeue (same overrides as `zoo-train -m`)."""

import argparse

from zoo.slurm.status import report
from zoo.sweep import cell_configs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="zoo-status", description=__doc__)
    parser.add_argument("--failed", action="store_true", help="list every failed model and how to resubmit")
    parser.add_argument("overrides", nargs="*", help="the sweep's overrides, e.g. zoo=demo cluster=local")
    args = parser.parse_intermixed_args(argv)
    print(report(cell_configs(args.overrides), args.overrides, all_failed=args.failed))


if __name__ == "__main__":
    main()
