"""The phase table of a zoo: one row per grid cell, metrics averaged over seeds and seed pairs.

Written by `zoo-phases` as `runs/<zoo>/phases.csv` (+ `phases.json`: model id -> phase,
for packing) with PNG figures in `runs/<zoo>/figures/`.
"""

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig

from zoo.atomic import write_json, write_text
from zoo.landscape.stage import cell_key, cells, load_results, measured_epochs
from zoo.phases.plots import describe, heatmap, phase_map
from zoo.phases.rules import classify
from zoo.train.rundir import run_dir, zoo_dir_of
from zoo.train.tasks import task_of

TRAIN_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc")
MODEL_KEYS = ("hessian_top", "hessian_trace")
PAIR_KEYS = (
    "cka",
    "cka_unbiased",
    "cka_biased",
    "mc_loss_train",
    "mc_err_train",
    "mc_loss_test",
    "mc_err_test",
    "linear_mc_loss_train",
)
PLOTTED = (
    "train_loss",
    "test_acc",
    "test_rel_l2",
    "hessian_top",
    "hessian_trace",
    "cka",
    "mc_loss_train",
    "linear_mc_loss_train",
)


def _mean(values: list) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else math.nan


def thresholds(cfg: DictConfig) -> dict:
    p = cfg.phases
    return {"loss_threshold": p.loss_threshold, "mc_epsilon": p.mc_epsilon, "cka_threshold": p.cka_threshold}


def _legend(cfg: DictConfig) -> dict:
    """What the phase map's note states (`plots.phase_definitions`): the thresholds, the metric held
    against loss_threshold and the mode connectivity held against mc_epsilon."""
    p = cfg.phases
    return thresholds(cfg) | {
        "trained": p.get("trained_key", "train_loss"),
        "mc": p.mc_key,
        "mc_scale": p.get("mc_scale", 1),
    }


def label(row: dict, cfg: DictConfig) -> str | None:
    """The row's phase; None where a seed did not finish `ok` (diverged cells have no landscape).
    `phases.trained_key` is the metric held against `loss_threshold` (train_loss unless the task's
    rules in conf/phases/ say otherwise)."""
    if row.get("n_ok", 1) < row.get("n_models", 1):
        return None
    trained, mc = cfg.phases.get("trained_key", "train_loss"), row[cfg.phases.mc_key]
    return classify(
        {**row, "train_loss": row[trained], "mc": None if mc is None else mc * cfg.phases.get("mc_scale", 1)},
        **thresholds(cfg),
    )


def phase_rows(cfgs: Sequence[DictConfig]) -> list[dict]:
    """One row per cell: axes, counts, mean final train metrics, landscape metrics, phase."""
    per_model, per_pair = load_results(cfgs)
    rows = []
    for key, members in sorted(cells(cfgs).items()):
        first = members[0]
        epoch = str(measured_epochs(first)[-1])
        ok = [c for c in members if run_dir(c).status()[0] == "ok"]
        finals = [run_dir(c).metrics()[-1] for c in ok]
        row = dict(zip(first.zoo.axes, key)) | {"n_models": len(members), "n_ok": len(ok)}
        row |= {k: _mean([f.get(k) for f in finals]) for k in dict.fromkeys((*TRAIN_KEYS, task_of(first).headline))}
        row |= {k: _mean([per_model.get(c.id, {}).get(epoch, {}).get(k) for c in ok]) for k in MODEL_KEYS}
        ok_ids = {c.id for c in ok}
        pairs = [results[epoch] for ids, results in per_pair.items() if ids[0] in ok_ids and epoch in results]
        row |= {k: _mean([p.get(k) for p in pairs]) for k in PAIR_KEYS}
        if len(ok) == len(members) and not pairs:
            raise ValueError(
                f"cell {row} has no pair measurements at epoch {epoch}: run zoo-landscape first "
                "(phases need at least 2 seeds per cell)"
            )
        row["phase"] = label(row, first)
        rows.append(row)
    return rows


def write_csv(rows: Sequence[Mapping], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buffer.getvalue())


def read_csv(path: Path) -> list[dict]:
    """Rows of a metrics CSV; numeric cells become floats, empty cells None."""

    def parse(value: str):
        if value == "":
            return None
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value

    with open(path, newline="") as f:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def write_figures(
    rows: Sequence[dict], axes: Sequence[str], out_dir: Path, title: str, phase_thresholds: dict | None = None
) -> list[Path]:
    x, y = axes
    paths = [
        phase_map(
            rows, x, y, out_dir / "phase_map.png", title=f"{title}: loss-landscape phases", thresholds=phase_thresholds
        )
    ]
    for metric in PLOTTED:
        if any(isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric]) for r in rows):
            paths.append(heatmap(rows, x, y, metric, out_dir / f"{metric}.png", title=f"{title}: {describe(metric)}"))
    return paths


def write_phases(cfgs: Sequence[DictConfig]) -> tuple[Path, list[dict]]:
    """phases.csv, phases.json and figures for the zoo; returns the CSV path and rows."""
    rows = phase_rows(cfgs)
    zoo_path = zoo_dir_of(cfgs[0])
    write_csv(rows, zoo_path / "phases.csv")
    by_cell = {tuple(r[a] for a in cfgs[0].zoo.axes): r["phase"] for r in rows}
    write_json(zoo_path / "phases.json", {c.id: by_cell[cell_key(c)] for c in cfgs})
    write_figures(rows, list(cfgs[0].zoo.axes), zoo_path / "figures", cfgs[0].zoo.name, _legend(cfgs[0]))
    return zoo_path / "phases.csv", rows


def relabel_csv(path: Path, cfg: DictConfig) -> tuple[Path, list[dict]]:
    """Classify every row of a metrics CSV (columns: the zoo's axes, train_loss, mc key, cka);
    writes `<name>_phases.csv` and figures beside it."""
    rows = read_csv(path)
    missing = {*cfg.zoo.axes, cfg.phases.get("trained_key", "train_loss"), cfg.phases.mc_key} - set(rows[0])
    if missing:
        raise ValueError(
            f"{path}: missing columns {sorted(missing)}; set zoo.axes / phases.mc_key to match "
            f"its columns {list(rows[0])}"
        )
    for row in rows:
        row["phase"] = label(row, cfg)
    out = path.with_name(f"{path.stem}_phases.csv")
    write_csv(rows, out)
    write_figures(rows, list(cfg.zoo.axes), path.parent / f"{path.stem}_figures", path.stem, _legend(cfg))
    return out, rows
