"""zoo-plan's figures of an architecture, measured with torch on the meta device (no memory, no
init cost): parameters and checkpoint bytes; the FLOPs of one forward/backward step by torch's own
per-op formulas; the activation bytes autograd saves. zoo.plan looks them up in zoo.plan_costs
first: this module (and torch) is imported only for what that table lacks.

A batch is given as `shapes`: ((shape, dtype name), ...), e.g. (((2, 40), "float32"), ((2,), "int64")).
"""

import functools
import json

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from zoo.models import build
from zoo.train.pinn_loss import pinn_terms


def size(model_key: str) -> tuple[int, int]:
    """(parameters, bytes of the state dict as checkpointed)."""
    model = _meta_model(model_key)
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return sum(p.numel() for p in model.parameters()), weight_bytes


def step(model_key: str, shapes: tuple, task: str, beta: float) -> tuple[float, float, int]:
    """One training step of the task's loss on a meta batch: FLOPs of the forward pass, FLOPs of
    forward + backward, and the activation bytes autograd saves for the backward pass."""
    model, saved = _meta_model(model_key), [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, nn.Parameter) and not isinstance(t._base, nn.Parameter):  # weights are counted apart
            saved[0] += t.numel() * t.element_size()
        return t

    loss_fn = _pinn_loss if task == "pinn" else _cross_entropy
    with FlopCount() as count:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_fn(model, *_meta_batch(shapes), beta=beta)
        forward = count.total
        loss.backward()
    model.zero_grad(set_to_none=True)
    return forward, count.total, saved[0]


def forward_flops(model_key: str, shapes: tuple) -> float:
    """FLOPs of one forward pass (no autograd) on a meta batch."""
    with FlopCount() as count, torch.no_grad():
        _meta_model(model_key)(*_meta_batch(shapes))
    return count.total


def _cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    return F.cross_entropy(model(x).flatten(0, -2), y.flatten())


def _pinn_loss(model: nn.Module, *batch: torch.Tensor, beta: float) -> torch.Tensor:
    return sum(pinn_terms(model, beta, *batch).values())


def _meta_batch(shapes: tuple) -> list[torch.Tensor]:
    return [torch.zeros(shape, dtype=getattr(torch, dtype), device="meta") for shape, dtype in shapes]


@functools.cache
def _meta_model(model_key: str) -> nn.Module:
    with torch.device("meta"):
        return build(json.loads(model_key))


class FlopCount(TorchDispatchMode):
    """FLOPs of the ops run inside it, by torch.utils.flop_counter's formulas (matmuls, convolutions,
    attention). `FlopCounterMode` itself cannot follow `autograd.grad` (its module tracker), which
    the PINN loss needs."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out
