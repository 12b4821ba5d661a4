"""IMRNet's Dual-Feature Comparison (DFC) pieces as functions: the feature template lookup and
regularisation (paper Eq. 18-19), patch scores carried to points (Eq. 15) and object scores.
"""

from __future__ import annotations

import torch

from .settings import OBJECT_SCORES, POINT_AGGREGATIONS


# Rows of ``features x bank`` distances computed at once (bounds the memory of one cdist).
_CDIST_ELEMENTS = 2**22


def nearest_template(features: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest bank vector and its Euclidean distance for every row.

    Args:
        features: ``(T, F)``.
        bank: ``(M, F)`` template vectors.

    Returns:
        ``(nearest (T, F), distance (T,))``.
    """
    nearest_index = torch.empty(features.shape[0], dtype=torch.long, device=features.device)
    nearest_dist = torch.empty(features.shape[0], dtype=features.dtype, device=features.device)
    step = max(1, _CDIST_ELEMENTS // max(bank.shape[0], 1))
    for lo in range(0, features.shape[0], step):
        dist = torch.cdist(features[lo : lo + step], bank)
        nearest_dist[lo : lo + step], nearest_index[lo : lo + step] = dist.min(dim=1)
    return bank[nearest_index], nearest_dist


def regularize(features: torch.Tensor, bank: torch.Tensor, delta: float | torch.Tensor) -> torch.Tensor:
    """Template regularisation (paper Eq. 19): rows of ``features (..., F)`` farther than ``delta``
    from ``bank (M, F)`` become their nearest bank vector; the shape is kept."""
    flat = features.reshape(-1, features.shape[-1])
    template, distance = nearest_template(flat, bank)
    replace = (distance > delta).unsqueeze(1)
    return torch.where(replace, template, flat).view_as(features)


def patch_to_point_scores(
    patch_scores: torch.Tensor, group_index: torch.Tensor, num_points: int, aggregation: str = "mean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-point score from the patches holding each point (paper Eq. 15).

    Args:
        patch_scores: ``(B, G)`` one score per patch, or ``(B, G, K)`` one per patch point.
        group_index: ``(B, G, K)`` network point of each patch point.
        num_points: number of network points.
        aggregation: ``"mean"`` (paper) or ``"max"`` over the patches holding a point.

    Returns:
        ``(scores (ΣM,), covered (ΣM,) bool)``; uncovered points score 0.
    """
    index = group_index.reshape(-1)
    if patch_scores.dim() == 2:
        patch_scores = patch_scores.unsqueeze(-1).expand(-1, -1, group_index.shape[-1])
    values = patch_scores.reshape(-1).to(torch.float32)
    count = torch.zeros(num_points, device=values.device).index_add_(0, index, torch.ones_like(values))
    if aggregation == "mean":
        total = torch.zeros(num_points, device=values.device).index_add_(0, index, values)
        scores = total / count.clamp_min(1)
    else:
        scores = torch.zeros(num_points, device=values.device).scatter_reduce_(
            0, index, values, reduce="amax", include_self=False
        )
    return scores, count > 0


def object_scores(
    anomaly_map: torch.Tensor, batch: torch.Tensor, num_clouds: int, mode: str = "max", topk: float = 0.01
) -> torch.Tensor:
    """``(B,)`` one score per cloud of ``anomaly_map (ΣN,)``: its ``"max"``, or the ``"topk"`` mean of
    its highest ``topk`` fraction of points (at least one)."""
    if mode == "max":
        return torch.full((num_clouds,), float("-inf"), device=anomaly_map.device).scatter_reduce_(
            0, batch, anomaly_map, reduce="amax", include_self=True
        )
    scores = []
    for b in range(num_clouds):
        cloud = anomaly_map[batch == b]
        k = max(1, round(topk * cloud.numel()))
        scores.append(cloud.topk(k).values.mean())
    return torch.stack(scores)


__all__ = [
    "OBJECT_SCORES",
    "POINT_AGGREGATIONS",
    "nearest_template",
    "object_scores",
    "patch_to_point_scores",
    "regularize",
]
