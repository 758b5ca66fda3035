"""The `zoo-apply` stage (`zoo.stage`): one application over every grid cell of a zoo — merging
(`zoo.apply.apps`: averaging, lmc, soup), pruning (`zoo.apply.prune`), transfer (`zoo.apply.transfer`).

One item per cell (its `ok` seeds), written atomically when done, so a rerun skips finished
cells and a killed run redoes only the cells it was in:

    runs/<zoo>/apply/<app>/<cell>.json       the cell's result
    runs/<zoo>/apply/<app>/table.csv         one row per cell: axes, phase, the app's metrics
    runs/<zoo>/apply/<app>/by_phase.csv      the metrics averaged per phase
    runs/<zoo>/figures/<app>_<metric>.png    heatmaps next to the phase map, cells labelled by phase
    runs/<zoo>/figures/<app>_by_phase.png    the metrics per phase; lmc_curves.png: mean paths per phase;
                                             prune_curves.png, prune_tickets.png: accuracy vs sparsity per phase

`apply_packed` runs the same computation over a packed zoo (shards), for zoos without run dirs.
"""

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from zoo import data as datasets
from zoo.align.permutation import heads, spec_for
from zoo.apply import apps, prune, transfer
from zoo.config import CONF_DIR, ConfigError, validate
from zoo.landscape.stage import cell_key, cells, checkpoint
from zoo.load import open_zoo
from zoo.models import build
from zoo.pack.samples import read_json
from zoo.phases.plots import describe, heatmap, phase_bars, phase_curves
from zoo.phases.table import write_csv
from zoo.stage import Item, read_result, run_stage
from zoo.train.rundir import RunDir, checkpoint_epochs, run_dir, zoo_dir_of
from zoo.train.tasks import task_of

APPS = ("averaging", "lmc", "soup", "prune", "transfer")
APP_SECTIONS = ("prune", "transfer")  # conf/apply sections that belong to one app
# The per-cell metrics each app plots and tabulates (the rest of its JSON is detail).
METRICS = {
    "averaging": (
        "epoch_avg_gain",
        "seed_avg_gain",
        "seed_avg_gain_aligned",
        "seed_avg_all_gain_aligned",
        "ref_epoch_avg_gain",
    ),
    "lmc": ("barrier_loss_train", "barrier_loss_train_aligned", "barrier_err_test", "barrier_err_test_aligned"),
    "soup": ("uniform_soup_gain", "uniform_soup_gain_aligned", "greedy_soup_gain", "greedy_soup_gain_aligned"),
    "prune": prune.METRICS,
    "transfer": transfer.METRICS,
}


def apply_dir(cfg: DictConfig, app: str) -> Path:
    return zoo_dir_of(cfg) / "apply" / app


def cell_name(cfg: DictConfig) -> str:
    return "__".join(f"{axis.rsplit('.', 1)[-1]}{value}" for axis, value in zip(cfg.zoo.axes, cell_key(cfg)))


def sorted_cells(cfgs: Sequence[DictConfig]) -> list[tuple[tuple, list[DictConfig]]]:
    return sorted(cells(cfgs).items())


def app_settings(apply: DictConfig, app: str) -> dict:
    """What `app` computes with: the shared `apply.*` settings and its own section, not another app's
    section nor the list of apps to run, so that changing apply.prune.* leaves lmc's results valid."""
    settings = OmegaConf.to_container(apply, resolve=True)
    return {k: v for k, v in settings.items() if k != "apps" and (k not in APP_SECTIONS or k == app)}


def apply_items(cfgs: Sequence[DictConfig], app: str) -> list[Item]:
    """One item per cell with at least two `ok` seeds (one model has nothing to merge with)."""
    if app not in APPS:
        raise ValueError(f"unknown app={app!r}; choose one of {list(APPS)}")
    validate(cfgs[0])
    if app in ("prune", "transfer") and cfgs[0].data.get("task", "classify") != "classify":
        raise ConfigError(
            f"zoo {cfgs[0].zoo.name} is a {cfgs[0].data.task} zoo: app={app} supports classification zoos only for now"
        )
    tickets = _ticket_cells(cfgs) if app == "prune" else set()
    items = []
    for key, members in sorted_cells(cfgs):
        ok = sorted((c for c in members if run_dir(c).status()[0] == "ok"), key=lambda c: c.seed)
        if len(ok) >= 2:
            first = ok[0]
            settings = app_settings(first.apply, app)
            if app == "prune":
                settings["prune"]["ticket_cell"] = key in tickets
            items.append(
                Item(
                    f"apply-{app}",
                    tuple(str(run_dir(c).path) for c in ok),
                    tuple(needed_epochs(first, app, settings)),
                    str(apply_dir(first, app) / f"{cell_name(first)}.json"),
                    settings,
                    str(Path(first.paths.data).resolve()),
                )
            )
    return items


def _ticket_cells(cfgs: Sequence[DictConfig]) -> set[tuple]:
    """The cells that get lottery tickets, by the phases zoo-phases wrote (if it ran)."""
    phases = read_json(zoo_dir_of(cfgs[0]) / "phases.json", {})
    return prune.ticket_cells(
        {key: phases.get(members[0].id) for key, members in sorted_cells(cfgs)},
        cfgs[0].apply.prune.tickets.cells_per_phase,
    )


