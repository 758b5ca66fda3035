"""`app=prune`: sparsification of each model of a grid cell, as the reference study measures it per phase.

- One-shot global magnitude pruning of the final weights at `sparsities`: test accuracy as pruned,
  and after `finetune_steps` steps of the model's own recipe with the masks kept.
  `safe_sparsity[_finetuned]`: the largest sparsity whose accuracy stays within `margin` of the
  dense model's (the next tested sparsity is where it drops by more).
- Lottery tickets (Frankle & Carbin 2019; with rewinding, Frankle et al. 2020), on the cells
  `ticket_cells` picks: iterative magnitude pruning, each round pruning the previous round's
  trained weights further, rewinding the survivors to the checkpoint of `rewind_epoch` and
  retraining them; the control trains the same mask from a random re-initialisation.
  `ticket_gain`: ticket minus control test accuracy, averaged over the rounds.

Pruned: the weights of every Linear and Conv layer (biases and norms are kept), ranked together.
Accuracies are on the reporting half of the held-out data (`Bench.test`), BatchNorm statistics
recomputed for every pruned model.
"""

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from zoo import data as datasets
from zoo.apply.apps import Bench, State
from zoo.apply.training import Masks, fresh_init, train_steps
from zoo.phases.plots import phase_curves

METRICS = ("dense_acc", "safe_sparsity", "safe_sparsity_finetuned", "ticket_gain")


def prunable(model: nn.Module) -> list[str]:
    """Names of the weights pruning ranks: every Linear and Conv layer's."""
    return [f"{name}.weight" for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


def magnitude_masks(state: State, names: Sequence[str], sparsity: float, keep: Masks | None = None) -> Masks:
    """Global magnitude pruning: of the n weights `names` hold, exactly round((1 - sparsity) n) survive,
    the largest in |w| among those `keep` (a previous round's masks) still holds."""
    scores = torch.cat(
        [
            state[n].abs().flatten().float()
            if keep is None
            else state[n].abs().flatten().float().masked_fill(~keep[n].flatten(), -1)
            for n in names
        ]
    )
    n_keep = round((1 - sparsity) * len(scores))
    if keep is not None and n_keep > sum(int(keep[n].sum()) for n in names):
        raise ValueError(f"sparsity {sparsity} is below the previous round's: ticket sparsities must increase")
    flat = torch.zeros(len(scores), dtype=torch.bool)
    flat[scores.topk(n_keep).indices] = True
    masks, start = {}, 0
    for n in names:
        masks[n] = flat[start : start + state[n].numel()].view(state[n].shape)
        start += state[n].numel()
    return masks


def sparsity(masks: Masks) -> float:
    return 1 - sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())


def masked(state: State, masks: Masks) -> State:
    return {k: v * masks[k] if k in masks else v for k, v in state.items()}


def safe_sparsity(dense_acc: float, accs: Sequence[float], sparsities: Sequence[float], margin: float) -> float:
    """The largest of the (increasing) `sparsities` up to which accuracy stays within `margin` of dense."""
    safe = 0.0
    for s, acc in zip(sparsities, accs):
        if dense_acc - acc > margin:
            break
        safe = s
    return safe


def finetune(b: Bench, cfg: DictConfig, data, state: State, masks: Masks, steps: int) -> State:
    """`steps` steps of the model's own recipe (optimizer, lr schedule, batch size) from `state`, masks kept."""
    model = train_steps(
        b.module(state), data, cfg.optim, steps=steps, batch_size=cfg.data.batch_size, seed=cfg.seed, masks=masks
    )
    return model.state_dict()


def lottery_tickets(b: Bench, cfg: DictConfig, data, early: State, final: State, settings: Mapping) -> dict:
    """One IMP round per `settings["sparsities"]`; each retrains `epochs` epochs (null: to the model's
    final epoch) from `rewind_epoch`, continuing the model's lr schedule from there."""
    rewind, bs = settings["rewind_epoch"], cfg.data.batch_size
    epochs = settings["epochs"] or cfg.trainer.max_epochs - rewind
    per_epoch = len(data.batches("train", bs))
    names, reinit = prunable(b.model), fresh_init(cfg).state_dict()

    def retrain(state: State, masks: Masks) -> State:
        model = train_steps(
            b.module(state),
            data,
            cfg.optim,
            steps=epochs * per_epoch,
            batch_size=bs,
            seed=cfg.seed,
            masks=masks,
            schedule_offset=rewind * per_epoch,
        )
        return model.state_dict()

    out, trained, keep = {"ticket_acc": [], "reinit_acc": []}, final, None
    for s in settings["sparsities"]:
        keep = magnitude_masks(trained, names, s, keep)
        trained = retrain(masked(early, keep), keep)
        out["ticket_acc"].append(b.acc(trained))
        out["reinit_acc"].append(b.acc(retrain(masked(reinit, keep), keep)))
    out["ticket_gain"] = statistics.mean(t - r for t, r in zip(out["ticket_acc"], out["reinit_acc"]))
    return out


