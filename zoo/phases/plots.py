"""PNG figures over a zoo's two grid axes: one heatmap per metric and the phase map."""

import textwrap
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

PHASE_COLORS = {
    "I": "#d62728",
    "II": "#ff7f0e",
    "III": "#9467bd",
    "IV-A": "#1f77b4",
    "IV-B": "#2ca02c",
    None: "#bbbbbb",
}
NO_PHASE = "no phase"  # a cell with a diverged seed, or not measured
GRAY_NOTE = "gray: not measured (a seed diverged or failed, or the cell has one seed)"
AXES = {
    "model.width": "width (hidden units or channels)",
    "data.batch_size": "batch size (samples)",
    "optim.lr": "learning rate",
    "data.beta": "convection speed β",
    "seed": "seed",
}
# Words for the parts of a metric's column name, e.g. barrier_err_test_aligned.
WORDS = {
    "train": "on the train set",
    "test": "on the test set",
    "loss": "loss",
    "err": "error",
    "acc": "accuracy",
    "aligned": "after weight matching",
    "gain": "test-accuracy gain",
    "barrier": "barrier",
    "hessian": "Hessian",
    "top": "top eigenvalue",
    "trace": "trace",
    "cka": "CKA between seeds",
    "mc": "mode connectivity",
    "linear": "linear path:",
    "epoch": "checkpoint",
    "seed": "seed",
    "avg": "averaging",
    "uniform": "uniform",
    "greedy": "greedy",
    "soup": "soup",
}
# What a `*_gain` is measured against, by the metric's first word.
GAIN_OVER = {
    "seed": "merged − mean of its models",
    "epoch": "averaged checkpoints − final model",
    "ref": "averaged checkpoints − final model",
    "uniform": "soup − best ingredient",
    "greedy": "soup − best ingredient",
    "probe": "probe − training from scratch",
    "finetune": "fine-tuned − training from scratch",
    "ticket": "ticket − random re-initialisation",
}
UNITS = {"acc": "fraction", "err": "fraction", "gain": "fraction", "loss": "cross-entropy", "mc": "cross-entropy"}


def describe(metric: str) -> str:
    """A column name in words: `barrier_err_test_aligned` → 'barrier error on the test set after weight matching'."""
    parts = metric.split("_")
    words = [WORDS.get(p, p) for p in parts if p not in ("train", "test", "aligned")]
    words += [WORDS[p] for p in ("train", "test", "aligned") if p in parts]
    if "gain" in parts and parts[0] in GAIN_OVER:
        words.append(f"({GAIN_OVER[parts[0]]})")
    unit = next((UNITS[p] for p in reversed(parts) if p in UNITS), None)  # mc_err_*: an error
    return " ".join(words) + (f" [{unit}]" if unit else "")


def axis_label(axis: str) -> str:
    return f"{AXES.get(axis, axis)} — {axis}"


def negligible(value: float, scale: float) -> bool:
    """Float rounding noise (e.g. 1.11e-16 from a mean of equal numbers), next to the map's `scale`."""
    return abs(value) <= 1e-12 + 1e-9 * scale


def number(value: float, scale: float) -> str:
    """A cell's value, 3 significant digits; rounding noise is 0."""
    return "0" if negligible(value, scale) else f"{value:.3g}"


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
    ax.set_xlabel(f"{axis_label(x)} (log scale)")
    ax.set_ylabel(f"{axis_label(y)} (log scale)")


def _note(fig, text: str) -> None:
    fig.text(0.01, -0.02, text, ha="left", va="top", fontsize=7, color="#444444", wrap=True)


