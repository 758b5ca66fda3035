"""Weight matching (Ainsworth et al., "Git Re-Basin", ICLR 2023, Algorithm 1).

Find the permutations of model B's units that maximize Σ ⟨W_A, π(W_B)⟩ over all weights.
Each permutation in turn is solved exactly with the others fixed — a linear assignment
problem (`scipy.optimize.linear_sum_assignment`) on the similarity of A's and B's units across
every tensor the permutation touches — in a seeded random order, until a whole sweep improves
nothing. BatchNorm running statistics follow the permutation but do not vote. The q/k and v
permutations of an attention layer are solved together, heads kept whole (`_head_assignment`).
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from zoo.align.permutation import Spec, Weights, apply, head_perm, permute_segments, segments, sizes

NOT_MATCHED = ("running_mean", "running_var", "num_batches_tracked")


@dataclass
class Matching:
    perms: dict[str, torch.Tensor]  # apply to B (`permutation.apply`) to align it with A
    iterations: int  # sweeps over all permutations, the last one without change
    similarity: float  # Σ ⟨W_A, π(W_B)⟩ at the end


def weight_matching(spec: Spec, a: Weights, b: Weights, *, max_iter: int = 100, seed: int = 0) -> Matching:
    """Permutations that align `b` to `a` (two state dicts of one architecture)."""
    n_units = sizes(spec, a)
    if sizes(spec, b) != n_units:
        raise ValueError("the two models differ in width: weight matching needs the same architecture")
    names = [n for n in spec if n.rsplit(".", 1)[-1] not in NOT_MATCHED and a[n].is_floating_point()]
    touches = {
        p: [
            (n, axis, k)
            for n in names
            for axis, entry in enumerate(spec[n])
            for k, q in enumerate(segments(entry))
            if q == p
        ]
        for p in n_units
    }
    # A's side never changes: each (tensor, axis, segment) as [units, rest] once. float32 matmuls, float64 sums.
    a_rows = {key: _segment(spec, a[key[0]].float(), *key, n_units[p]) for p, keys in touches.items() for key in keys}
    perms = {p: torch.arange(n) for p, n in n_units.items()}
    # Units of the coordinate descent: a plain permutation, or the tied permutations of one attention layer.
    tied = {p: group for group in spec.heads for p in group[1:]}
    steps = sorted({tied.get(p, (None, p)) for p in n_units}, key=str)
    order = np.random.default_rng(seed)
    for iteration in range(1, max_iter + 1):  # noqa: B007 - the sweeps it took are returned
        changed = False
        for i in order.permutation(len(steps)):
            n_heads, *group = steps[i]
            costs = [
                sum(
                    a_rows[key] @ _rows(spec, perms, b[key[0]].float(), *key, n_units[p]).T for key in touches[p]
                ).double()
                for p in group
            ]
            best = _head_assignment(costs, n_heads) if n_heads else [_assignment(costs[0])]
            rows = torch.arange(len(costs[0]))
            gain = sum(c[rows, new].sum() - c[rows, perms[p]].sum() for c, new, p in zip(costs, best, group))
            # switch only on a real gain (above float32 rounding), so ties cannot make the sweep cycle
            if gain > 1e-9 * sum(c.abs().sum() for c in costs):
                perms.update(zip(group, best))
                changed = True
        if not changed:
            break
    final = apply(spec, perms, b)
    return Matching(perms, iteration, float(sum((a[n].double() * final[n].double()).sum() for n in names)))


def _assignment(cost: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(linear_sum_assignment(cost.numpy(), maximize=True)[1])


def _head_assignment(costs: list[torch.Tensor], n_heads: int) -> list[torch.Tensor]:
    """Head-structured permutations maximizing the summed similarity `costs` (one [A channels, B
    channels] matrix per tied permutation): the best within-head assignment for every pair of
    heads, then the best assignment of whole heads by the sum of those."""
    d = len(costs[0]) // n_heads
    block = lambda c, i, j: c[i * d : (i + 1) * d, j * d : (j + 1) * d]
    within = {
        (i, j, k): _assignment(block(c, i, j))
        for i in range(n_heads)
        for j in range(n_heads)
        for k, c in enumerate(costs)
    }
    heads = torch.tensor(
        [
            [
                sum(block(c, i, j)[torch.arange(d), within[i, j, k]].sum().item() for k, c in enumerate(costs))
                for j in range(n_heads)
            ]
            for i in range(n_heads)
        ]
    )
    order = _assignment(heads)
    return [head_perm(order, [within[i, int(j), k] for i, j in enumerate(order)]) for k in range(len(costs))]


def _segment(spec: Spec, w: torch.Tensor, name: str, axis: int, k: int, units: int) -> torch.Tensor:
    """[units, rest]: segment k of `axis` of tensor `name`, that axis first."""
    return torch.movedim(w, axis, 0).chunk(len(segments(spec[name][axis])))[k].reshape(units, -1)


def _rows(
    spec: Spec, perms: Mapping[str, torch.Tensor], wb: torch.Tensor, name: str, axis: int, k: int, units: int
) -> torch.Tensor:
    """[units, rest]: B's units in segment k of `axis` of tensor `name`, B permuted on every other axis."""
    for other, entry in enumerate(spec[name]):
        if other != axis:
            wb = permute_segments(wb, other, entry, perms)
    return _segment(spec, wb, name, axis, k, units)


def align(spec: Spec, a: Weights, b: Weights, **kwargs) -> tuple[dict[str, torch.Tensor], Matching]:
    """`b` permuted to match `a` (same function as `b`), and the matching that did it."""
    matching = weight_matching(spec, a, b, **kwargs)
    return apply(spec, matching.perms, b), matching
