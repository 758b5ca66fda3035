"""What zoo-plan and the population grouping measure of an architecture with torch, looked up
instead: parameters, checkpoint bytes, FLOPs and activation bytes of a step, layer sizes.

Measuring builds the model on the meta device and traces a training step (zoo.plan, zoo.train.
grouping): exact, but it imports torch (~2 s) and costs ~0.1 s per architecture. So every figure
is looked up by what it is measured from (the model config as JSON, the input shapes, ...) in

- `plan_costs.json`, shipped in the package: every figure the shipped zoos (conf/zoo/) need under
  the shipped cluster profiles, written by `python -m zoo.plan --refresh-costs`, whose figures
  tests/test_plan.py measures again with torch;
- the user's cache ($XDG_CACHE_HOME/zoo/plan_costs.json, else ~/.cache/zoo/): figures of the user's
  own architectures, measured once (torch imported only then) and kept, written atomically.

A figure is a pure function of its key, so a stale entry cannot exist: a changed architecture
is a new key.
"""

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from zoo.atomic import write_json

SHIPPED = Path(__file__).with_name("plan_costs.json")
Table = dict[str, dict[str, object]]  # kind -> key -> figure (JSON values)

_shipped: Table | None = None
_user: Table | None = None
_new: Table = {}  # measured in this process, not yet in the user's cache


def user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zoo" / "plan_costs.json"


def _read(path: Path) -> Table:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:  # a damaged cache is measured again, not trusted
        print(f"warning: {path} is not valid JSON: ignored (delete it to silence this)", file=sys.stderr)
        return {}


def figure(kind: str, key: str, measure: Callable[[], object]):
    """The figure `kind` of `key`: from the shipped table, the user's cache, or `measure()` (kept for
    `save`). JSON round-trips it, so a measured figure and a looked-up one are the same value."""
    global _shipped, _user
    if _shipped is None:
        _shipped, _user = _read(SHIPPED), _read(user_cache())
    for table in (_shipped, _user, _new):
        if key in table.get(kind, {}):
            return table[kind][key]
    value = json.loads(json.dumps(measure()))
    _new.setdefault(kind, {})[key] = value
    return value


def save() -> None:
    """Add what this process measured to the user's cache (atomically)."""
    if not _new:
        return
    path, table = user_cache(), _read(user_cache())
    for kind, figures in _new.items():
        table.setdefault(kind, {}).update(figures)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, table)
    _new.clear()


def measuring():
    """A context in which every figure is measured with torch, neither looked up nor kept: what the
    table is written from, and what tests compare it with."""
    return _Measuring()


class _Measuring:
    def __enter__(self):
        global _shipped, _user, _new
        self.saved = _shipped, _user, _new
        _shipped, _user, _new = {}, {}, {}
        return self

    def __exit__(self, *exc):
        global _shipped, _user, _new
        self.measured = _new
        _shipped, _user, _new = self.saved
