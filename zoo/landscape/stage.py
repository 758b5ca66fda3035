"""The landscape stage (`zoo.stage`): per-model Hessian metrics and per-seed-pair CKA / mode connectivity.

Work is split into independent items — one per model, one per pair of seeds of a grid
cell — each covering every measured epoch and written atomically at the end, so a rerun
skips finished items and a killed run redoes only the items it was in.

    runs/<zoo>/models/<id>/landscape.json     {"inputs": ..., "<epoch>": {hessian_top, hessian_trace, ...}}
    runs/<zoo>/pairs/<id_a>__<id_b>.json      {"inputs": ..., "<epoch>": {cka, mc_loss_train, ..., curves}}
"""

import itertools
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from zoo import data as datasets
from zoo.models import build
from zoo.stage import Item, read_result, run_stage
from zoo.train.rundir import RunDir, run_dir, zoo_dir_of
from zoo.train.tasks import task_of


def cell_key(cfg: DictConfig) -> tuple:
    return tuple(cfg.grid[axis] for axis in cfg.zoo.axes)


def cells(cfgs: Sequence[DictConfig]) -> dict[tuple, list[DictConfig]]:
    """The configs of each grid cell (its seeds) by `cell_key`, cells in order of first appearance."""
    out = defaultdict(list)
    for cfg in cfgs:
        out[cell_key(cfg)].append(cfg)
    return dict(out)


def measured_epochs(cfg: DictConfig) -> tuple[int, ...]:
    wanted = cfg.landscape.epochs
    return tuple(sorted({cfg.trainer.max_epochs if e == "final" else int(e) for e in wanted}))


def pairs_dir(cfg: DictConfig) -> Path:
    return zoo_dir_of(cfg) / "pairs"


def landscape_items(cfgs: Sequence[DictConfig]) -> list[Item]:
    """All items of a zoo: one per trained (`ok`) model, one per pair of `ok` seeds of a cell."""
    ok = [cfg for cfg in cfgs if run_dir(cfg).status()[0] == "ok"]

    def item(members: Sequence[DictConfig], out: Path) -> Item:
        first = members[0]
        return Item(
            "landscape",
            tuple(str(run_dir(c).path) for c in members),
            measured_epochs(first),
            str(out),
            OmegaConf.to_container(first.landscape, resolve=True),
            str(Path(first.paths.data).resolve()),
        )

    items = [item([c], run_dir(c).path / "landscape.json") for c in ok]
    for seeds in cells(ok).values():
        for a, b in itertools.combinations(sorted(seeds, key=lambda c: c.seed), 2):
            items.append(item([a, b], pairs_dir(a) / f"{a.id}__{b.id}.json"))
    return items


# -- measuring one item (runs in a worker process) -------------------------------------------


def checkpoint(run: RunDir, epoch: int) -> dict[str, torch.Tensor]:
    """The state dict a run saved at `epoch`."""
    path = run.ckpt_path(epoch)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} missing: add epoch {epoch} to checkpoint.epochs and retrain, or measure another epoch"
        )
    return load_file(path)


def _model(run: RunDir, cfg: DictConfig, epoch: int) -> torch.nn.Module:
    """The model at `epoch`, in float32 whatever precision it trained in (bf16 Hessians are noise)."""
    model = build({**cfg.model, "init": "default"})
    model.load_state_dict(checkpoint(run, epoch))
    return model.float().eval()


def train_loader(data, batch_size: int, seed: int) -> datasets.Batches:
    """The augmented, shuffled train split as training sees it, with new augmentations and order
    on every pass (the reference study measures Hessian and Bezier curves on its train loader);
    classification data only."""
    passes = itertools.count()
    return datasets.Batches(
        *data.split("train"), batch_size, shuffle=True, seed=seed, epoch=passes.__next__, transform=data.transform
    )


