"""Dropping samples by their weights (ModelZooDataset's NaN filter and `weight_threshold`).

Filters on metadata are where-clauses (zoo.load.select): `where={"status": "ok"}` keeps the models
that finished without diverging. These look at the decoded weights, so they run after decoding.
"""

from collections.abc import Mapping

import torch


class WeightFilter:
    """Picklable test on a state dict: keep it only if every floating-point value is finite
    (`finite=True`) and at most `max_abs` in magnitude (`max_abs=None`: no bound)."""

    def __init__(self, finite: bool = False, max_abs: float | None = None):
        self.finite, self.max_abs = finite, max_abs

    def __bool__(self) -> bool:
        return self.finite or self.max_abs is not None

    def __call__(self, weights: Mapping[str, torch.Tensor]) -> bool:
        for t in weights.values():
            if not t.is_floating_point():
                continue
            if self.finite and not torch.isfinite(t).all():
                return False
            if self.max_abs is not None and t.abs().max() > self.max_abs:  # NaN compares False: finite=True drops it
                return False
        return True
