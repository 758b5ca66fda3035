"""`zoo-run [overrides]`: the whole pipeline for a zoo (default: the offline `demo` zoo)."""

import logging
import sys

from zoo.config import ConfigError
from zoo.pipeline import run_pipeline


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    try:
        sys.exit(run_pipeline(sys.argv[1:]))
    except ConfigError as err:  # a bad value, checked before anything runs
        print(f"zoo-run: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
