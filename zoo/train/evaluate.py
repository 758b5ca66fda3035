"""Loss and accuracy of a classifier over batches, in eval mode."""

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Mean cross-entropy and accuracy over all samples; restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device  # batches come from host memory
    loss = correct = count = 0.0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits, y = model(x).flatten(0, -2), y.flatten()  # per-position logits of sequence models
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += len(y)
    model.train(was_training)
    return {"loss": loss / count, "acc": correct / count}
