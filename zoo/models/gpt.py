"""GPT-2-style decoder after nanoGPT (github.com/karpathy/nanoGPT, model.py): learned positions,
pre-LN blocks, causal attention, output projection tied to the token embedding, GPT-2 init."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.transformer import Block, head_count


class GPT(nn.Module):
    """Token ids `(b, t)` -> next-token logits `(b, t, vocab_size)`; width sets the model dim and head count.

    With `tie_weights` the logits are `x @ wte.weight.T` (no separate `lm_head` tensor, so a state
    dict holds each weight once).
    """

    def __init__(
        self,
        vocab_size: int = 50304,
        context: int = 256,
        depth: int = 6,
        width: int = 384,
        head_dim: int = 64,
        bias: bool = False,
        tie_weights: bool = True,
    ):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, width)
        self.wpe = nn.Embedding(context, width)
        heads = head_count(width, head_dim)
        self.blocks = nn.Sequential(*[Block(width, heads, 4 * width, bias, causal=True) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(width, bias=bias)
        self.lm_head = None if tie_weights else nn.Linear(width, vocab_size, bias=False)
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        # GPT-2: N(0, 0.02) everywhere, residual projections scaled by 1/sqrt(2 * depth).
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                residual = name.endswith(("attn.proj.weight", "mlp.2.weight"))
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * depth) if residual else 0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.ln_f(self.blocks(self.wte(idx) + self.wpe(pos)))
        return F.linear(x, self.wte.weight) if self.lm_head is None else self.lm_head(x)
