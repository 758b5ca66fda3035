"""The convection PINN's loss terms (Krishnapriyan et al. 2021), without Lightning: training
(zoo.train.pinn), populations, the landscape metrics and zoo-plan all use them."""

import torch
from torch import nn

TERMS = ("residual", "initial", "boundary")


def pinn_terms(
    model: nn.Module,
    beta: float,
    collocation: torch.Tensor,
    initial: torch.Tensor,
    u_initial: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The three mean squared loss terms; differentiable w.r.t. the model's parameters."""
    xt = collocation.detach().requires_grad_(True)
    du = torch.autograd.grad(model(xt).sum(), xt, create_graph=True)[0]
    return {
        "residual": (du[:, 1] + beta * du[:, 0]).pow(2).mean(),
        "initial": (model(initial) - u_initial).pow(2).mean(),
        "boundary": (model(left) - model(right)).pow(2).mean(),
    }
