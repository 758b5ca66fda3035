"""The pre-LayerNorm transformer block shared by GPT (causal) and ViT (bidirectional)."""

import torch
import torch.nn.functional as F
from torch import nn


def head_count(width: int, head_dim: int) -> int:
    """Heads of `head_dim` channels (GPT-2 and ViT-B use 64), at least one: width scales the head count."""
    heads = max(1, width // head_dim)
    if width % heads:
        raise ValueError(f"width={width} does not split into {heads} heads of head_dim={head_dim}")
    return heads


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, bias: bool, causal: bool):
        super().__init__()
        self.qkv = nn.Linear(width, 3 * width, bias=bias)
        self.proj = nn.Linear(width, width, bias=bias)
        self.heads, self.causal = heads, causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in self.qkv(x).split(c, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    """`x + attn(ln(x))`, then `x + mlp(ln(x))` with a GELU MLP of `mlp_width` hidden units."""

    def __init__(self, width: int, heads: int, mlp_width: int, bias: bool, causal: bool):
        super().__init__()
        self.ln1 = nn.LayerNorm(width, bias=bias)
        self.attn = SelfAttention(width, heads, bias, causal)
        self.ln2 = nn.LayerNorm(width, bias=bias)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_width, bias=bias), nn.GELU(), nn.Linear(mlp_width, width, bias=bias)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))
