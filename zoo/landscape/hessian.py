"""Top Hessian eigenvalues and trace of the mean loss over fixed batches.

Eigenvalues: Lanczos with full reorthogonalization, which needs far fewer Hessian-vector
products (HVPs) than power iteration. Trace: the Lanczos basis Q is reused to deflate
Hutchinson's estimator, tr(H) = tr(Q H Q^T) + E[u^T H u] with u = (I - Q^T Q) v: the first
term is exact and free (the sum of the Lanczos alphas), and removing the dominant
directions cuts the variance of the probes several-fold.

Memory: the basis lives in one buffer of min(max_iter, bound) parameter-sized vectors on the
model's device; `max_basis_gb` sets the bound, and past it Lanczos restarts (thick restart) and
the trace is deflated by the vectors kept.
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

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
    max_basis_gb: float | None = None,
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

    `max_basis_gb` (GiB; None: no bound) bounds the Lanczos basis to m = max_basis_gb / (4 bytes x P)
    vectors. Memory is then m + ~7 parameter-sized vectors (probe_batch 1) plus the HVP graph (on CPU with
    m = 6: 13.1; tests/test_hessian.py), where the unbounded basis takes a buffer of max_iter (the
    code before the buffer held the basis three times over: 100 vectors for 32). A full buffer
    restarts Lanczos from its m/2 top-ranked Ritz vectors (thick restart, Wu & Simon 2000): the same
    residual test, so the same `tol` guarantee, at more HVPs when the top eigenvalues need more than m
    steps; Lanczos still runs until its basis holds min(deflate, m) vectors, which then deflate the
    trace: still unbiased, but fewer deflated directions leave a larger variance, so more probes.
    Measured (benchmarks/hessian.py --basis, 1 thread): on an MLP and a ResNet-18 the top eigenvalue
    converged within 8-16 steps, so with m = 8 its error was that of the full basis (1e-7 to 2e-6)
    after 0-2 restarts; the trace took 83-100 probes instead of 22-46: 99-108 HVPs in all instead of
    54-78 (m = 16: 53-90), 1.15-1.93x the time of the full basis (geometric mean 1.58x; 2 cores shared
    with other agents at load 0.9-2.7; 1.67x at load 3.6-6). With m >= the steps taken nothing
    changes, bit for bit.

    Returns top_eigenvalues (descending by that rank), trace, trace_std (its standard error), n_hvp
    (lanczos_steps + trace probes), basis_vectors (the deflation basis), restarts, and ritz_values /
    ritz_weights: the Lanczos quadrature of the spectral density (one SLQ probe; with restarts, of the
    steps before the first).
    """
    with eval_mode(model):
        hvp, like = _hvp_fn(model, task, batches, retain_graph)
        gen = torch.Generator(like.device).manual_seed(seed)
        if which not in ("algebraic", "magnitude"):
            raise ValueError(f"unknown which={which!r}; choose 'algebraic' or 'magnitude'")
        max_vectors = _basis_vectors(like, max_basis_gb, top_n)
        kr = _lanczos(hvp, like, top_n, max(deflate, top_n), max_iter, tol, gen, which == "magnitude", max_vectors)
        trace, trace_std, n_probes = _deflated_trace(
            hvp, kr.Q, kr.T.trace().item(), max_iter, trace_tol, probe_batch, gen
        )
    evals = torch.linalg.eigh(kr.T)[0]  # not eigvalsh, which rounds differently: results stay as they were
    ranked = evals[_ranked(evals, which == "magnitude")]
    nodes, weights = torch.linalg.eigh(kr.quadrature)
    return {
        "top_eigenvalues": ranked.flip(0)[:top_n].tolist(),
        "trace": trace,
        "trace_std": trace_std,
        "n_hvp": kr.steps + n_probes,
        "ritz_values": nodes.tolist(),
        "ritz_weights": (weights[0] ** 2).tolist(),
        "lanczos_steps": kr.steps,
        "basis_vectors": len(kr.Q),
        "restarts": kr.restarts,
    }


