"""Weight matching (Ainsworth et al., "Git Re-Basin", ICLR 2023, Algorithm 1).

Find the permutations of model B's units that maximize Σ ⟨W_A, π(W_B)⟩ over all weights.
Each permutation in turn is solved exactly with the others fixed — a linear assignment
problem (`scipy.optimize.linear_sum_assignment`) on the similarity of A's and B's units across
every tensor the permutation touches — in a seeded random order, until a whole sweep improves
nothing. BatchNorm running statistics follow the permutation but do not vote.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from zoo.align.permutation import Spec, Weights, apply, permute_axis, sizes

NOT_MATCHED = ("running_mean", "running_var", "num_batches_tracked")


@dataclass
class Matching:
    perms: dict[str, torch.Tensor]  # apply to B (`permutation.apply`) to align it with A
    iterations: int                 # sweeps over all permutations, the last one without change
    similarity: float               # Σ ⟨W_A, π(W_B)⟩ at the end


def weight_matching(spec: Spec, a: Weights, b: Weights, *, max_iter: int = 100, seed: int = 0) -> Matching:
    """Permutations that align `b` to `a` (two state dicts of one architecture)."""
    n_units = sizes(spec, a)
    if sizes(spec, b) != n_units:
        raise ValueError("the two models differ in width: weight matching needs the same architecture")
    names = [n for n in spec if n.rsplit(".", 1)[-1] not in NOT_MATCHED and a[n].is_floating_point()]
    touches = {p: [(n, axis) for n in names for axis, q in enumerate(spec[n]) if q == p] for p in n_units}
    # A's side never changes: each (tensor, axis) as [units, rest] once. float32 matmuls, float64 sums.
    a_rows = {(n, axis): torch.movedim(a[n].float(), axis, 0).reshape(n_units[p], -1)
              for p, pairs in touches.items() for n, axis in pairs}
    perms = {p: torch.arange(n) for p, n in n_units.items()}
    order = np.random.default_rng(seed)
    for iteration in range(1, max_iter + 1):
        changed = False
        for p in order.permutation(sorted(n_units)):
            cost = sum(a_rows[n, axis] @ _rows(spec, perms, b[n].float(), n, axis, n_units[p]).T
                       for n, axis in touches[p]).double()
            _, best = linear_sum_assignment(cost.numpy(), maximize=True)
            best = torch.from_numpy(best)
            rows = torch.arange(n_units[p])
            # switch only on a real gain (above float32 rounding), so ties cannot make the sweep cycle
            if cost[rows, best].sum() > cost[rows, perms[p]].sum() + 1e-9 * cost.abs().sum():
                perms[p], changed = best, True
        if not changed:
            break
    final = apply(spec, perms, b)
    return Matching(perms, iteration, float(sum((a[n].double() * final[n].double()).sum() for n in names)))


def _rows(spec: Spec, perms: Mapping[str, torch.Tensor], wb: torch.Tensor, name: str, axis: int,
          units: int) -> torch.Tensor:
    """[units, rest]: B's units along `axis` of tensor `name`, B permuted on every other axis."""
    wb = torch.movedim(wb, axis, 0)
    for other, q in enumerate(spec[name]):
        if q is not None and other != axis:
            wb = permute_axis(wb, other + (other < axis), perms[q])  # movedim shifted the axes before it
    return wb.reshape(units, -1)


def align(spec: Spec, a: Weights, b: Weights, **kwargs) -> tuple[dict[str, torch.Tensor], Matching]:
    """`b` permuted to match `a` (same function as `b`), and the matching that did it."""
    matching = weight_matching(spec, a, b, **kwargs)
    return apply(spec, matching.perms, b), matching