def cell(b: Bench, cfg: DictConfig, runs: Sequence[dict[int, State]], settings: Mapping, data_root: str) -> dict:
    """`runs`: per seed, its checkpoints by epoch (the final one; the rewind one in a ticket cell).
    Cell values are means over seeds; `models` keeps each seed's."""
    sparsities, margin = list(settings["sparsities"]), settings["margin"]
    if sparsities != sorted(sparsities) or not all(0 < s < 1 for s in sparsities):
        raise ValueError(f"apply.prune.sparsities={sparsities} must increase, each strictly between 0 and 1")
    data = datasets.load(cfg.data, data_root)
    names = prunable(b.model)
    models = []
    for run in runs:
        final = run[cfg.trainer.max_epochs]
        dense = b.acc(final)
        masks = [magnitude_masks(final, names, s) for s in sparsities]
        pruned = [b.acc(masked(final, m)) for m in masks]
        tuned = [b.acc(finetune(b, cfg, data, masked(final, m), m, settings["finetune_steps"])) for m in masks]
        model = {
            "dense_acc": dense,
            "acc_pruned": pruned,
            "acc_finetuned": tuned,
            "safe_sparsity": safe_sparsity(dense, pruned, sparsities, margin),
            "safe_sparsity_finetuned": safe_sparsity(dense, tuned, sparsities, margin),
        }
        if settings.get("ticket_cell"):
            tickets = settings["tickets"]
            model |= lottery_tickets(b, cfg, data, run[tickets["rewind_epoch"]], final, tickets)
        models.append(model)
    means = {
        k: [statistics.mean(v) for v in zip(*(m[k] for m in models))]
        if isinstance(models[0][k], list)
        else statistics.mean(m[k] for m in models)
        for k in models[0]
    }
    tickets = {"ticket_sparsities": list(settings["tickets"]["sparsities"])} if settings.get("ticket_cell") else {}
    return {"sparsities": sparsities, **tickets, **means, "per_model": models}


def ticket_cells(phase_of_cell: Mapping[tuple, str | None], per_phase: int) -> set[tuple]:
    """`per_phase` cells of each phase (unlabelled cells: one more group), spread evenly over the
    phase's cells in grid order: the middle one when `per_phase` is 1."""
    groups = defaultdict(list)
    for key in sorted(phase_of_cell):
        groups[phase_of_cell[key]].append(key)
    chosen = set()
    for keys in groups.values():
        n = min(per_phase, len(keys))
        chosen |= {keys[(2 * i + 1) * len(keys) // (2 * n)] for i in range(n)}
    return chosen


def figures(rows: Sequence[dict], results: Sequence[dict], out: Path, zoo: str) -> None:
    """Per phase: `prune_curves.png` (accuracy vs sparsity, pruned and fine-tuned, from the dense
    model at 0) and `prune_tickets.png` (lottery tickets vs random re-initialisation)."""
    curves, tickets = defaultdict(lambda: {"": [], "_finetuned": []}), defaultdict(lambda: {"": [], "_ticket": []})
    for row, result in zip(rows, results):
        if row["phase"] and result:
            x = [0.0, *result["sparsities"]]
            for m in result["per_model"]:
                curves[row["phase"]][""].append((x, [m["dense_acc"], *m["acc_pruned"]]))
                curves[row["phase"]]["_finetuned"].append((x, [m["dense_acc"], *m["acc_finetuned"]]))
                if "ticket_acc" in m:
                    tickets[row["phase"]][""].append((result["ticket_sparsities"], m["reinit_acc"]))
                    tickets[row["phase"]]["_ticket"].append((result["ticket_sparsities"], m["ticket_acc"]))
    xlabel = "sparsity (fraction of weights pruned)"
    if curves:
        phase_curves(
            dict(curves),
            "test accuracy",
            out / "prune_curves.png",
            xlabel=xlabel,
            unit="models",
            styles=(("", "--", "pruned"), ("_finetuned", "-", "pruned + fine-tuned")),
            title=f"{zoo}: global magnitude pruning, mean per phase",
        )
    if tickets:
        phase_curves(
            dict(tickets),
            "test accuracy",
            out / "prune_tickets.png",
            xlabel=xlabel,
            unit="models",
            styles=(("", "--", "random re-init, same mask"), ("_ticket", "-", "lottery ticket (rewound)")),
            title=f"{zoo}: lottery tickets vs random re-initialisation, mean per phase",
        )
