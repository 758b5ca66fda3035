"""The import graph between zoo's packages and top-level modules: `python -m zoo.graph`.

Each node is a package (`zoo.train`) or a top-level module (`zoo.stage`); an edge A -> B means some
module of A imports B (function-level imports included: a lazy import is still a dependency).
The graph must stay acyclic (tests/test_graph.py): a newcomer can read the layers bottom-up.
"""

import ast
import sys
from collections import defaultdict
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def node(module: str) -> str:
    """`zoo.train.run` -> `zoo.train`; `zoo.stage` -> `zoo.stage`."""
    parts = module.split(".")
    return ".".join(parts[:2])


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            found |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            found |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
    return {
        m
        for m in found
        if m.startswith("zoo.")
        and (ROOT.parent / (m.replace(".", "/") + ".py")).exists()
        or (ROOT.parent / m.replace(".", "/")).is_dir()
    }


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        if module == "zoo":
            continue
        source = node(module)
        edges[source] |= {node(m) for m in imports(path) if node(m) not in (source, "zoo")}
    return dict(edges)


def main() -> int:
    edges = graph()
    try:
        order = list(TopologicalSorter(edges).static_order())
    except CycleError as err:
        print(f"cycle: {' -> '.join(err.args[1])}")
        order = sorted(edges)
    for name in order:
        if name in edges:
            print(f"{name:<16} -> {', '.join(sorted(edges[name])) or '(nothing)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
