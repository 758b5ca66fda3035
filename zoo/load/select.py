"""Selecting samples by their metadata: `where={"phase": "IV-B", "epoch": 150}`.

A key is a meta.json field (`phase`, `epoch`, `status`, `arch`), a grid axis
(`model.width`, `seed`) or a dotted path into meta (`metrics.test_acc`, `landscape.top_eig`).
A value matches by equality, membership when it is a list/tuple/set/range, or a call when
it is callable (`{"metrics.test_acc": lambda a: a > 0.5}`). A value that is missing (null, or a
path through a null: the landscape of an epoch that was not measured) matches no callable; ask for
it with `None`.
"""

from collections.abc import Mapping

COLLECTIONS = (list, tuple, set, frozenset, range)


def lookup(meta: Mapping, key: str):
    """The value of `key` in `meta`; None where a path runs into a null (e.g. the metrics of an epoch without any)."""
    if key in meta:
        return meta[key]
    grid = meta.get("grid") or {}
    if key in grid:
        return grid[key]
    head, _, rest = key.partition(".")
    if head not in meta or not rest:
        raise KeyError(f"where-key {key!r} is neither a meta.json field {sorted(meta)} nor a grid axis {sorted(grid)}")
    node = meta[head]
    for part in rest.split("."):
        if node is None:
            return None
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"where-key {key!r}: no {part!r} in meta[{head!r}]")
        node = node[part]
    return node


def matches(meta: Mapping, where: Mapping) -> bool:
    for key, want in where.items():
        value = lookup(meta, key)
        if callable(want):
            ok = value is not None and want(value)
        elif isinstance(want, COLLECTIONS):
            ok = value in want
        else:
            ok = value == want
        if not ok:
            return False
    return True


class Where:
    """Picklable predicate on `sample["meta"]` (DataLoader workers may be spawned); `test` is a further
    predicate on meta (a split)."""

    def __init__(self, where: Mapping | None = None, epochs=None, test=None):
        self.where, self.test = dict(where or {}), test
        if epochs is not None:
            self.where["epoch"] = epochs

    def __call__(self, sample: Mapping) -> bool:
        return matches(sample["meta"], self.where) and (self.test is None or self.test(sample["meta"]))
