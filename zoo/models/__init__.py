"""Model registry: `build(model_cfg)` turns a config section into an initialized module."""

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from zoo.models.gpt import GPT
from zoo.models.mlp import MLP
from zoo.models.resnet import ResNet
from zoo.models.vit import ViT

REGISTRY: dict[str, Callable[..., nn.Module]] = {"mlp": MLP, "resnet": ResNet, "vit": ViT, "gpt": GPT}

# Init schemes for weight matrices / conv kernels; "default" keeps PyTorch's own.
INITS: dict[str, Callable[[torch.Tensor], Any]] = {
    "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "xavier_uniform": nn.init.xavier_uniform_,
}

# Biases start at a small non-zero value under a named init, as the reference study's models do
# (`m.bias.data.fill_(0.01)` in its ptmz/models/def_net_width.py).
BIAS_INIT = 0.01


def register(name: str, factory: Callable[..., nn.Module]) -> None:
    REGISTRY[name] = factory


def build(cfg: Mapping) -> nn.Module:
    """Build the model named by `cfg["name"]`; other keys are its arguments, `init` picks the init.

    Uses the global torch RNG: seed it first for reproducible weights.
    """
    args = dict(cfg)
    name, init = args.pop("name"), args.pop("init", "default")
    if name not in REGISTRY:
        raise ValueError(f"unknown model.name={name!r}; registered: {sorted(REGISTRY)}")
    model = REGISTRY[name](**args)
    if init != "default":
        if init not in INITS:
            raise ValueError(f"unknown model.init={init!r}; choose one of {['default', *INITS]}")
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                INITS[init](module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, BIAS_INIT)
    return model


def from_meta(meta: Mapping, weights: Mapping[str, torch.Tensor] | torch.Tensor) -> nn.Module:
    """Rebuild the module of a packed sample (`meta["config"]["model"]`) and load its weights: a state
    dict (view="state_dict") or the vector of view="flat" (integer buffers such as BatchNorm's
    `num_batches_tracked`, which the vector leaves out, keep their initial values)."""
    model = build({**meta["config"]["model"], "init": "default"})
    if isinstance(weights, torch.Tensor):  # the floating-point tensors in module order, as meta["layout"]
        state, offset = model.state_dict(), 0
        for name, tensor in state.items():
            if tensor.is_floating_point():
                state[name] = weights[offset : offset + tensor.numel()].view_as(tensor).to(tensor.dtype)
                offset += tensor.numel()
        weights = state
    model.load_state_dict(weights)
    return model.eval()
