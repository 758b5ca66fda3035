"""Short training runs the pruning and transfer apps make: a zoo model's own recipe (optimizer, lr,
schedule: `zoo.train.optim`) over a small budget of steps, with pruning masks kept and, for a linear
probe, only some parameters trained."""

import warnings
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from zoo.data import TensorData
from zoo.models import build
from zoo.train.optim import build_optimizer

Masks = dict[str, torch.Tensor]  # parameter name -> bool tensor, True where the weight is kept
FRESH_SEED = 1_000_003  # offset of a fresh init's seed from the model's own


def fresh_init(cfg: DictConfig) -> nn.Module:
    """The model's architecture, freshly drawn from its own init scheme with a seed of its own (the
    random re-initialisation of a lottery ticket; the from-scratch baseline of transfer)."""
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed + FRESH_SEED)
        return build(dict(cfg.model))


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask)


def recipe(params, optim: Mapping, steps: int, offset: int = 0):
    """`(optimizer, scheduler)` of the `optim` section for `steps` steps, its schedule laid over
    `offset + steps` steps and moved to step `offset` (where a rewound model left its training)."""
    opt, schedule = build_optimizer(params, optim, offset + steps)
    with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": intended here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(offset):
            schedule.step()
    return opt, schedule


def train_steps(
    model: nn.Module,
    data: TensorData,
    optim: Mapping,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    trainable: Sequence[nn.Parameter] | None = None,
    masks: Masks | None = None,
    schedule_offset: int = 0,
) -> nn.Module:
    """`steps` optimizer steps of cross-entropy on shuffled training batches of `data`, in place.

    `optim` is a zoo model's optim section: its lr schedule spans `schedule_offset + steps` steps and
    starts at `schedule_offset`, so a model rewound to step k of its training continues its schedule.
    `masks`: pruned weights are zeroed after every step (weight decay and momentum would revive them).
    `trainable`: only these parameters move (a linear probe); the rest of the model stays in eval
    mode, so its features — BatchNorm statistics included — stay exactly as they were.
    """
    opt, schedule = recipe(model.parameters() if trainable is None else trainable, optim, steps, schedule_offset)
    model.train(trainable is None)
    if masks:
        apply_masks(model, masks)
    step, epoch = 0, 0
    while step < steps:
        for x, y in data.batches("train", batch_size, shuffle=True, seed=seed, epoch=lambda: epoch):  # noqa: B023 - read within this epoch
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            if masks:
                apply_masks(model, masks)
            step += 1
            if step == steps:
                break
        epoch += 1
    return model.eval()
