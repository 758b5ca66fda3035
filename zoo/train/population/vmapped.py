"""K networks of any architecture as one, through `torch.func`: every parameter and buffer stacked
along a new first dim [K, ...] (`stack_module_state`), the member's forward mapped over it (`vmap`
of `functional_call`). Used for the transformers (ViT, GPT), whose LayerNorms and attention heads
mix channels and so have no grouped-convolution form (zoo.train.population.grouped).

Buffers are batched too, so layers that update them in place (BatchNorm's running statistics)
update each member's own slice. Models must be deterministic in their forward (no dropout:
`vmap` would draw one mask for every member, not the member's own).
"""

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class VmappedNet:
    """K networks as one: `module` holds every stacked tensor [K, ...] (named as the member's),
    `forward` maps [K, B, ...] (or a shared batch [B, ...]) to outputs [K, B, ...]."""

    def __init__(self, members: list[nn.Module]):
        self.k = len(members)
        params, buffers = stack_module_state(members)
        self.module = copy.deepcopy(members[0])  # holds the stacked tensors, under the members' names
        for name, tensor in [*params.items(), *buffers.items()]:
            owner, _, attr = name.rpartition(".")
            holder = self.module.get_submodule(owner)
            if attr in holder._parameters:
                holder._parameters[attr] = nn.Parameter(tensor.detach().clone())
            else:
                holder._buffers[attr] = tensor.clone()
        self.base = copy.deepcopy(members[0]).to("meta")  # the forward only: no memory of its own

    def _apply(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x,), tie_weights=True)

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        params, buffers = dict(self.module.named_parameters()), dict(self.module.named_buffers())
        self.base.train(self.module.training)
        return vmap(self._apply, in_dims=(0, 0, None if shared else 0))(params, buffers, x)

    def split(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor
