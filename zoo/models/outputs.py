"""What a model computes inside: the output of a named submodule, in eval mode (CKA features)."""

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Every submodule in eval mode inside the block; each gets its own mode back after."""
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in zip(model.modules(), modes):
            m.training = mode


@torch.no_grad()
def features(model: nn.Module, x: Tensor, layer: str | None = None) -> Tensor:
    """The output of submodule `layer` (e.g. "layers.1"), or the model's output, in eval mode."""
    captured = []  # the root module ("") gives the model's output
    hook = model.get_submodule(layer or "").register_forward_hook(lambda m, i, out: captured.append(out))
    try:
        with eval_mode(model):
            model(x)
    finally:
        hook.remove()
    return captured[0]
