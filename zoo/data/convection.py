"""1D convection for PINNs: u_t + beta u_x = 0 on x in [0, 2pi], t in [0, 1], u(x, 0) = sin(x),
periodic in x; the exact solution is u = sin(x - beta t).

Points as Krishnapriyan et al., "Characterizing possible failure modes in physics-informed neural
networks", NeurIPS 2021 (github.com/a1k12/characterizing-pinns-failure-modes, pbc_examples/main_pbc.py):
a grid of `grid_x` x in [0, 2pi) (endpoint excluded) by `grid_t` t in [0, 1] is the test set; the
initial condition is its t = 0 row, the boundary its x = 0 column against x = 2pi; `n_collocation`
residual points are drawn from the grid without its t = 0 row and x = 0 column (fixed draw, seed 0).
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from zoo.sizes import PINN_SMOKE as SMOKE


@dataclass
class ConvectionData:
    beta: float
    collocation: torch.Tensor  # (n, 2) interior (x, t) points where the residual is enforced
    initial: torch.Tensor      # (grid_x, 2) points at t = 0
    left: torch.Tensor         # (grid_t, 2) points at x = 0 ...
    right: torch.Tensor        # ... and at x = 2pi, where u must agree (periodicity)
    grid: torch.Tensor         # (grid_x * grid_t, 2) test points

    def exact(self, xt: torch.Tensor) -> torch.Tensor:
        return exact_solution(xt, self.beta)

    def train_batch(self) -> tuple[torch.Tensor, ...]:
        """`(collocation, initial, u at initial, left, right)`: everything one full-batch step uses."""
        return self.collocation, self.initial, self.exact(self.initial), self.left, self.right


def exact_solution(xt: torch.Tensor, beta: float) -> torch.Tensor:
    """u(x, t) = sin(x - beta t) at the (n, 2) points `xt`, shape (n, 1)."""
    return torch.sin(xt[:, :1] - beta * xt[:, 1:])


def load_convection(cfg: Mapping) -> ConvectionData:
    """Points for `cfg["beta"]`; sizes from `n_collocation`, `grid_x`, `grid_t` (small with `smoke`)."""
    sizes = SMOKE if cfg.get("smoke") else {k: cfg[k] for k in SMOKE}
    x = torch.linspace(0, 2 * math.pi, sizes["grid_x"] + 1)[:-1]
    t = torch.linspace(0, 1, sizes["grid_t"])
    grid = _points(x, t)
    interior = _points(x[1:], t[1:])
    pick = torch.randperm(len(interior), generator=torch.Generator().manual_seed(0))[:sizes["n_collocation"]]
    return ConvectionData(
        beta=float(cfg["beta"]), collocation=interior[pick], initial=_points(x, t[:1]),
        left=_points(x[:1], t), right=_points(torch.tensor([2 * math.pi]), t), grid=grid)


def _points(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """All (x, t) pairs, t-major like the reference's meshgrid."""
    tt, xx = torch.meshgrid(t, x, indexing="ij")
    return torch.stack([xx.flatten(), tt.flatten()], 1)