def _model_metrics(run: RunDir, cfg: DictConfig, epoch: int, data, land: DictConfig) -> dict:
    from zoo.landscape.hessian import hessian_metrics

    h, task = land.hessian, task_of(cfg)
    if h.get("augment", False):  # the reference: the first n_batches of its augmented train loader
        batches = list(itertools.islice(train_loader(data, h.batch_size, h.seed), h.n_batches))
    else:  # ours: a fixed, seeded, unaugmented subset
        batches = task.batches(data, h.split, h.batch_size, h.n_samples, h.seed)
    start = time.perf_counter()
    m = hessian_metrics(
        _model(run, cfg, epoch),
        task,
        batches,
        top_n=h.top_n,
        max_iter=h.max_iter,
        tol=h.tol,
        trace_tol=h.trace_tol,
        which=h.get("which", "algebraic"),
        retain_graph=h.retain_graph,
        max_basis_gb=h.max_basis_gb,
        seed=h.seed,
    )
    result = {
        "hessian_top": m["top_eigenvalues"][0],
        "hessian_top_eigenvalues": m["top_eigenvalues"],
        "hessian_trace": m["trace"],
        "hessian_trace_std": m["trace_std"],
        "hessian_n_hvp": m["n_hvp"],
    }
    if h.max_basis_gb is not None:  # which Lanczos ran (unbounded zoos keep their results' keys)
        result |= {"hessian_basis_vectors": m["basis_vectors"], "hessian_restarts": m["restarts"]}
    return result | {"seconds": round(time.perf_counter() - start, 3)}


def _pair_metrics(
    runs: tuple[RunDir, RunDir], cfgs: tuple[DictConfig, DictConfig], epoch: int, data, land: DictConfig
) -> dict:
    from zoo.landscape.cka import cka_estimates
    from zoo.landscape.connectivity import connectivity_metrics

    task = task_of(cfgs[0])
    a, b = (_model(r, c, epoch) for r, c in zip(runs, cfgs))
    start = time.perf_counter()
    ck = land.cka
    cka_batches = task.batches(data, ck.split, ck.batch_size)[: ck.get("n_batches")]  # None: all
    estimates = cka_estimates(a, b, cka_batches, lambda m, batch: task.features(m, batch, ck.layer))
    result = {"cka": estimates[f"cka_{ck.get('estimator', 'unbiased')}"], **estimates}
    bz = land.bezier
    test = task.batches(data, "test", bz.batch_size)
    if bz.get("augment", False):  # the reference: epochs of the augmented train loader
        train = train_loader(data, bz.batch_size, bz.seed)
    else:
        train = task.batches(data, "train", bz.batch_size)
    steps = bz.epochs * len(train) if bz.get("epochs") else bz.steps
    options = {k: bz[k] for k in ("momentum", "schedule", "l2", "compound_lr") if k in bz}
    result |= connectivity_metrics(
        a,
        b,
        train,
        test,
        task,
        n_bends=bz.n_bends,
        steps=steps,
        lr=bz.lr,
        optimizer=bz.optimizer,
        n_points=bz.n_points,
        seed=bz.seed,
        **options,
    )
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


def measure(item: Item) -> dict:
    """Every epoch of `item`: {"<epoch>": metrics} (`zoo.stage.run_item` writes it)."""
    runs = tuple(RunDir(p) for p in item.runs)
    cfgs = tuple(r.config() for r in runs)
    data = datasets.load(cfgs[0].data, item.data_root)
    land = OmegaConf.create(dict(item.settings))
    pair = len(runs) == 2
    return {
        str(epoch): _pair_metrics(runs, cfgs, epoch, data, land)
        if pair
        else _model_metrics(runs[0], cfgs[0], epoch, data, land)
        for epoch in item.epochs
    }


def run_landscape(cfgs: Sequence[DictConfig], workers: int = -1, slurm: dict | None = None) -> dict[str, int]:
    """Measure every item of the zoo not measured with the same inputs, in parallel processes with a
    progress bar (or as SLURM arrays with `slurm`)."""
    return run_stage(measure, landscape_items(cfgs), stage="landscape", workers=workers, slurm=slurm, cfg=cfgs[0])


def load_results(cfgs: Sequence[DictConfig]) -> tuple[dict[str, dict], dict[tuple[str, str], dict]]:
    """Per-model and per-pair results on disk computed from the current inputs (stale ones are left
    out), keyed by model id / (id_a, id_b)."""
    per_model, per_pair = {}, {}
    for item in landscape_items(cfgs):
        results = read_result(item)
        if results is not None:
            ids = tuple(item.models)
            (per_model if len(ids) == 1 else per_pair)[ids[0] if len(ids) == 1 else ids] = results
    return per_model, per_pair