def bench(cfg: DictConfig, settings: dict, data_root: str) -> apps.Bench:
    """The architecture and the fixed batches every model of the zoo is measured on (the task's)."""
    data, task = datasets.load(cfg.data, data_root), task_of(cfg)
    n_test, bs = task.split_size(data, "test"), settings["batch_size"]
    n_val = int(n_test * settings["val_fraction"])
    model = build({**cfg.model, "init": "default"})
    return apps.Bench(
        model,
        spec_for(cfg.model.name, model.state_dict(), heads=heads(cfg.model)),
        train=task.batches(data, "train", bs, settings["bn_samples"], settings["seed"]),
        val=task.batches(data, "test", bs, n_val, settings["seed"]),
        test=task.batches(data, "test", bs, n_test - n_val, settings["seed"], offset=n_val),
        max_iter=settings["max_iter"],
        task=task,
    )


def compute(
    app: str, b: apps.Bench, runs: Sequence[dict[int, apps.State]], settings: Mapping, cfg: DictConfig, data_root: str
) -> dict:
    """`app` on one cell: `runs` holds each seed's checkpoints by epoch (lmc, soup, transfer use the last);
    `cfg` is the config of its first seed (the zoo's recipe), `data_root` where the data sets are."""
    if app == "averaging":
        return apps.averaging(b, runs, settings["last_k"], settings.get("reference_epoch"))
    if app == "prune":
        return prune.cell(b, cfg, runs, settings["prune"], data_root)
    finals = [run[max(run)] for run in runs]
    if app == "transfer":
        return transfer.cell(cfg, finals, settings["transfer"], data_root)
    return apps.lmc(b, finals, settings["n_points"]) if app == "lmc" else apps.soup(b, finals)


def needed_epochs(cfg: DictConfig, app: str, settings: Mapping) -> list[int]:
    """The checkpoints `app` reads of each model: the final one (and, for prune, the one lottery
    tickets rewind to), or the last `last_k` to average (and the reference's five epochs up to
    `reference_epoch`, when set)."""
    final = cfg.trainer.max_epochs
    if app == "prune":
        return sorted({settings["prune"]["tickets"]["rewind_epoch"], final})
    if app != "averaging":
        return [final]
    saved = sorted(e for e in checkpoint_epochs(cfg) if e <= final)
    window = []
    if (ref := settings.get("reference_epoch")) is not None:
        window = list(range(ref - 4, ref + 1))
        if missing := sorted(set(window) - set(saved)):
            raise ValueError(
                f"apply.reference_epoch={ref} averages epochs {window}, but epochs {missing} are not "
                "in checkpoint.epochs: add them and retrain, or set apply.reference_epoch=null"
            )
    return sorted({*saved[-settings["last_k"] :], *window})


def compute_cell(item: Item) -> dict:
    """One cell's result (`zoo.stage.run_item` writes it)."""
    runs = [RunDir(p) for p in item.runs]
    cfg = runs[0].config()
    app = item.stage.removeprefix("apply-")
    return {
        "models": item.models,
        "epoch": cfg.trainer.max_epochs,
        **compute(
            app,
            bench(cfg, item.settings, item.data_root),
            [{e: checkpoint(r, e) for e in item.epochs} for r in runs],
            item.settings,
            cfg,
            item.data_root,
        ),
    }


def apply_packed(
    source, app: str, data_root: str | Path, settings: Mapping | None = None, where: Mapping | None = None
) -> list[dict]:
    """`app` over the cells of a packed zoo (a manifest, a shard directory or URLs: whatever
    `zoo.load.open_zoo` reads), in this process; one row per cell with at least two `ok` seeds:
    its axes, phase, models and the app's result. `settings` default to conf/apply/default.yaml.
    One pass over the shards; it holds the checkpoints the app reads (`needed_epochs`) of every
    selected model in memory: narrow a large zoo with `where`."""
    settings = settings or OmegaConf.to_container(OmegaConf.load(CONF_DIR / "apply" / "default.yaml"), resolve=True)
    runs, metas, needed = defaultdict(dict), {}, {}
    for weights, meta in open_zoo(source, view="state_dict", where={"status": "ok", **(where or {})}):
        if meta["id"] not in needed:
            needed[meta["id"]] = needed_epochs(OmegaConf.create(meta["config"]), app, settings)
        if meta["epoch"] in needed[meta["id"]]:
            runs[meta["id"]][meta["epoch"]] = weights
            metas[meta["id"]] = meta
    if not metas:
        raise ValueError(
            f"{source}: no sample with status ok matches where={where or {}}; nothing to apply "
            f"{app} to. Widen `where` or check the zoo with `zoo-pack verify`"
        )
    axes = next(iter(metas.values()))["config"]["zoo"]["axes"]
    by_cell = defaultdict(list)
    for model_id, meta in sorted(metas.items(), key=lambda kv: kv[1]["grid"]["seed"]):
        by_cell[tuple(meta["grid"][a] for a in axes)].append(model_id)
    tickets = (
        prune.ticket_cells(
            {key: metas[ids[0]]["phase"] for key, ids in by_cell.items()},
            settings["prune"]["tickets"]["cells_per_phase"],
        )
        if app == "prune"
        else set()
    )
    rows = []
    for key, ids in sorted(by_cell.items()):
        if len(ids) >= 2:
            meta, cfg = metas[ids[0]], OmegaConf.create(metas[ids[0]]["config"])
            cell_settings = {**settings, "prune": {**settings["prune"], "ticket_cell": key in tickets}}
            rows.append(
                dict(zip(axes, key))
                | {"phase": meta["phase"], "models": ids}
                | compute(
                    app,
                    bench(cfg, settings, str(data_root)),
                    [runs[i] for i in ids],
                    cell_settings,
                    cfg,
                    str(data_root),
                )
            )
    return rows


