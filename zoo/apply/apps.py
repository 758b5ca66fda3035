"""The applications, on the seeds of one grid cell: averaging, linear mode connectivity, soups.

Every merge is measured twice, as the models are and after weight matching (`*_aligned`):
the difference is what permutation symmetry costs in each phase. Accuracies are on held-out
data: `val` chooses (the greedy soup's ingredients, the best ingredient), `test` reports.
Losses and errors are the task's (zoo.train.tasks): for PINNs the error is the relative L2 error
against the exact solution, and "accuracy" 1 - that error.

- `averaging`: the average of each model's last `last_k` checkpoints vs its final weights
  (`epoch_avg_gain`), and the average of two seeds vs the mean of the two (`seed_avg_gain`);
  beside them the reference study's variants (all seeds at once, its five-epoch window).
- `lmc`: loss and error along the straight line between two seeds, and the barrier
  (`zoo.align.merging.barrier`) on it, before and after alignment.
- `soup`: uniform and greedy soups (Wortsman et al. 2022) of all seeds vs the best ingredient.
"""

import copy
import itertools
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from zoo.align.matching import align
from zoo.align.merging import average, barrier, greedy_soup
from zoo.align.permutation import Spec, Weights
from zoo.landscape.connectivity import Batches, evaluate_params, linear_path
from zoo.train.tasks import Classify, Task

State = dict[str, torch.Tensor]


@dataclass
class Bench:
    """Where merged models are measured: one architecture and fixed batches."""

    model: nn.Module  # the architecture; its weights are replaced at every evaluation
    spec: Spec  # its permutation symmetries (`zoo.align.permutation.spec_for`)
    train: Batches  # recompute BatchNorm statistics; the train-loss barrier
    val: Batches  # held out: chooses
    test: Batches  # held out: reports
    max_iter: int = 100  # weight matching
    task: Task = Classify()

    def evaluate(self, state: Weights, split: str = "test") -> dict[str, float]:
        params = {n: state[n] for n, _ in self.model.named_parameters()}
        return evaluate_params(self.model, params, self.task, self.train, {split: getattr(self, split)})

    def acc(self, state: Weights, split: str = "test") -> float:
        return 1 - self.evaluate(state, split)[f"err_{split}"]

    def align(self, a: Weights, b: Weights) -> State:
        return align(self.spec, a, b, max_iter=self.max_iter)[0]

    def module(self, state: Weights) -> nn.Module:
        model = copy.deepcopy(self.model)
        model.load_state_dict(state)
        return model


def averaging(
    bench: Bench, runs: Sequence[dict[int, State]], last_k: int = 3, reference_epoch: int | None = None
) -> dict:
    """`runs`: per seed, its checkpoints by epoch (the last is the final model).

    Beside ours, the reference study's variants (ptmz/model_averaging/): all seeds aligned to
    seed 0 and averaged at once (`seed_avg_all_gain*`), and with `reference_epoch` E the average
    of epochs E-4..E against the model at E (`ref_epoch_avg_gain`), as its compute_model_average_*
    scripts do.
    """
    finals = [run[max(run)] for run in runs]
    acc = [bench.acc(s) for s in finals]
    epochs = sorted(runs[0])[-last_k:]
    epoch_avg = [bench.acc(average([run[e] for e in epochs])) for run in runs]
    out = {
        "test_acc": statistics.mean(acc),
        "epochs_averaged": epochs,
        "epoch_avg_gain": statistics.mean(e - a for e, a in zip(epoch_avg, acc)),
    }
    aligned = {}  # (i, j): seed j aligned to seed i
    for suffix, prepare in (("", lambda a, b: b), ("_aligned", bench.align)):
        gains = []
        for i, j in itertools.combinations(range(len(finals)), 2):
            aligned[i, j] = prepare(finals[i], finals[j])
            gains.append(bench.acc(average([finals[i], aligned[i, j]])) - (acc[i] + acc[j]) / 2)
        out[f"seed_avg_gain{suffix}"] = statistics.mean(gains)
        out[f"seed_avg_all_gain{suffix}"] = bench.acc(
            average([finals[0], *(aligned[0, j] for j in range(1, len(finals)))])
        ) - statistics.mean(acc)
    if reference_epoch is not None:
        window = list(range(reference_epoch - 4, reference_epoch + 1))
        gains = [bench.acc(average([run[e] for e in window])) - bench.acc(run[reference_epoch]) for run in runs]
        out |= {"ref_epochs_averaged": window, "ref_epoch_avg_gain": statistics.mean(gains)}
    return out


def lmc(bench: Bench, finals: Sequence[State], n_points: int = 21) -> dict:
    """Barriers of test error and of train and test loss along the linear path of every seed pair."""
    pairs = []
    for i, j in itertools.combinations(range(len(finals)), 2):
        start = time.perf_counter()
        aligned = bench.align(finals[i], finals[j])
        seconds = time.perf_counter() - start
        pair = {"seeds": [i, j], "align_seconds": round(seconds, 3)}
        for suffix, b in (("", finals[j]), ("_aligned", aligned)):
            curve = linear_path(bench.module(finals[i]), bench.module(b), bench.train, bench.task, bench.test, n_points)
            pair[f"curve{suffix}"] = curve
            for key in ("loss_train", "loss_test", "err_test"):
                pair[f"barrier_{key}{suffix}"] = barrier(curve[key])
        pairs.append(pair)
    means = {k: statistics.mean(p[k] for p in pairs) for k in pairs[0] if k.startswith("barrier_")}
    return {**means, "pairs": pairs}


def soup(bench: Bench, finals: Sequence[State]) -> dict:
    """Gains in test accuracy over the best ingredient (chosen on val) of uniform and greedy soups."""
    val = [bench.acc(s, "val") for s in finals]
    best = max(range(len(finals)), key=lambda i: val[i])
    best_test = bench.acc(finals[best])
    out = {"best_ingredient_test_acc": best_test, "best_ingredient_val_acc": val[best]}
    # An aligned ingredient computes what it did before alignment: the same val accuracy.
    for suffix, states in (("", finals), ("_aligned", [bench.align(finals[best], s) for s in finals])):
        out[f"uniform_soup_gain{suffix}"] = bench.acc(average(states)) - best_test
        greedy, chosen, score = greedy_soup(states, val, lambda s: bench.acc(s, "val"))
        out[f"greedy_soup_gain{suffix}"] = bench.acc(greedy) - best_test
        out[f"greedy_soup_val_acc{suffix}"] = score
        out[f"greedy_soup_size{suffix}"] = len(chosen)
    return out
