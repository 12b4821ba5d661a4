"""PointAD's multimodal branch: the RGB image of an organized scan, scored and fused with the points.

The image is scored by the same prompts as the renders; its abnormal map is read at every point's
pixel of the organized grid, so both modalities live on the points (paper, section 3.6):
``A^m_mod = 1/2 G(A^m + A^m_rgb)`` and ``A^s_mod = 1/2 [1/2 (A^s_rgb + A^s) + max A^m_mod]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from anomalib_3d_plugins.pointad.scoring import (
    cosine_view_scores,
    object_score,
    segment_max,
)


class FusedScores(NamedTuple):
    """Point and RGB evidence of ``B`` clouds (``N`` points) and their fusion.

    Attributes:
        anomaly_map: ``(N,)`` fused map ``A^m_mod``.
        pred_score: ``(B,)`` fused object score ``A^s_mod``.
        point_map: ``(N,)`` smoothed point-only map ``A^m``.
        point_score: ``(B,)`` point-only object score ``A^s``.
        rgb_map: ``(N,)`` smoothed RGB map on the points ``A^m_rgb``.
    """

    anomaly_map: Tensor
    pred_score: Tensor
    point_map: Tensor
    point_score: Tensor
    rgb_map: Tensor


def score_rgb_image(
    backbone: object,
    images: Tensor,
    text: Tensor,
    temperature: float,
    grid_index: Tensor,
    grid_shape: Tensor | tuple[int, int],
    batch: Tensor,
) -> tuple[Tensor, Tensor]:
    """Score RGB images with the prompts and read the map at every point's grid pixel.

    Args:
        backbone: the frozen CLIP (``prepare_images``, ``encode_image``, ``grid_size``).
        images: ``(B, 3, H', W')`` RGB in ``[0, 1]``.
        text: ``(B, 2, D)`` text features.
        temperature: ``tau``.
        grid_index: ``(N,)`` flat pixel ``row * W + col`` of each point on its organized grid.
        grid_shape: ``(H, W)`` of the grid (or ``(B, 2)``, all equal).
        batch: ``(N,)`` cloud of each point.

    Returns:
        ``(global abnormal probability (B,), per-point RGB abnormal map (N,))`` (map not smoothed).
    """
    shape = torch.as_tensor(grid_shape).reshape(-1, 2)[0].tolist()
    features = backbone.encode_image(backbone.prepare_images(images))
    glob = features.global_features.unsqueeze(1)
    patch = torch.stack(features.patch_tokens).unsqueeze(2)
    scores = cosine_view_scores(glob, patch, text, temperature, backbone.grid_size)
    probability = scores.logits.softmax(dim=-1)[:, 0, 1]
    abnormal = torch.stack([p[:, 0, 1] for p in scores.patch_probs]).mean(dim=0)  # (B, h, w)
    on_grid = F.interpolate(abnormal.unsqueeze(1), size=(int(shape[0]), int(shape[1])), mode="bilinear",
                            align_corners=False)[:, 0]
    return probability, on_grid.flatten(1)[batch, grid_index]


def fuse_point_and_rgb(
    point_raw: Tensor,
    rgb_raw: Tensor,
    rgb_score: Tensor,
    view_probs: Tensor,
    batch: Tensor,
    num_clouds: int,
    smooth: Callable[[Tensor], Tensor],
) -> FusedScores:
    """Fuse the point and RGB evidence of ``B`` clouds.

    Args:
        point_raw: ``(N,)`` unsmoothed point map ``S^3d_a``.
        rgb_raw: ``(N,)`` unsmoothed RGB map on the points.
        rgb_score: ``(B,)`` RGB global abnormal probability ``A^s_rgb``.
        view_probs: ``(B, V)`` abnormal probability of every view.
        batch: ``(N,)`` cloud of each point.
        num_clouds: ``B``.
        smooth: ``G``: ``(N,)`` or ``(N, C)`` point scores -> the same, smoothed.
    """
    # One pass for both maps: smooth them as two channels.
    point_map, rgb_map = smooth(torch.stack([point_raw, rgb_raw], dim=1)).unbind(1)
    point_score = object_score(view_probs, point_map, batch, num_clouds)
    anomaly_map = 0.5 * smooth(point_map + rgb_map)
    pred_score = 0.5 * (0.5 * (rgb_score + point_score) + segment_max(anomaly_map, batch, num_clouds))
    return FusedScores(anomaly_map, pred_score, point_map, point_score, rgb_map)


__all__ = ["FusedScores", "fuse_point_and_rgb", "score_rgb_image"]
