"""BTF's feature side: hand-crafted point features (raw coordinates, FPFH), their kNN pooling on
raw clouds, and patch scores of organized grids carried back to points.

The cloud normalisation (:func:`anomalib_3d.ops.normalize_clouds`), the organized patch pooling and
the RGB backbone (:mod:`anomalib_3d.nn.image_backbones`) are shared with other models and live there.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from anomalib_3d.ops import fpfh, gaussian_filter_grid, knn

__all__ = [
    "FEATURE_MODES",
    "knn_pool",
    "patch_scores_to_points",
    "point_features",
]

FEATURE_MODES = ("raw", "fpfh", "rgb_fpfh")


def point_features(
    points: torch.Tensor,
    batch: torch.Tensor,
    mode: Literal["raw", "fpfh"],
    *,
    fpfh_radius: float = 0.08,
    fpfh_max_nn: int = 100,
    normal_k: int = 30,
) -> torch.Tensor:
    """Per-point hand-crafted features of (normalised) clouds.

    Args:
        points: ``(N, 3)`` normalised points.
        batch: ``(N,) long`` sorted cloud ids.
        mode: ``"raw"`` (the coordinates, 3-D) or ``"fpfh"`` (33-D FPFH, Rusu et al. 2009, with
            normals from ``normal_k`` nearest neighbours oriented away from the cloud centre).
        fpfh_radius, fpfh_max_nn: FPFH neighbourhood (Open3D hybrid search).
        normal_k: neighbourhood of the normal estimate.

    Returns:
        ``(N, C)`` float features.
    """
    if mode == "raw":
        return points.float()
    if mode == "fpfh":
        return fpfh(points.float(), radius=fpfh_radius, max_nn=fpfh_max_nn, batch=batch, normal_k=normal_k).float()
    msg = f"point feature mode must be 'raw' or 'fpfh', got {mode!r}."
    raise ValueError(msg)


def knn_pool(points: torch.Tensor, features: torch.Tensor, batch: torch.Tensor, k: int) -> torch.Tensor:
    """Average every point's features over its ``k`` nearest neighbours (itself included).

    The unorganized counterpart of BTF's 3 x 3 average pooling on the image grid.

    Args:
        points: ``(N, 3)``; features: ``(N, C)``; batch: ``(N,) long``; k: neighbourhood size
            (clipped to the smallest cloud).

    Returns:
        ``(N, C)`` pooled features.
    """
    if k <= 1:
        return features
    smallest = int(torch.bincount(batch).min())
    index, _ = knn(points, points, min(k, smallest), batch, batch)
    return features[index].mean(dim=1)


def patch_scores_to_points(
    patch_scores: torch.Tensor,
    grid_index: torch.Tensor,
    grid_shape: tuple[int, int],
    sigma: float,
) -> torch.Tensor:
    """BTF's score map: bilinear upsampling of the patch scores to the full grid, Gaussian blur,
    read out at every point's pixel.

    Args:
        patch_scores: ``(P, P)``.
        grid_index: ``(n,) long`` pixel of each point.
        grid_shape: ``(H, W)`` of the full-resolution grid.
        sigma: blur width in full-resolution pixels (0: none).

    Returns:
        ``(n,)`` per-point scores.
    """
    score_map = F.interpolate(patch_scores[None, None], size=tuple(grid_shape), mode="bilinear", align_corners=False)
    score_map = gaussian_filter_grid(score_map, sigma, truncate=3.0) if sigma > 0 else score_map
    return score_map.reshape(-1)[grid_index]


