"""Merging state dicts: interpolation, averages, soups, the loss barrier of a linear path.

Functions take and return plain state dicts; integer buffers (BatchNorm's
`num_batches_tracked`) are taken from the first model. Merged BatchNorm statistics are
meaningless: evaluate merged models with `zoo.landscape.connectivity.evaluate_params`, which
recomputes them. Alignment is the caller's choice: align the ingredients first
(`zoo.align.matching.align`) to merge "with alignment".
"""

from collections.abc import Callable, Sequence

import torch

from zoo.align.permutation import Weights


def lerp(a: Weights, b: Weights, t: float) -> dict[str, torch.Tensor]:
    """(1 - t) a + t b."""
    return {n: torch.lerp(a[n], b[n], t) if a[n].is_floating_point() else a[n] for n in a}


def average(states: Sequence[Weights]) -> dict[str, torch.Tensor]:
    """The uniform average: a uniform soup, or the average of a run's last checkpoints."""
    first = states[0]
    return {n: torch.stack([s[n] for s in states]).mean(0) if first[n].is_floating_point() else first[n] for n in first}


def greedy_soup(
    states: Sequence[Weights], scores: Sequence[float], score: Callable[[Weights], float]
) -> tuple[dict, list[int], float]:
    """Wortsman et al. 2022: rank the ingredients by their `scores` (held-out accuracy), start from
    the best, add each next one if the average does not `score` lower. Returns the soup, the
    indices of its ingredients and its score — never below the best ingredient's, by construction."""
    ranked = sorted(range(len(states)), key=lambda i: -scores[i])
    chosen, best = ranked[:1], scores[ranked[0]]
    for i in ranked[1:]:
        candidate = score(average([states[j] for j in [*chosen, i]]))
        if candidate >= best:
            chosen, best = [*chosen, i], candidate
    return average([states[j] for j in chosen]), chosen, best


def barrier(values: Sequence[float]) -> float:
    """max_t [L(t) - ((1 - t) L(0) + t L(1))] over evenly spaced t, endpoints first and last:
    the loss (or error) barrier of Frankle et al. 2020 and Entezari et al. 2022; 0 = linearly
    connected."""
    n = len(values) - 1
    return max(v - ((1 - i / n) * values[0] + i / n * values[-1]) for i, v in enumerate(values))