def _save(fig, path: Path) -> Path:
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def heatmap(
    rows: Sequence[dict],
    x: str,
    y: str,
    metric: str,
    path: Path,
    *,
    title: str = "",
    label: str | None = None,
    diverging: bool = False,
) -> Path:
    """`metric` per cell, annotated with its value (and the row's `label` column, e.g. its phase);
    NaN (e.g. diverged) cells are gray, said in a note. `diverging`: a red-blue scale centred on 0,
    for gains. A map whose cells are all equal is drawn in one mid colour and says so."""
    xs, ys, grid = _grid(rows, x, y, lambda r: r.get(metric))
    _, _, labels = _grid(rows, x, y, lambda r: r.get(label) if label else None)
    values = np.array([[np.nan if v is None else float(v) for v in row] for row in grid])
    finite = values[np.isfinite(values)]
    scale = float(np.max(np.abs(finite))) if finite.size else 0.0
    constant = finite.size > 0 and negligible(float(np.ptp(finite)), scale)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(xs), 1.0 + 0.6 * len(ys)))
    ax.set_facecolor(PHASE_COLORS[None])
    if constant:  # no colour scale to show: one mid colour, the value in every cell and the title
        vmin, vmax = finite[0] - 1, finite[0] + 1
    elif diverging:
        vmin, vmax = -scale, scale
    else:
        vmin = vmax = None
    diverging = diverging and not constant  # a constant 0 would be white on a red-blue scale
    im = ax.imshow(values, origin="lower", aspect="auto", cmap="RdBu" if diverging else "viridis", vmin=vmin, vmax=vmax)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):  # dark text where the colour is light
            light = abs(im.norm(v) - 0.5) < 0.3 if diverging else im.norm(v) > 0.6
            text = number(v, scale) + (f"\n{labels[i, j]}" if isinstance(labels[i, j], str) else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="black" if light else "white")
    if not constant:
        fig.colorbar(im, ax=ax, label=textwrap.fill(describe(metric), 45))
    _axes(ax, xs, ys, x, y)
    heading = textwrap.fill(title or describe(metric), 12 * len(xs))
    ax.set_title(heading + (f"\n(every cell = {number(finite[0], scale)})" if constant else ""), fontsize=9)
    notes = [GRAY_NOTE] if np.isnan(values).any() else []
    if "mc" in metric.split("_"):
        notes.append(
            "mc = ½(L(seed A) + L(seed B)) − L(the curve point farthest from that mean): "
            "> 0 a valley between the seeds, < 0 a barrier"
        )
    if label == "phase":
        notes.append("second line: the cell's loss-landscape phase")
    if notes:
        _note(fig, "; ".join(notes))
    return _save(fig, path)


def phase_bars(rows: Sequence[dict], metrics: Sequence[str], path: Path, *, title: str = "") -> Path:
    """Grouped bars: each metric's value (rows: one per phase, as `by_phase` writes them)."""
    fig, ax = plt.subplots(figsize=(2.0 + 1.2 * len(rows), 3.5))
    width = 0.8 / len(metrics)
    for k, metric in enumerate(metrics):
        values = [np.nan if r[metric] is None else r[metric] for r in rows]
        ax.bar(np.arange(len(rows)) + (k - (len(metrics) - 1) / 2) * width, values, width, label=metric)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)), [f"{r['phase'] or NO_PHASE}\n({r['n_cells']} cells)" for r in rows])
    for tick, r in zip(ax.get_xticklabels(), rows):
        tick.set_color(PHASE_COLORS.get(r["phase"], "black"))
    for handle in ax.get_legend_handles_labels()[0]:
        handle.set_label(describe(handle.get_label()))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    units = {describe(m).rpartition("[")[2].rstrip("]") for m in metrics if "[" in describe(m)}
    ax.set_ylabel("mean over the phase's cells" + (f" [{units.pop()}]" if len(units) == 1 else ""))
    ax.set_xlabel("loss-landscape phase")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def phase_definitions(
    loss_threshold: float,
    mc_epsilon: float,
    cka_threshold: float,
    trained: str = "train_loss",
    mc: str = "mc_loss_train",
    mc_scale: float = 1,
) -> str:
    """The rules of zoo.phases.rules.classify, with the thresholds the map was labelled with, the
    metric (`trained`, phases.trained_key) held against loss_threshold and the mode connectivity
    (`mc`, phases.mc_key, times `mc_scale`: 100 gives percent) held against mc_epsilon."""
    mc_words = describe(mc).replace("[fraction]", "[%]") if mc_scale == 100 else describe(mc)
    return (
        f"phases (Yang et al. 2021) from L = the final {describe(trained)}, mc = {mc_words} between seeds\n"
        f"(< 0: barrier) and CKA between seeds:  I: L > {loss_threshold:g}, mc < 0;  II: L > {loss_threshold:g}, "
        f"mc ≥ 0;\nIII: L ≤ {loss_threshold:g}, mc < −{mc_epsilon:g};  IV-A: L ≤ {loss_threshold:g}, "
        f"mc ≥ −{mc_epsilon:g}, CKA < {cka_threshold:g};  IV-B: same, CKA ≥ {cka_threshold:g}.\n"
        f"{NO_PHASE}: a seed diverged or was not measured; gray: no cell at this grid point"
    )


