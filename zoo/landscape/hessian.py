"""Top Hessian eigenvalues and trace of the mean loss over fixed batches.

Eigenvalues: Lanczos with full reorthogonalization, which needs far fewer Hessian-vector
products (HVPs) than power iteration. Trace: the Lanczos basis Q is reused to deflate
Hutchinson's estimator, tr(H) = tr(Q H Q^T) + E[u^T H u] with u = (I - Q^T Q) v: the first
term is exact and free (the sum of the Lanczos alphas), and removing the dominant
directions cuts the variance of the probes several-fold.
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from zoo.landscape import eval_mode

HVP = Callable[[Tensor], Tensor]
MIN_PROBES = 10  # before trusting the sample standard deviation in the stopping rule


def hessian_metrics(
    model: nn.Module,
    task: Any,
    batches: Sequence[tuple[Tensor, ...]],
    *,
    top_n: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    trace_tol: float = 1e-2,
    deflate: int = 32,
    probe_batch: int = 1,
    which: str = "algebraic",
    retain_graph: bool = True,
    seed: int = 0,
) -> dict:
    """Hessian metrics of the sample-weighted mean over `batches` of the task's loss
    (`task.loss(net, batch)`, mean-reduced, weighted by `task.size(batch)`; zoo.train.tasks).

    The model runs in eval mode (BatchNorm uses its running stats); modes are restored after.
    Lanczos runs at least `deflate` steps (its basis deflates the trace probes) and stops once
    each of the top_n Ritz pairs has residual <= tol * |eigenvalue|, which bounds the
    eigenvalue error by the same amount. Trace probes stop once trace_std <= trace_tol * |trace|.
    `max_iter` caps the Lanczos steps and the probes separately. `probe_batch` > 1 sends that
    many probes through one vmapped HVP (is_grads_batched): on 1-2 CPU threads that measured
    slower than one at a time; it may pay on a GPU.

    `retain_graph`: build the gradient's graph over all batches once and keep it for every HVP (each
    HVP is one backward pass; memory grows with the batches). False rebuilds it one batch at a time
    inside every HVP and sums the batches' HVPs: the same Hessian (exact, not a subsample), memory of
    one batch, a forward and backward more per batch and HVP. For language models, whose logits
    (tokens x vocabulary) under double backward outgrow memory over a whole evaluation set.

    `which`: "algebraic" ranks eigenvalues by value (ours), "magnitude" by |value| (the reference
    study's PyHessian power iteration finds the largest-magnitude one); values keep their sign.

    Returns top_eigenvalues (descending by that rank), trace, trace_std (its standard error), n_hvp, and
    ritz_values / ritz_weights: the Lanczos quadrature of the spectral density (one SLQ probe).
    """
    with eval_mode(model):
        hvp, like = _hvp_fn(model, task, batches, retain_graph)
        gen = torch.Generator(like.device).manual_seed(seed)
        if which not in ("algebraic", "magnitude"):
            raise ValueError(f"unknown which={which!r}; choose 'algebraic' or 'magnitude'")
        Q, T = _lanczos(hvp, like, top_n, max(deflate, top_n), max_iter, tol, gen, which == "magnitude")
        trace, trace_std, n_probes = _deflated_trace(hvp, Q, T.trace().item(), max_iter, trace_tol, probe_batch, gen)
    evals, evecs = torch.linalg.eigh(T)
    ranked = evals[_ranked(evals, which == "magnitude")]
    return {
        "top_eigenvalues": ranked.flip(0)[:top_n].tolist(),
        "trace": trace,
        "trace_std": trace_std,
        "n_hvp": len(Q) + n_probes,
        "ritz_values": evals.tolist(),
        "ritz_weights": (evecs[0] ** 2).tolist(),
    }


def _hvp_fn(model: nn.Module, task: Any, batches, retain_graph: bool) -> tuple[HVP, Tensor]:
    """HVP `V (k, P) -> H V (k, P)` of the size-weighted mean loss by double backward, and a flat
    tensor giving the size, dtype and device of the parameter vectors. The weighted sum of the
    batches' HVPs is the HVP of the weighted sum, so a batch's graph can be dropped after its share."""
    params = [p for p in model.parameters() if p.requires_grad]
    n = sum(task.size(b) for b in batches)

    def grad(group) -> Tensor:
        loss = sum(task.loss(model, b) * (task.size(b) / n) for b in group)
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, create_graph=True)])

    def hvp_of(g: Tensor, V: Tensor, retain: bool) -> Tensor:
        batched = len(V) > 1
        hv = torch.autograd.grad(
            g, params, V if batched else V[0], retain_graph=retain, is_grads_batched=batched, materialize_grads=True
        )
        return torch.cat([h.reshape(len(V), -1) for h in hv], 1)

    if retain_graph:
        g = grad(batches)
        return lambda V: hvp_of(g, V, True), g.detach()
    like = torch.cat([p.detach().reshape(-1) for p in params])
    return lambda V: sum(hvp_of(grad([b]), V, False) for b in batches), like


def _ranked(theta: Tensor, magnitude: bool) -> Tensor:
    """Indices of `theta` (ascending) in ascending order of rank: by value, or by |value|."""
    return theta.abs().argsort() if magnitude else torch.arange(len(theta))


def _lanczos(
    hvp: HVP,
    like: Tensor,
    top_n: int,
    min_iter: int,
    max_iter: int,
    tol: float,
    gen: torch.Generator,
    magnitude: bool = False,
) -> tuple[Tensor, Tensor]:
    """Orthonormal Krylov basis Q (m, P) and tridiagonal T = Q H Q^T (float64, m x m)."""
    q = torch.randn(like.shape, generator=gen, dtype=like.dtype, device=like.device)
    Q, alphas, betas = [q / q.norm()], [], []
    steps = min(max_iter, len(like))
    for k in range(steps):
        w = hvp(Q[-1][None])[0]
        alphas.append(w @ Q[-1])
        Qm = torch.stack(Q)
        for _ in range(2):  # twice keeps Q orthogonal to float32 precision
            w -= (Qm @ w) @ Qm
        beta = w.norm()
        T = _tridiagonal(alphas, betas)
        theta, S = torch.linalg.eigh(T)
        top = _ranked(theta, magnitude)[-top_n:]
        residuals = beta.double() * S[-1, top].abs()
        converged = k + 1 >= min_iter and bool((residuals <= tol * theta[top].abs()).all())
        exhausted = beta <= 1e-6 * theta.abs().max()  # Krylov space is invariant: T is exact
        if converged or exhausted or k + 1 == steps:
            return torch.stack(Q), T
        betas.append(beta)
        Q.append(w / beta)


def _tridiagonal(alphas: list[Tensor], betas: list[Tensor]) -> Tensor:
    a = torch.stack(alphas).double().cpu()
    b = torch.stack(betas).double().cpu() if betas else a.new_zeros(0)
    return torch.diag(a) + torch.diag(b, 1) + torch.diag(b, -1)


def _deflated_trace(
    hvp: HVP, Q: Tensor, trace_q: float, max_iter: int, trace_tol: float, probe_batch: int, gen: torch.Generator
) -> tuple[float, float, int]:
    """trace_q + mean of u^T H u over Rademacher probes projected off Q, with its standard error."""
    z = torch.zeros(0, dtype=torch.float64)
    while len(z) < max_iter:
        k = min(probe_batch, max_iter - len(z))
        V = torch.randint(0, 2, (k, Q.shape[1]), generator=gen, device=Q.device).to(Q.dtype) * 2 - 1
        U = V - (V @ Q.T) @ Q
        z = torch.cat([z, (U * hvp(U)).sum(1).double().cpu()])
        if len(z) >= MIN_PROBES and _stderr(z) <= trace_tol * abs(trace_q + z.mean().item()):
            break
    return trace_q + z.mean().item(), _stderr(z), len(z)


def _stderr(z: Tensor) -> float:
    return z.std().item() / len(z) ** 0.5
