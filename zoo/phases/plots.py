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
from zoo.phases.rules import PHASES  # noqa: E402

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


def heatmap(rows: Sequence[dict], x: str, y: str, metric: str, path: Path, *, title: str = "",
            label: str | None = None, diverging: bool = False) -> Path:
    """`metric` per cell, annotated with its value (and the row's `label` column, e.g. its phase);
    NaN (e.g. diverged) cells are left gray. `diverging`: a red-blue scale centred on 0, for gains."""
    xs, ys, grid = _grid(rows, x, y, lambda r: r.get(metric))
    _, _, labels = _grid(rows, x, y, lambda r: r.get(label) if label else None)
    values = np.array([[np.nan if v is None else float(v) for v in row] for row in grid])
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(xs), 1.0 + 0.6 * len(ys)))
    ax.set_facecolor(PHASE_COLORS[None])
    span = np.nanmax(np.abs(values)) if diverging and np.isfinite(values).any() else None
    im = ax.imshow(values, origin="lower", aspect="auto", cmap="RdBu" if diverging else "viridis",
                   vmin=-span if span else None, vmax=span or None)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):  # dark text where the colour is light
            light = abs(im.norm(v) - 0.5) < 0.3 if diverging else im.norm(v) > 0.6
            text = f"{v:.3g}" + (f"\n{labels[i, j]}" if isinstance(labels[i, j], str) else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="black" if light else "white")
    fig.colorbar(im, ax=ax, label=metric)
    _axes(ax, xs, ys, x, y)
    ax.set_title(title or metric)
    return _save(fig, path)


def phase_bars(rows: Sequence[dict], metrics: Sequence[str], path: Path, *, title: str = "") -> Path:
    """Grouped bars: each metric's value (rows: one per phase, as `by_phase` writes them)."""
    fig, ax = plt.subplots(figsize=(2.0 + 1.2 * len(rows), 3.5))
    width = 0.8 / len(metrics)
    for k, metric in enumerate(metrics):
        values = [np.nan if r[metric] is None else r[metric] for r in rows]
        ax.bar(np.arange(len(rows)) + (k - (len(metrics) - 1) / 2) * width, values, width, label=metric)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)), [f"{r['phase']}\n({r['n_cells']} cells)" for r in rows])
    for tick, r in zip(ax.get_xticklabels(), rows):
        tick.set_color(PHASE_COLORS.get(r["phase"], "black"))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title)
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


def phase_curves(curves: dict, ylabel: str, path: Path, *, title: str = "",
                 xlabel: str = "t (interpolation between the two seeds)", unit: str = "pairs",
                 styles=(("", "--", "as trained"), ("_aligned", "-", "aligned (weight matching)"))) -> Path:
    """Mean curve per phase (`{phase: {suffix: [(x, values), ...]}}`, one line style per suffix of
    `styles` (suffix, style, legend), e.g. dashed as measured, solid after alignment), in the
    phase's colour."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for phase in (p for p in PHASES if p in curves):
        for k, (suffix, style, _) in enumerate(styles):
            t = curves[phase][suffix][0][0]
            mean = np.mean([values for _, values in curves[phase][suffix]], axis=0)
            ax.plot(t, mean, style, color=PHASE_COLORS[phase],
                    label=f"{phase} ({len(curves[phase][suffix])} {unit})" if k == len(styles) - 1 else None)
    for _, style, legend in styles:
        ax.plot([], [], f"k{style}", label=legend)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title)
    return _save(fig, path)
