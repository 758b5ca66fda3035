"""Text tables of a zoo's state: one row per grid cell, seeds pooled."""

from collections import Counter, defaultdict
from collections.abc import Iterable

from omegaconf import DictConfig

from zoo.train.rundir import run_dir


def cell_table(cfgs: Iterable[DictConfig]) -> str:
    """Status counts and the mean final headline metric (test accuracy for classifiers) per cell
    of the zoo's two grid axes."""
    from zoo.train.tasks import task_of  # torch + Lightning: not for the commands that only format tables

    cells: dict[tuple, list[tuple[str, float | None]]] = defaultdict(list)
    axes, key = None, None
    for cfg in cfgs:
        axes, key = list(cfg.zoo.axes), task_of(cfg).headline
        run = run_dir(cfg)
        rows = run.metrics()
        cells[tuple(cfg.grid[a] for a in axes)].append((run.status()[0], rows[-1].get(key) if rows else None))
    header = [*axes, "models", "status", key]
    rows = []
    for key in sorted(cells):
        states = Counter(state for state, _ in cells[key])
        accs = [acc for state, acc in cells[key] if state == "ok" and acc is not None]
        mean = f"{sum(accs) / len(accs):.3f}" if accs else "-"
        rows.append(
            [*map(str, key), str(len(cells[key])), " ".join(f"{s}:{n}" for s, n in sorted(states.items())), mean]
        )
    return format_table(header, rows)


def format_table(header: list[str], rows: list[list]) -> str:
    """Aligned plain-text columns; floats to 3 significant digits."""
    cells = [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def failure_causes(cfgs: Iterable[DictConfig]) -> list[str]:
    """One line per distinct cause among the models that failed (most frequent first): how many,
    the error, and one traceback to read."""
    causes: dict[str, list] = defaultdict(list)
    for cfg in cfgs:
        run = run_dir(cfg)
        state, reason = run.status()
        if state == "failed":
            causes[reason.splitlines()[0] if reason else "no reason recorded"].append(run)
    return [
        f"{len(runs)} model(s) failed: {cause} (traceback: {runs[0].path / 'error.log'})"
        for cause, runs in sorted(causes.items(), key=lambda kv: -len(kv[1]))
    ]


def status_counts(cfgs: Iterable[DictConfig]) -> Counter:
    return Counter(run_dir(cfg).status()[0] for cfg in cfgs)
