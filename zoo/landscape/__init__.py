"""Loss-landscape metrics: Hessian spectrum (`hessian`), CKA (`cka`), mode connectivity (`connectivity`)."""

import contextlib
from collections.abc import Iterator

from torch import nn


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
