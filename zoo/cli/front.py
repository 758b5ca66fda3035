"""What every console script shares: `--help`, `--config-dir DIR`, `--debug`, one-line errors and
exit codes. Scripts take Hydra overrides (`key=value`, `a=1,2` sweeps), their own `--flags`, and
import what they run only after the arguments are read, so that `--help` starts in well under a second.

Exit codes: 0 done, 1 some work failed (a model, an item, a shard), 2 usage or config error
(a bad override, value, path or profile), 130 interrupted.
"""

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from zoo.config import CONF_DIR, USER_CONFIG_ENV

OK, FAILED, USAGE, INTERRUPTED = 0, 1, 2, 130
DEBUG_ENV = "ZOO_DEBUG"
COMMON_FLAGS = {
    "--config-dir DIR": f"also search DIR for configs, before the shipped ones (DIR/zoo/mine.yaml is zoo=mine; "
    f"or {USER_CONFIG_ENV}=DIR)",
    "--debug": f"full tracebacks instead of one-line errors (or {DEBUG_ENV}=1)",
    "-h, --help": "this help",
}


class UsageError(ValueError):
    """Arguments a script cannot take; exit code 2."""


@dataclass
class Script:
    name: str
    usage: str  # the arguments after the name
    summary: str
    examples: Sequence[str]
    flags: dict[str, str] = field(default_factory=dict)  # the script's own --flags: their help
    own_flags_only: bool = True  # False: other `-x` flags pass through (zoo-train: Hydra's)

    def help(self) -> str:
        flags = {**self.flags, **COMMON_FLAGS}
        width = max(map(len, flags)) + 2
        lines = [f"usage: {self.name} {self.usage}", "", self.summary, "", "options:"]
        lines += [f"  {flag:<{width}}{text}" for flag, text in flags.items()]
        lines += ["", "overrides: Hydra's key=value (a=1,2 sweeps); config groups (group=option):"]
        groups = config_groups()
        lines += [f"  {group:<{max(map(len, groups)) + 2}}{' '.join(options)}" for group, options in groups.items()]
        lines += [
            "",
            "examples:",
            *(f"  {e}" for e in self.examples),
            "",
            "exit codes: 0 done, 1 some work failed, 2 usage or config error, 130 interrupted",
        ]
        return "\n".join(lines)


def config_groups() -> dict[str, list[str]]:
    """Every config group and its options, from the shipped configs and the user's folders."""
    dirs = [CONF_DIR, *(d for d in os.environ.get(USER_CONFIG_ENV, "").split(os.pathsep) if d)]
    groups: dict[str, set[str]] = {}
    for root in map(os.path.abspath, dirs):
        for folder, _, names in os.walk(root):
            group = os.path.relpath(folder, root)
            options = {n.removesuffix(".yaml") for n in names if n.endswith(".yaml")}
            if group != "." and options:
                groups.setdefault(group, set()).update(options)
    return {group: sorted(options) for group, options in sorted(groups.items())}


def take_config_dirs(argv: list[str]) -> list[str]:
    """`--config-dir DIR` / `--config-dir=DIR` moved into $ZOO_CONFIG_DIR (first searched), where
    composition, the stages zoo-run starts and SLURM tasks all find it."""
    rest, dirs, args = [], [], list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--config-dir" and not args:
            raise UsageError("--config-dir needs a folder: --config-dir DIR")
        if arg == "--config-dir" or arg.startswith("--config-dir="):
            dirs.append(args.pop(0) if arg == "--config-dir" else arg.split("=", 1)[1])
        else:
            rest.append(arg)
    for d in dirs:
        if not os.path.isdir(d):
            raise UsageError(f"--config-dir {d}: no such folder")
    if dirs:
        os.environ[USER_CONFIG_ENV] = os.pathsep.join(
            [*map(os.path.abspath, dirs), *filter(None, [os.environ.get(USER_CONFIG_ENV)])]
        )
    return rest


def main(script: Script, run: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> None:
    """Parse the common flags, then `run(rest)`; exits with its code, or with a one-line error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(script.help())
        sys.exit(OK)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if debug:  # for the processes a script starts (zoo-run's stages) and Hydra's own error handler
        os.environ[DEBUG_ENV] = os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        args = take_config_dirs([a for a in argv if a != "--debug"])
        unknown = [a for a in args if a.startswith("-") and a not in script.flags and script.own_flags_only]
        if unknown:
            raise UsageError(f"unknown option {unknown[0]} (see {script.name} --help)")
        code = run(args)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    except Exception as err:  # noqa: BLE001 (every error: one line, unless --debug)
        if debug:
            raise
        print(f"{script.name}: error: {message(err)}\n(--debug or {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        sys.exit(USAGE if is_usage_error(err) else FAILED)
    sys.exit(code or OK)


def overrides_only(script: Script, args: list[str]) -> list[str]:
    """The args, all `key=value` (or a script's own flags); anything else is a usage error."""
    bad = [a for a in args if "=" not in a and a not in script.flags]
    if bad:
        raise UsageError(f"expected {script.usage}, got {bad[0]!r} (see {script.name} --help)")
    return args


def is_usage_error(err: Exception) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from zoo.config import ConfigError

    return isinstance(err, (UsageError, ConfigError, HydraException, OmegaConfBaseException, FileNotFoundError))


def message(err: Exception) -> str:
    text = str(err).strip() or type(err).__name__
    return text if isinstance(err, (UsageError, OSError)) or ":" in text else f"{type(err).__name__}: {text}"
