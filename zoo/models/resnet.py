"""CIFAR-style ResNet (3x3 stem, no max-pool), scalable in width."""

import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, c: int, stride: int, bias: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c, 3, stride, 1, bias=bias)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=bias)
        self.bn2 = nn.BatchNorm2d(c)
        self.shortcut = _shortcut(c_in, c, stride, bias)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, c: int, stride: int, bias: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c, 1, bias=bias)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, stride, 1, bias=bias)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, 4 * c, 1, bias=bias)
        self.bn3 = nn.BatchNorm2d(4 * c)
        self.shortcut = _shortcut(c_in, 4 * c, stride, bias)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


def _shortcut(c_in: int, c_out: int, stride: int, bias: bool) -> nn.Module:
    """Identity when shapes match, else a strided 1x1 projection."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=bias), nn.BatchNorm2d(c_out))


CONFIGS = {18: (BasicBlock, [2, 2, 2, 2]), 50: (Bottleneck, [3, 4, 6, 3])}


class ResNet(nn.Module):
    """ResNet-18/50 with stage widths `width * (1, 2, 4, 8)`; `bias` toggles the conv biases.

    Parameter for parameter the reference study's `ResNet18_width`/`ResNet50_width` (torchvision
    blocks, 3x3 stem, no max-pool) when `bias=false`: its `fc` always has a bias, so ours does too.
    Stages are `layers.0` … `layers.3` (handy as CKA layer names); `zoo.pack.reference` maps the
    reference's key names onto these.
    """

    def __init__(
        self, depth: int = 18, width: int = 16, num_classes: int = 10, in_channels: int = 3, bias: bool = False
    ):
        super().__init__()
        if depth not in CONFIGS:
            raise ValueError(f"unknown ResNet depth={depth}; choose one of {sorted(CONFIGS)}")
        block, counts = CONFIGS[depth]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=bias), nn.BatchNorm2d(width), nn.ReLU())
        stages, c_in = [], width
        for i, n in enumerate(counts):
            c, blocks = width * 2**i, []
            for j in range(n):
                blocks.append(block(c_in, c, 2 if i > 0 and j == 0 else 1, bias))
                c_in = c * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