def phase_map(
    rows: Sequence[dict], x: str, y: str, path: Path, *, title: str = "phases", thresholds: dict | None = None
) -> Path:
    """Categorical map of the `phase` column, a legend of the phases present and, given the
    `thresholds` (the arguments of `phase_definitions`), the phase definitions."""
    order = [*PHASES, None]
    xs, ys, grid = _grid(rows, x, y, lambda r: order.index(r.get("phase")))
    # at least the room the axis labels and the note need
    fig, ax = plt.subplots(figsize=(max(5.6, 1.8 + 0.75 * len(xs)), max(3.8, 1.0 + 0.6 * len(ys))))
    cmap = ListedColormap([PHASE_COLORS[p] for p in order])
    ax.imshow(grid.astype(float), origin="lower", aspect="auto", cmap=cmap, vmin=-0.5, vmax=len(order) - 0.5)
    for (i, j), k in np.ndenumerate(grid):
        if k == k:  # not NaN: a cell of the grid
            ax.text(j, i, order[int(k)] or "–", ha="center", va="center", fontsize=8, color="white")
    present = [p for p in order if any(r.get("phase") == p for r in rows)]
    ax.legend(
        handles=[Patch(color=PHASE_COLORS[p], label=p or NO_PHASE) for p in present],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        title="phase",
    )
    _axes(ax, xs, ys, x, y)
    ax.set_title(title, fontsize=9)
    if thresholds:
        fig.tight_layout()  # the axis labels inside the figure: the note goes below them
        _note(fig, phase_definitions(**thresholds))
    return _save(fig, path)


def phase_curves(
    curves: dict,
    ylabel: str,
    path: Path,
    *,
    title: str = "",
    xlabel: str = "t (interpolation between the two seeds: 0 = seed A, 1 = seed B)",
    unit: str = "pairs",
    styles=(("", "--", "as trained"), ("_aligned", "-", "aligned (weight matching)")),
) -> Path:
    """Mean curve per phase (`{phase: {suffix: [(x, values), ...]}}`, one line style per suffix of
    `styles` (suffix, style, legend), e.g. dashed as measured, solid after alignment), in the
    phase's colour."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for phase in (p for p in PHASES if p in curves):
        for k, (suffix, style, _) in enumerate(styles):
            t = curves[phase][suffix][0][0]
            mean = np.mean([values for _, values in curves[phase][suffix]], axis=0)
            ax.plot(
                t,
                mean,
                style,
                color=PHASE_COLORS[phase],
                label=f"{phase} ({len(curves[phase][suffix])} {unit})" if k == len(styles) - 1 else None,
            )
    for _, style, legend in styles:
        ax.plot([], [], f"k{style}", label=legend)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title)
    return _save(fig, path)
