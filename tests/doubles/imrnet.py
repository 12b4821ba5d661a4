"""A tiny IMRNet and the ellipsoid clouds its tests score (tests only, never shipped).

Every IMRNet test file (unit, scoring switches, end to end) builds the same CPU-sized Point-MAE
network; each adds its own cloud / patch counts and scoring switches on top of
:data:`TINY_NETWORK`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from anomalib_3d_plugins.imrnet import IMRNetModel

#: The network sizes every IMRNet test shares: one encoder block, two decoder blocks (both fused),
#: 32-wide tokens, 16-point patches, no stochastic depth. A run takes well under a second on a CPU.
TINY_NETWORK: dict[str, object] = {
    "group_size": 16,
    "gps_k": 8,
    "embed_dim": 32,
    "tokenizer_width": 32,
    "encoder_depth": 1,
    "decoder_depth": 2,
    "num_heads": 2,
    "drop_path_rate": 0.0,
    "feature_layers": (1, 2),
}


def tiny_imrnet(config: Mapping[str, object], **overrides: object) -> IMRNetModel:
    """An :class:`IMRNetModel` of ``config`` with ``overrides`` applied, seeded (0) and in eval mode."""
    torch.manual_seed(0)
    return IMRNetModel(**{**config, **overrides}).eval()


def blob(n: int, seed: int, bump: bool = False) -> torch.Tensor:
    """``(n, 3)`` points on an ellipsoid (optionally with a bump), scaled and shifted arbitrarily."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, 3, generator=g)
    v = v / v.norm(dim=1, keepdim=True) * torch.tensor([1.0, 0.7, 0.5])
    if bump:
        near = (v - torch.tensor([1.0, 0.0, 0.0])).norm(dim=1) < 0.4
        v[near] *= 1.3
    return v * 3.0 + torch.tensor([5.0, -2.0, 1.0])


def batch_of(*clouds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The clouds ``(N_i, 3)`` stacked: ``points (ΣN_i, 3)`` and the long ``batch (ΣN_i,)`` index of each."""
    points = torch.cat(clouds)
    batch = torch.cat([torch.full((c.shape[0],), i, dtype=torch.long) for i, c in enumerate(clouds)])
    return points, batch
