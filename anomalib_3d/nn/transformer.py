"""Pre-norm transformer blocks of the Point-MAE family (ViT-style, position embedding re-added
before every block).

Sub-module names (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``)
follow the released Point-MAE checkpoints, so their weights load by name
(:func:`anomalib_3d.nn.point_mae.map_point_mae_state_dict`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = ["DropPath", "FeedForward", "SelfAttention", "TransformerBlock", "TransformerStack"]

class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample with probability ``p`` in training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (no qkv bias, as Point-MAE)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            msg = f"embed_dim={dim} must be divisible by num_heads={num_heads}."
            raise ValueError(msg)
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, H, T, D/H)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class FeedForward(nn.Module):
    """Two-layer GELU MLP of a transformer block."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TransformerStack(nn.Module):
    """Blocks that re-inject the position embedding before each block (Point-MAE convention).

    Args:
        dim: token width.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: hidden width of the MLPs relative to ``dim``.
        drop_path: stochastic-depth rate, increased linearly from 0 to ``drop_path`` over depth.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        rates = torch.linspace(0, drop_path, depth).tolist() if depth > 1 else [drop_path] * depth
        self.blocks = nn.ModuleList(TransformerBlock(dim, num_heads, mlp_ratio, rate) for rate in rates)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, num_blocks: int | None = None) -> list[torch.Tensor]:
        """Run the blocks.

        Args:
            x: ``(B, T, C)`` tokens.
            pos: ``(B, T, C)`` position embeddings.
            num_blocks: run only the first ``num_blocks`` blocks (None: all).

        Returns:
            The output of every block run (tensors of shape ``(B, T, C)``).
        """
        outputs = []
        for block in self.blocks[:num_blocks]:
            x = block(x + pos)
            outputs.append(x)
        return outputs
