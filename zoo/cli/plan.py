"""`zoo-plan zoo=<name> [cluster=<profile>] [overrides]`: the dry run of a zoo (see zoo.plan)."""

import sys

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from zoo.config import ConfigError
from zoo.plan import format_plan, plan_zoo


def main() -> None:
    try:
        print(format_plan(plan_zoo(sys.argv[1:])))
    except (HydraException, OmegaConfBaseException, ConfigError) as err:  # a bad override or profile
        sys.exit(f"zoo-plan: {err}")


if __name__ == "__main__":
    main()