def _basis_vectors(like: Tensor, max_basis_gb: float | None, top_n: int) -> int | None:
    """How many parameter-sized vectors `max_basis_gb` GiB holds (None: no bound)."""
    if max_basis_gb is None:
        return None
    n = int(max_basis_gb * 2**30) // (like.numel() * like.element_size())
    if n < top_n + 2:
        raise ValueError(
            f"landscape.hessian.max_basis_gb={max_basis_gb} holds {n} vectors of {like.numel():,} parameters; "
            f"restarted Lanczos needs top_n + 2 = {top_n + 2}: raise it (or null for no bound)"
        )
    return n


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


class Krylov(NamedTuple):
    Q: Tensor  # (j, P) orthonormal basis: the first j rows of the buffer
    T: Tensor  # (j, j) float64: Q H Q^T
    quadrature: Tensor  # tridiagonal T of the steps before the first restart: the SLQ quadrature
    steps: int  # HVPs taken
    restarts: int


def _lanczos(
    hvp: HVP,
    like: Tensor,
    top_n: int,
    min_basis: int,
    max_iter: int,
    tol: float,
    gen: torch.Generator,
    magnitude: bool = False,
    max_vectors: int | None = None,
) -> Krylov:
    """Orthonormal basis Q and T = Q H Q^T, in a buffer of min(max_iter, max_vectors) rows.

    Without a restart T is the Lanczos tridiagonal. When the buffer is full and the top_n Ritz
    pairs have not converged, thick restart (Wu & Simon 2000) keeps the `keep` top-ranked Ritz
    vectors with the residual direction and goes on from there: T is then diagonal over the kept
    vectors plus an arrow coupling them to the next one, and the Ritz residuals are still
    beta * |last row of T's eigenvectors|, so the stopping rule bounds the error as before."""
    steps = min(max_iter, len(like))
    m = min(steps, max_vectors or steps)
    keep = max(top_n + 1, m // 2)
    min_basis = min(min_basis, m)
    Q = like.new_empty(m, len(like))
    q = torch.randn(like.shape, generator=gen, dtype=like.dtype, device=like.device)
    Q[0] = q / q.norm()
    T = torch.zeros(m, m, dtype=torch.float64)
    j, restarts, quadrature = 0, 0, None  # j: row of the newest basis vector
    for step in range(steps):
        w = hvp(Q[j][None])[0]
        T[j, j] = (w @ Q[j]).item()
        Qm = Q[: j + 1]
        for _ in range(2):  # twice keeps Q orthogonal to float32 precision
            w -= (Qm @ w) @ Qm
        beta = w.norm()
        theta, S = torch.linalg.eigh(T[: j + 1, : j + 1])
        ranked = _ranked(theta, magnitude)
        top = ranked[-top_n:]
        residuals = beta.double() * S[-1, top].abs()
        converged = j + 1 >= min_basis and bool((residuals <= tol * theta[top].abs()).all())
        exhausted = beta <= 1e-6 * theta.abs().max()  # Krylov space is invariant: T is exact
        if converged or exhausted or step + 1 == steps:
            t = T[: j + 1, : j + 1].clone()
            return Krylov(Q[: j + 1], t, t if quadrature is None else quadrature, step + 1, restarts)
        if j + 1 < m:
            T[j, j + 1] = T[j + 1, j] = beta.item()
            j += 1
        else:  # the buffer is full: restart from the top-ranked Ritz vectors
            quadrature = T.clone() if quadrature is None else quadrature
            kept = ranked[-keep:]
            _rotate(Q, S[:, kept])
            T.zero_()
            T[:keep, :keep] = torch.diag(theta[kept])
            T[:keep, keep] = T[keep, :keep] = beta.item() * S[-1, kept]
            j, restarts = keep, restarts + 1
        Q[j] = w / beta


def _rotate(Q: Tensor, S: Tensor) -> None:
    """Q[:k] = S^T Q[:len(S)] in place (float64 products), a slice of columns at a time so that
    no more than about two parameter-sized vectors are held beside Q."""
    m, k = S.shape
    St = S.T.to(Q.device)
    width = -(-Q.shape[1] // (2 * m))
    for c in range(0, Q.shape[1], width):
        Q[:k, c : c + width] = (St @ Q[:m, c : c + width].double()).to(Q.dtype)


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
