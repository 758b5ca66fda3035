"""Top Hessian eigenvalues and trace of the mean loss over fixed batches.

Eigenvalues: Lanczos with full reorthogonalization (converges far faster than power
iteration). Trace: Hutchinson on the complement of the Lanczos basis, whose own trace
is exact and free (sum of the Lanczos alphas); removing the dominant directions cuts
the probe variance, and probes run in batches of `probes` through one vmapped HVP.
"""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

HVP = Callable[[Tensor], Tensor]


def hessian_metrics(model: nn.Module, criterion: Callable, batches: Sequence[tuple[Tensor, Tensor]],
                    *, top_n: int = 1, max_iter: int = 100, tol: float = 1e-3,
                    trace_tol: float = 1e-2, probes: int = 8, seed: int = 0) -> dict:
    """Hessian metrics of the sample-weighted mean of `criterion` (mean-reduced) over `batches`.

    The model runs in eval mode (BatchNorm uses running stats) and its modes are restored.
    Lanczos stops when each of the `top_n` Ritz pairs has residual <= tol * |eigenvalue|
    (a bound on the eigenvalue error); the trace stops when trace_std <= trace_tol * |trace|.
    `max_iter` caps both the Lanczos steps and the trace probes. Holds the autograd graph
    of all batches in memory.

    Returns top_eigenvalues (descending), trace, trace_std (standard error), n_hvp, and
    ritz_values / ritz_weights: the Lanczos quadrature of the spectral density (one SLQ probe).
    """
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        hvp, dim, device = _hvp_fn(model, criterion, batches)
        gen = torch.Generator(device).manual_seed(seed)
        Q, T = _lanczos(hvp, dim, top_n, max_iter, tol, gen)
        evals, evecs = torch.linalg.eigh(T)
        trace, trace_std, n_probes = _deflated_trace(hvp, Q, T.trace().item(), max_iter,
                                                     trace_tol, probes, gen)
    finally:
        for m, mode in zip(model.modules(), modes):
            m.training = mode
    return {
        "top_eigenvalues": evals.flip(0)[:top_n].tolist(),
        "trace": trace,
        "trace_std": trace_std,
        "n_hvp": len(Q) + n_probes,
        "ritz_values": evals.tolist(),
        "ritz_weights": (evecs[0] ** 2).tolist(),
    }


def _hvp_fn(model: nn.Module, criterion: Callable, batches) -> tuple[HVP, int, torch.device]:
    """Batched Hessian-vector product `V (k, P) -> H V (k, P)` by double backward."""
    params = [p for p in model.parameters() if p.requires_grad]
    n = sum(len(y) for _, y in batches)
    loss = sum(criterion(model(x), y) * (len(y) / n) for x, y in batches)
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, create_graph=True)])

    def hvp(V: Tensor) -> Tensor:
        hv = torch.autograd.grad(grad, params, V, retain_graph=True, is_grads_batched=True,
                                 materialize_grads=True)
        return torch.cat([h.reshape(len(V), -1) for h in hv], 1)

    return hvp, grad.numel(), grad.device


def _lanczos(hvp: HVP, dim: int, top_n: int, max_iter: int, tol: float,
             gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Lanczos basis Q (m, P) and tridiagonal T = Q H Q^T (float64, m x m)."""
    q = torch.randn(dim, generator=gen, device=gen.device)
    Q, alphas, betas = [q / q.norm()], [], []
    steps = min(max_iter, dim)
    for k in range(steps):
        w = hvp(Q[-1][None])[0]
        alphas.append(w @ Q[-1])
        Qm = torch.stack(Q)
        for _ in range(2):  # twice is enough to keep Q orthogonal in float32
            w -= (Qm @ w) @ Qm
        beta = w.norm()
        T = _tridiag(alphas, betas)
        theta, S = torch.linalg.eigh(T)
        residuals = beta.double() * S[-1, -top_n:].abs()
        converged = len(Q) >= top_n and (residuals <= tol * theta[-top_n:].abs()).all()
        if converged or beta < 1e-10 or k + 1 == steps:
            break
        betas.append(beta)
        Q.append(w / beta)
    return torch.stack(Q), T


def _tridiag(alphas: list[Tensor], betas: list[Tensor]) -> Tensor:
    a = torch.stack(alphas).double().cpu()
    b = torch.stack(betas).double().cpu() if betas else a.new_zeros(0)
    return torch.diag(a) + torch.diag(b, 1) + torch.diag(b, -1)


def _deflated_trace(hvp: HVP, Q: Tensor, trace_q: float, max_iter: int, trace_tol: float,
                    probes: int, gen: torch.Generator) -> tuple[float, float, int]:
    """tr(H) = tr(Q H Q^T) + E[u^T H u], u = (I - Q^T Q) v for Rademacher v."""
    samples = []
    while len(samples) < max_iter:
        k = min(probes, max_iter - len(samples))
        V = torch.randint(0, 2, (k, Q.shape[1]), generator=gen, device=Q.device).float() * 2 - 1
        U = V - (V @ Q.T) @ Q
        samples += (U * hvp(U)).sum(1).tolist()
        z = torch.tensor(samples, dtype=torch.float64)
        trace, std = trace_q + z.mean().item(), z.std().item() / len(z) ** 0.5
        if len(z) >= 2 * probes and std <= trace_tol * abs(trace):
            break
    return trace, std, len(samples)
