"""Vision Transformer (Dosovitskiy et al., ICLR 2021) for small images: patch embedding, class token,
learned positions, pre-LN blocks, classifier on the final class token."""

import torch
from torch import nn

from zoo.models.transformer import Block, head_count


class ViT(nn.Module):
    """Images `(b, channels, image_size, image_size)` -> logits; width sets the embedding dim and head count."""

    def __init__(
        self,
        image_size: int = 32,
        patch_size: int = 4,
        channels: int = 3,
        num_classes: int = 10,
        width: int = 384,
        depth: int = 7,
        head_dim: int = 32,
        mlp_ratio: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not a multiple of patch_size={patch_size}")
        tokens = (image_size // patch_size) ** 2 + 1
        self.patch = nn.Conv2d(channels, width, patch_size, patch_size, bias=bias)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, tokens, width) * 0.02)
        heads = head_count(width, head_dim)
        self.blocks = nn.Sequential(*[Block(width, heads, mlp_ratio * width, bias, causal=False) for _ in range(depth)])
        self.ln = nn.LayerNorm(width, bias=bias)
        self.head = nn.Linear(width, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1) + self.pos
        return self.head(self.ln(self.blocks(x))[:, 0])