def cell_results(cfgs: Sequence[DictConfig], app: str) -> list[tuple[tuple, list[DictConfig], dict]]:
    """Each cell's key, configs and stored result of `app` ({} until computed from the cell's current
    models and settings), in key order."""
    items = {Path(item.out): item for item in apply_items(cfgs, app)}
    results = []
    for key, members in sorted_cells(cfgs):
        item = items.get(apply_dir(cfgs[0], app) / f"{cell_name(members[0])}.json")
        results.append((key, members, (read_result(item) if item else None) or {}))
    return results


def table(cfgs: Sequence[DictConfig], app: str, results: Sequence[tuple]) -> list[dict]:
    """One row per cell of `cell_results`: its axes, its phase (from zoo-phases, if run) and the
    app's metrics."""
    first = cfgs[0]
    phases = read_json(zoo_dir_of(first) / "phases.json", {})
    return [
        dict(zip(first.zoo.axes, key)) | {"phase": phases.get(members[0].id)} | {m: result.get(m) for m in METRICS[app]}
        for key, members, result in results
    ]


def lmc_curves(rows: Sequence[dict], results: Sequence[tuple], key: str) -> dict[str, dict[str, list]]:
    """Per phase, the `key` curves (e.g. err_test) of every seed pair, as measured ("") and aligned."""
    out: dict[str, dict[str, list]] = defaultdict(lambda: {"": [], "_aligned": []})
    for row, (_, _, result) in zip(rows, results):
        if row["phase"] and result:
            for pair in result["pairs"]:
                for suffix in ("", "_aligned"):
                    out[row["phase"]][suffix].append((pair[f"curve{suffix}"]["t"], pair[f"curve{suffix}"][key]))
    return dict(out)


def by_phase(rows: Sequence[dict], metrics: Sequence[str]) -> list[dict]:
    """Mean of each metric over the cells of each phase (cells without a value left out)."""
    out = []
    for phase in sorted({r["phase"] for r in rows if r["phase"]}):
        members = [r for r in rows if r["phase"] == phase]
        means = {}
        for m in metrics:
            values = [r[m] for r in members if r[m] is not None and math.isfinite(r[m])]
            means[m] = sum(values) / len(values) if values else None
        out.append({"phase": phase, "n_cells": len(members), **means})
    return out


def run_apply(cfgs: Sequence[DictConfig], app: str, workers: int = -1, slurm: Mapping | None = None) -> dict:
    """Compute every missing cell — in `workers` local processes, or as SLURM arrays with `slurm`
    (hydra.launcher settings) — then write the tables and figures; returns counts and both tables."""
    counts = run_stage(
        compute_cell, apply_items(cfgs, app), stage=f"apply-{app}", workers=workers, slurm=slurm, cfg=cfgs[0]
    )
    results = cell_results(cfgs, app)
    rows = table(cfgs, app, results)
    summary = by_phase(rows, METRICS[app])
    out, figures = apply_dir(cfgs[0], app), zoo_dir_of(cfgs[0]) / "figures"
    write_csv(rows, out / "table.csv")
    if summary:
        write_csv(summary, out / "by_phase.csv")
        phase_bars(summary, METRICS[app], figures / f"{app}_by_phase.png", title=f"{cfgs[0].zoo.name}: {app} per phase")
    if app == "lmc" and summary:
        phase_curves(
            lmc_curves(rows, results, "err_test"),
            "test error",
            figures / "lmc_curves.png",
            title=f"{cfgs[0].zoo.name}: linear paths between seeds, mean per phase",
        )
    if app == "prune" and summary:
        prune.figures(rows, [result for _, _, result in results], figures, cfgs[0].zoo.name)
    x, y = cfgs[0].zoo.axes
    for metric in METRICS[app]:
        if any(r[metric] is not None for r in rows):
            heatmap(
                rows,
                x,
                y,
                metric,
                figures / f"{app}_{metric}.png",
                title=f"{cfgs[0].zoo.name}: {describe(metric)}",
                label="phase",
                diverging="gain" in metric,
            )
    return {
        "cells": counts["items"],
        "computed": counts["computed"],
        "failed": counts["failed"],
        "rows": rows,
        "by_phase": summary,
    }
