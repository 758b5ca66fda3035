"""K convolutional networks as one, through grouped convolutions: channels K·C, `groups=K`.

`grouped(members)` copies the first member's module tree and replaces every layer by its grouped
version holding all members' tensors: Conv2d(C_in, C_out) → Conv2d(K·C_in, K·C_out, groups=K),
BatchNorm2d(C) → BatchNorm2d(K·C) (BatchNorm is per channel, so per member: its own batch
statistics and running statistics), Linear(in, out) → `GroupedLinear`. Members sit side by side
along the channels, member k at channels [k·C, (k+1)·C), so every tensor's first dim is K-major
(`split`). The tree's own forward then runs all members: the input is the members' batches
side by side along the channels, [B, K·C_in, H, W], and member k reads only its own channels.
Activations, pooling and residual additions act per channel and need nothing.

Measured on one CPU thread (K = 6, ResNet-18, under load from other agents; `python -m
benchmarks.population --zoo cifar10_resnet18` for the end-to-end figure): grouped convolutions ran
a training step 2.8x faster than one by one at width 2 / batch 8, 1.6x at width 8 / batch 8,
1.2x at width 16 / batch 32; `torch.func.vmap` over stacked members 1.8x, 1.15x and 1.0x.
So ResNets use this module; architectures with layers that mix channels (LayerNorm, attention
heads) use zoo.train.population.vmapped. The grouped network runs in channels-last memory format:
oneDNN's grouped convolutions ran 1.2-1.7x faster so than in NCHW at width 16 (batch 64, first
stages) on one CPU thread, and GPUs prefer it too.
"""

import copy

import torch
from torch import nn


class GroupedLinear(nn.Module):
    """K nn.Linear(in, out) on [B, K·in] → [B, K·out]; weight [K·out, in], bias [K·out] (K-major)."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.k = len(layers)
        self.weight = nn.Parameter(torch.cat([lin.weight.detach() for lin in layers]))
        biases = [lin.bias for lin in layers]
        self.bias = nn.Parameter(torch.cat(biases).detach()) if biases[0] is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.unflatten(0, (self.k, -1))  # [K, out, in]
        out = torch.bmm(x.unflatten(1, (self.k, -1)).transpose(0, 1), w.mT).transpose(0, 1).flatten(1)
        return out + self.bias if self.bias is not None else out


def _conv(layers: list[nn.Conv2d]) -> nn.Conv2d:
    first, k = layers[0], len(layers)
    conv = nn.Conv2d(
        k * first.in_channels,
        k * first.out_channels,
        first.kernel_size,
        first.stride,
        first.padding,
        first.dilation,
        k * first.groups,
        first.bias is not None,
        first.padding_mode,
        device="meta",
    )  # no init: the members' weights go in
    conv.weight = nn.Parameter(torch.cat([c.weight.detach() for c in layers]))
    if conv.bias is not None:
        conv.bias = nn.Parameter(torch.cat([c.bias.detach() for c in layers]))
    return conv


def _batch_norm(layers: list[nn.BatchNorm2d]) -> nn.BatchNorm2d:
    first = layers[0]
    bn = nn.BatchNorm2d(
        len(layers) * first.num_features, first.eps, first.momentum, first.affine, first.track_running_stats
    )
    with torch.no_grad():
        for name, tensor in [*bn.named_parameters(), *bn.named_buffers()]:
            if name == "num_batches_tracked":  # one count: members take the same steps
                tensor.copy_(first.num_batches_tracked)
            else:
                tensor.copy_(torch.cat([getattr(layer, name) for layer in layers]))
    return bn


GROUPED = {nn.Conv2d: _conv, nn.BatchNorm2d: _batch_norm, nn.Linear: GroupedLinear}
STATELESS = (nn.ReLU, nn.Identity, nn.Sequential)  # containers and per-channel ops


def grouped(members: list[nn.Module]) -> nn.Module:
    """The members' common module tree with every layer grouped (see the module doc)."""
    out = copy.deepcopy(members[0])
    for name, module in list(out.named_modules()):
        kind = type(module)
        if kind in GROUPED:
            parent, _, attr = name.rpartition(".")
            layers = [m.get_submodule(name) for m in members]
            setattr(out.get_submodule(parent), attr, GROUPED[kind](layers))
        elif not isinstance(module, STATELESS) and next(module.parameters(recurse=False), None) is not None:
            raise ValueError(f"grouped: layer {name} ({kind.__name__}) has no grouped version")
    return out


def split(tensor: torch.Tensor, k: int) -> torch.Tensor:
    """[K, *member shape]: a grouped tensor's member slices (a shared scalar is repeated)."""
    return tensor.expand(k) if tensor.dim() == 0 else tensor.unflatten(0, (k, -1))


class GroupedNet:
    """K networks as one grouped network: `module` holds every stacked tensor (named as the
    member's), `forward` maps [K, B, C, H, W] (or shared [B, C, H, W]) to logits [K, B, classes]."""

    def __init__(self, members: list[nn.Module]):
        self.k = len(members)
        self.module = grouped(members).to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        if shared:  # every member on the same batch (evaluation)
            x = x.repeat(1, self.k, *([1] * (x.dim() - 2)))
        else:
            x = x.transpose(0, 1).flatten(1, 2)  # [B, K·C, H, W]
        return self.module(x.contiguous(memory_format=torch.channels_last)).unflatten(1, (self.k, -1)).transpose(0, 1)

    def split(self, tensor: torch.Tensor) -> torch.Tensor:
        return split(tensor, self.k)
