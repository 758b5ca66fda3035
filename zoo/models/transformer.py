"""The pre-LayerNorm transformer block shared by GPT (causal) and ViT (bidirectional)."""

import torch
import torch.nn.functional as F
from torch import nn
from torch._C import _functorch


def head_count(width: int, head_dim: int) -> int:
    """Heads of `head_dim` channels (GPT-2 and ViT-B use 64), at least one: width scales the head count."""
    heads = max(1, width // head_dim)
    if width % heads:
        raise ValueError(f"width={width} does not split into {heads} heads of head_dim={head_dim}")
    return heads


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """`F.scaled_dot_product_attention` of (b, heads, t, head_dim) tensors. Inside `vmap` (a population,
    zoo.train.population.vmapped) the members are folded into SDPA's batch: torch has no batching rule
    for its CPU kernel and would run it member by member (measured on one thread: population steps
    1.0-1.3x faster). A model alone takes the plain call, so its results are untouched; so does a
    compiled step (runtime.compile), which torch.compile could not trace through the unwrapping."""
    if not _functorch.is_batchedtensor(q) or torch.compiler.is_compiling():
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    level = _functorch.maybe_get_level(q)  # the member dim is vmap's: [K, b, ...] underneath
    q, k, v = (_functorch.get_unwrapped(z).movedim(_functorch.maybe_get_bdim(z), 0) for z in (q, k, v))
    y = F.scaled_dot_product_attention(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), is_causal=causal)
    return _functorch._add_batch_dim(y.unflatten(0, q.shape[:2]), 0, level)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, bias: bool, causal: bool):
        super().__init__()
        self.qkv = nn.Linear(width, 3 * width, bias=bias)
        self.proj = nn.Linear(width, width, bias=bias)
        self.heads, self.causal = heads, causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in self.qkv(x).split(c, dim=2))
        y = attention(q, k, v, self.causal)
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
