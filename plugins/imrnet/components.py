"""Building blocks of IMRNet's Point-patch Mask Reconstruction network (PMR).

The backbone follows Point-MAE (the paper's Sec. 5.3: "directly adopted from Point-MAE"): a
mini-PointNet turns every point patch into one token, an MLP embeds the patch centres, and a
pre-norm transformer encoder / decoder pair works on the tokens. Sub-module names mirror the
roles in Point-MAE's released checkpoints so that :func:`map_point_mae_state_dict` can carry
their weights over by name and shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


class PatchTokenizer(nn.Module):
    """Mini-PointNet patch embedding (PMR "point-patch tokens", Eq. 10).

    Shared per-point MLP → max-pool (patch descriptor) → the descriptor is concatenated back to
    every point → second shared MLP → max-pool. The shared MLPs are ``nn.Linear`` on flattened
    points (several times faster than 1×1 convolutions on CPU, in backward especially); Point-MAE's
    1×1-convolution weights load into them after dropping the kernel axis.

    Args:
        embed_dim: token width ``C``.
        width: width ``W`` of the per-point features (Point-MAE: 256): the first MLP is
            3 → W/2 → W, the second 2W → 2W → C.
    """

    def __init__(self, embed_dim: int, width: int = 256) -> None:
        super().__init__()
        if width % 2:
            msg = f"tokenizer width must be even, got {width}."
            raise ValueError(msg)
        self.embed_dim = embed_dim
        self.width = width
        self.first_conv = nn.Sequential(
            nn.Linear(3, width // 2),
            nn.BatchNorm1d(width // 2),
            nn.ReLU(inplace=True),
            nn.Linear(width // 2, width),
        )
        self.second_conv = nn.Sequential(
            nn.Linear(2 * width, 2 * width),
            nn.BatchNorm1d(2 * width),
            nn.ReLU(inplace=True),
            nn.Linear(2 * width, embed_dim),
        )

    def forward(self, neighborhoods: torch.Tensor) -> torch.Tensor:
        """Tokens of patches.

        Args:
            neighborhoods: ``(B, G, K, 3)`` patch points relative to their centre.

        Returns:
            ``(B, G, C)`` tokens.
        """
        batch, groups, size, _ = neighborhoods.shape
        patches = batch * groups
        width = self.width
        x = self.first_conv(neighborhoods.reshape(patches * size, 3)).view(patches, size, width)
        pooled = x.max(dim=1, keepdim=True).values
        x = torch.cat([pooled.expand(-1, size, -1), x], dim=2)  # (BG, K, 2W)
        x = self.second_conv(x.view(patches * size, 2 * width)).view(patches, size, self.embed_dim)
        return x.max(dim=1).values.view(batch, groups, self.embed_dim)


def position_embedding(embed_dim: int) -> nn.Sequential:
    """MLP mapping a patch centre ``(…, 3)`` to ``(…, C)`` (the paper's "simple PE")."""
    return nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, embed_dim))


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

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> list[torch.Tensor]:
        """Run the blocks.

        Args:
            x: ``(B, T, C)`` tokens.
            pos: ``(B, T, C)`` position embeddings.

        Returns:
            The output of every block (``depth`` tensors of shape ``(B, T, C)``).
        """
        outputs = []
        for block in self.blocks:
            x = block(x + pos)
            outputs.append(x)
        return outputs


# --------------------------------------------------------------------------------------------
# Point-MAE checkpoint mapping
# --------------------------------------------------------------------------------------------
#: Point-MAE ``base_model`` key prefix → IMRNet ``IMRNetModel`` key prefix.
POINT_MAE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("MAE_encoder.encoder.", "tokenizer."),
    ("MAE_encoder.pos_embed.", "encoder_pos_embed."),
    ("MAE_encoder.blocks.blocks.", "encoder.blocks."),
    ("MAE_encoder.norm.", "encoder_norm."),
    ("MAE_decoder.blocks.", "decoder.blocks."),
    ("MAE_decoder.norm.", "decoder_norm."),
    ("decoder_pos_embed.", "decoder_pos_embed."),
    ("increase_dim.0.", "reconstruction_head."),
    ("mask_token", "mask_token"),
)


def map_point_mae_state_dict(
    source: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Translate a Point-MAE ``base_model`` state dict to IMRNet names, keeping matching shapes.

    Args:
        source: Point-MAE keys (``MAE_encoder.encoder.first_conv.0.weight``, ...); a leading
            ``module.`` (DataParallel) is ignored.
        target: the IMRNet model's ``state_dict()`` (names and shapes to match).

    Returns:
        ``(mapped, loaded, skipped)``: the IMRNet-named tensors to load, the IMRNet keys that
        received weights, and ``"<point-mae key>: <reason>"`` for every source key not used
        (no counterpart, or a shape that differs, e.g. ``increase_dim`` when the patch size is
        not Point-MAE's 32).
    """
    mapped: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for raw_key, value in source.items():
        key = raw_key.removeprefix("module.")
        new_key = None
        for old, new in POINT_MAE_PREFIXES:
            if key.startswith(old):
                new_key = new + key[len(old) :]
                break
        if new_key is None or new_key not in target:
            skipped.append(f"{raw_key}: no IMRNet counterpart")
            continue
        if not isinstance(value, torch.Tensor):
            skipped.append(f"{raw_key}: not a tensor")
            continue
        if value.dim() == 3 and value.shape[-1] == 1 and target[new_key].dim() == 2:
            value = value[..., 0]  # Point-MAE 1x1 convolution → our Linear
        if tuple(value.shape) != tuple(target[new_key].shape):
            skipped.append(f"{raw_key}: shape {tuple(value.shape)} != {tuple(target[new_key].shape)}")
            continue
        mapped[new_key] = value
    return mapped, sorted(mapped), skipped


__all__ = [
    "POINT_MAE_PREFIXES",
    "DropPath",
    "FeedForward",
    "PatchTokenizer",
    "SelfAttention",
    "TransformerBlock",
    "TransformerStack",
    "map_point_mae_state_dict",
    "position_embedding",
]
