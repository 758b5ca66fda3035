"""PNG figures over a zoo's two grid axes: one heatmap per metric and the phase map."""

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from zoo.atomic import atomic_write  # noqa: E402
from zoo.landscape.phases import PHASES  # noqa: E402

PHASE_COLORS = {"I": "#d62728", "II": "#ff7f0e", "III": "#9467bd", "IV-A": "#1f77b4", "IV-B": "#2ca02c",
                None: "#bbbbbb"}


def _grid(rows: Sequence[dict], x: str, y: str, value) -> tuple[list, list, np.ndarray]:
    xs = sorted({r[x] for r in rows})
    ys = sorted({r[y] for r in rows})
    grid = np.full((len(ys), len(xs)), np.nan, dtype=object)
    for r in rows:
        grid[ys.index(r[y]), xs.index(r[x])] = value(r)
    return xs, ys, grid


def _axes(ax, xs, ys, x: str, y: str) -> None:
    # Cells are evenly spaced: the grids are geometric, so this is a log scale.
    ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs])
    ax.set_yticks(range(len(ys)), [f"{v:g}" for v in ys])
    ax.set_xlabel(f"{x} (log scale)")
    ax.set_ylabel(f"{y} (log scale)")


def _save(fig, path: Path) -> Path:
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def heatmap(rows: Sequence[dict], x: str, y: str, metric: str, path: Path, *, title: str = "") -> Path:
    """`metric` per cell, annotated with its value; NaN (e.g. diverged) cells are left gray."""
    xs, ys, grid = _grid(rows, x, y, lambda r: r.get(metric))
    values = np.array([[np.nan if v is None else float(v) for v in row] for row in grid])
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(xs), 1.0 + 0.6 * len(ys)))
    ax.set_facecolor(PHASE_COLORS[None])
    im = ax.imshow(values, origin="lower", aspect="auto", cmap="viridis")
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):  # dark text on the bright end of viridis
            color = "black" if im.norm(v) > 0.6 else "white"
            ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(im, ax=ax, label=metric)
    _axes(ax, xs, ys, x, y)
    ax.set_title(title or metric)
    return _save(fig, path)


def phase_map(rows: Sequence[dict], x: str, y: str, path: Path, *, title: str = "phases") -> Path:
    """Categorical map of the `phase` column with a legend of the phases present."""
    order = [*PHASES, None]
    xs, ys, grid = _grid(rows, x, y, lambda r: order.index(r.get("phase")))
    fig, ax = plt.subplots(figsize=(1.8 + 0.75 * len(xs), 1.0 + 0.6 * len(ys)))
    cmap = ListedColormap([PHASE_COLORS[p] for p in order])
    ax.imshow(grid.astype(float), origin="lower", aspect="auto", cmap=cmap, vmin=-0.5, vmax=len(order) - 0.5)
    for (i, j), k in np.ndenumerate(grid):
        if k == k:  # not NaN: a measured cell
            ax.text(j, i, order[int(k)] or "div.", ha="center", va="center", fontsize=8, color="white")
    present = [p for p in order if any(r.get("phase") == p for r in rows)]
    ax.legend(handles=[Patch(color=PHASE_COLORS[p], label=p or "diverged") for p in present],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), title="phase")
    _axes(ax, xs, ys, x, y)
    ax.set_title(title)
    return _save(fig, path)
