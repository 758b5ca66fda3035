"""`zoo-run [overrides]`: the whole pipeline for a zoo (default: the offline `demo` zoo)."""

import logging
import sys

from zoo.pipeline import run_pipeline


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    sys.exit(run_pipeline(sys.argv[1:]))


if __name__ == "__main__":
    main()
