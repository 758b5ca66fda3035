"""Phase labels of Yang et al. (NeurIPS 2021) from train loss, mode connectivity and CKA.

    poorly trained (train_loss > loss_threshold):  mc < 0 → I,   mc ≥ 0 → II
    well trained:        mc < -mc_epsilon → III,   otherwise IV, split by CKA between
                         seeds: cka < cka_threshold → IV-A, else IV-B

`mc` is Bezier mode connectivity on train loss, ½(L(θ0)+L(θ1)) − L(θ(t*)): negative
means a barrier between the seeds, positive a valley. Thresholds are config (`phases.*`, one file
per task in conf/phases/); `train_loss` may stand for another quality metric (`phases.trained_key`:
a PINN's relative L2 error).
Cells where a seed diverged have no landscape; their phase is `None` (drawn as "diverged").
"""

import math
from collections.abc import Mapping

PHASES = ("I", "II", "III", "IV-A", "IV-B")


def _value(metrics: Mapping[str, float], key: str) -> float:
    if key not in metrics or metrics[key] is None:
        raise ValueError(f"classify needs {key!r} (have {sorted(metrics)}): measure it with zoo-landscape")
    value = float(metrics[key])
    if math.isnan(value):
        raise ValueError(f"{key} is NaN: a diverged model has no phase (mark it before classifying)")
    return value


def classify(metrics: Mapping[str, float], *, loss_threshold: float, mc_epsilon: float, cka_threshold: float) -> str:
    """One of `I, II, III, IV-A, IV-B` from `train_loss`, `mc` and (for IV) `cka`."""
    train_loss, mc = _value(metrics, "train_loss"), _value(metrics, "mc")
    if train_loss > loss_threshold:
        return "I" if mc < 0 else "II"
    if mc < -mc_epsilon:
        return "III"
    return "IV-A" if _value(metrics, "cka") < cka_threshold else "IV-B"
