"""zoo.landscape.hessian against PyHessian at matched accuracy, on one CPU thread.

Two problems, each with both libraries on the same model and the same single batch (so both
reuse one gradient graph and the comparison is purely algorithmic):
  - MLP 40-64-64-10 trained briefly on 1,024 mnist1d samples;
  - ResNet-18, width 4, fitted to 128 random 3x32x32 inputs with random labels (memorized).

Ours runs with its defaults (tol=1e-3, trace_tol=1e-2). Matched accuracy for PyHessian:
  - top eigenvalue: its tol is tightened 10x at a time until its error against a converged
    reference (Lanczos to 1e-9 residual, another seed) is within the 1e-3 that ours
    guarantees (ours is usually far more accurate than that; its error is printed);
  - trace: Hutchinson probes are added until its standard error is at most ours.
Each PyHessian time includes building its gradient graph, as ours does. The speedup line
is the geometric mean over the two problems of (PyHessian eigenvalue + trace time) / (our time).

Run: python benchmarks/hessian.py
"""

import math
import sys
import time

import numpy as np
import torch
from mnist1d.data import get_dataset_args, make_dataset
from pyhessian import hessian
from torch import nn

from zoo.landscape.hessian import hessian_metrics
from zoo.models.resnet import ResNet

criterion = nn.CrossEntropyLoss()
pyhessian_module = sys.modules["pyhessian.hessian"]


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        i = torch.randint(0, len(x), (64,))
        loss = criterion(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def mlp_problem():
    d = make_dataset(get_dataset_args())
    x, y = torch.tensor(d["x"][:1024], dtype=torch.float32), torch.tensor(d["y"][:1024])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    return fit(model, x, y, steps=300, lr=1e-2), (x, y)


def resnet_problem():
    torch.manual_seed(0)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    return fit(ResNet(18, width=4), x, y, steps=60, lr=3e-3), (x, y)


def pyhessian_eigenvalue(model, data, reference: float, target: float):
    """Tighten PyHessian's tol until its error is <= target; the time and HVPs of that run."""
    calls = 0
    hvp = pyhessian_module.hessian_vector_product

    def counted(*args):
        nonlocal calls
        calls += 1
        return hvp(*args)

    pyhessian_module.hessian_vector_product = counted
    try:
        for tol in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7):
            torch.manual_seed(0)
            calls, start = 0, time.perf_counter()
            value = hessian(model, criterion, data=data, cuda=False).eigenvalues(maxIter=10_000, tol=tol)[0][0]
            seconds = time.perf_counter() - start
            if abs(value - reference) <= target * abs(reference):
                break
    finally:
        pyhessian_module.hessian_vector_product = hvp
        model.zero_grad(set_to_none=True)  # PyHessian leaves graph-carrying .grad behind
    return value, tol, calls, seconds


def pyhessian_trace(model, data, target_std: float, chunk: int = 16):
    """Hutchinson probes in chunks until the standard error is <= target_std."""
    torch.manual_seed(0)
    start = time.perf_counter()
    h = hessian(model, criterion, data=data, cuda=False)
    samples = []
    while len(samples) < 10 or np.std(samples, ddof=1) / math.sqrt(len(samples)) > target_std:
        samples += h.trace(maxIter=chunk, tol=0.0)  # tol=0: always all `chunk` probes
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return np.mean(samples), np.std(samples, ddof=1) / math.sqrt(len(samples)), len(samples), seconds


def compare(name: str, model: nn.Module, data) -> float:
    batches = [data]
    converged = hessian_metrics(model, criterion, batches, tol=1e-9, trace_tol=1.0, seed=1)
    reference = converged["top_eigenvalues"][0]
    start = time.perf_counter()
    ours = hessian_metrics(model, criterion, batches)
    ours_s = time.perf_counter() - start
    our_err = abs(ours["top_eigenvalues"][0] - reference) / reference
    eig, tol, eig_hvp, eig_s = pyhessian_eigenvalue(model, data, reference, target=1e-3)
    trace, trace_std, probes, trace_s = pyhessian_trace(model, data, ours["trace_std"])
    ph_s = eig_s + trace_s
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\n== {name}: {n_params:,} parameters, {len(data[1])} samples, train loss "
          f"{criterion(model(data[0]), data[1]).item():.3f}")
    print(f"{'':22}{'zoo':>22}{'PyHessian':>22}")
    print(f"{'top eigenvalue':22}{ours['top_eigenvalues'][0]:>22.6f}{eig:>22.6f}   (reference {reference:.6f})")
    print(f"{'  relative error':22}{our_err:>22.1e}{abs(eig - reference) / reference:>22.1e}"
          f"   (PyHessian tol {tol:g})")
    print(f"{'trace':22}{ours['trace']:>22.3f}{trace:>22.3f}")
    print(f"{'  standard error':22}{ours['trace_std']:>22.3f}{trace_std:>22.3f}")
    print(f"{'HVPs (eig + trace)':22}{ours['n_hvp']:>22}{f'{eig_hvp} + {probes}':>22}")
    print(f"{'seconds':22}{ours_s:>22.2f}{f'{eig_s:.2f} + {trace_s:.2f}':>22}")
    print(f"time ratio: {ph_s / ours_s:.2f}x")
    return ph_s / ours_s


if __name__ == "__main__":
    torch.set_num_threads(1)  # fair and reproducible: both libraries on one core
    ratios = [compare("MLP on mnist1d", *mlp_problem()), compare("ResNet-18 w4 on random images", *resnet_problem())]
    print(f"\ngeometric mean of the time ratios over {len(ratios)} problems")
    print(f"speedup: {math.exp(np.mean(np.log(ratios))):.1f}x")
