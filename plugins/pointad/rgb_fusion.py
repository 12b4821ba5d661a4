"""PointAD's multimodal branch: the RGB image of an organized scan, scored and fused with the points.

The image is scored by the same prompts as the renders; its abnormal map is read at every point's
pixel of the organized grid, so both modalities live on the points. Two fusions:

* ``"paper"`` (section 3.6): ``A^m_mod = G(1/2 (A^m + A^m_rgb))`` and
  ``A^s_mod = 1/2 [1/2 (A^s_rgb + A^s) + max A^m_mod]``, maps smoothed on the object's pixels;
* ``"official"`` (the authors' ``test.py``): the same fused map, but every map is a full image of
  the grid (the point map 0 off the object, the RGB map everywhere) smoothed as a whole, and
  ``A^s_mod = max A^m_mod + 1/2 (A^s_rgb + mean_v P_a^(v))`` with the maximum over the whole
  image; the RGB image has its background (support plane, fragments) blacked out and is resized
  with an antialiased filter, as their preprocessing and PIL resize do.
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

#: ``fusion`` values.
FUSIONS = ("paper", "official")


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


def _grid_hw(grid_shape: Tensor | tuple[int, int]) -> tuple[int, int]:
    shape = torch.as_tensor(grid_shape).reshape(-1, 2)[0].tolist()
    return int(shape[0]), int(shape[1])


def rgb_abnormal_grid(
    backbone: object,
    images: Tensor,
    text: Tensor,
    temperature: float,
    grid_shape: Tensor | tuple[int, int],
    *,
    antialias: bool = False,
) -> tuple[Tensor, Tensor]:
    """Score RGB images with the prompts: ``(global abnormal probability (B,), abnormal map on the
    organized grid (B, H, W))`` (the patch maps averaged over layers, bilinear to the grid, not smoothed).

    Args:
        backbone: the frozen CLIP (``prepare_images``, ``encode_image``, ``grid_size``).
        images: ``(B, 3, H', W')`` RGB in ``[0, 1]``.
        text: ``(B, 2, D)`` text features.
        temperature: ``tau``.
        grid_shape: ``(H, W)`` of the grid (or ``(B, 2)``, all equal).
        antialias: resize the images to the backbone's size with an antialiased filter.
    """
    features = backbone.encode_image(backbone.prepare_images(images, antialias=antialias))
    glob = features.global_features.unsqueeze(1)
    patch = torch.stack(features.patch_tokens).unsqueeze(2)
    scores = cosine_view_scores(glob, patch, text, temperature, backbone.grid_size)
    probability = scores.logits.softmax(dim=-1)[:, 0, 1]
    abnormal = torch.stack([p[:, 0, 1] for p in scores.patch_probs]).mean(dim=0)  # (B, h, w)
    on_grid = F.interpolate(abnormal.unsqueeze(1), size=_grid_hw(grid_shape), mode="bilinear", align_corners=False)
    return probability, on_grid[:, 0]


def blackout_background(
    images: Tensor,
    grid_index: Tensor,
    grid_shape: Tensor | tuple[int, int],
    batch: Tensor,
    num_clouds: int,
    background: Tensor | None = None,
) -> Tensor:
    """``(B, 3, H', W')`` images with their background black, as the authors' preprocessing leaves them.

    Args:
        images: ``(B, 3, H', W')`` RGB.
        grid_index, grid_shape, batch: the points kept on each organized grid.
        num_clouds: ``B``.
        background: ``(B, H', W')`` bool pixels to black out (the support plane and fragments at
            the image's resolution), or ``None``: every grid pixel without a point, resized to
            the image (nearest).
    """
    if background is None:
        height, width = _grid_hw(grid_shape)
        kept = torch.zeros(num_clouds, height * width, dtype=torch.bool, device=images.device)
        kept[batch.to(images.device), grid_index.to(images.device)] = True
        kept = F.interpolate(kept.view(num_clouds, 1, height, width).float(), size=images.shape[-2:], mode="nearest")
        background = kept[:, 0] < 0.5
    elif tuple(background.shape[-2:]) != tuple(images.shape[-2:]):
        background = F.interpolate(background.unsqueeze(1).float(), size=images.shape[-2:], mode="nearest")[:, 0] > 0.5
    return images * (~background.to(images.device)).unsqueeze(1).to(images.dtype)


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


def fuse_official(
    point_raw: Tensor,
    rgb_grid: Tensor,
    rgb_score: Tensor,
    view_probs: Tensor,
    grid_index: Tensor,
    batch: Tensor,
    sigma: float,
) -> FusedScores:
    """The authors' fusion (``test.py``) on whole grid images.

    ``A = G(S3d_a)`` (the point map written into the grid, 0 off the object), ``C = G(S_rgb)`` (the
    RGB map over the whole image), fused map ``M = G((A + C) / 2)``; object scores
    ``A^s = 1/2 max A + 1/2 mean_v P_a^(v)`` and ``A^s_mod = max M + 1/2 (P_a^rgb + mean_v P_a^(v))``,
    every maximum over the whole image. Maps are read back at the points.

    Args:
        point_raw: ``(N,)`` unsmoothed point map ``S3d_a``.
        rgb_grid: ``(B, H, W)`` unsmoothed RGB abnormal map on the grid.
        rgb_score: ``(B,)`` RGB global abnormal probability.
        view_probs: ``(B, V)`` abnormal probability of every view.
        grid_index: ``(N,)`` flat grid pixel of each point.
        batch: ``(N,)`` cloud of each point.
        sigma: Gaussian width in grid pixels (``gaussian_filter``; 0 = none).
    """
    from anomalib_3d.ops.graph import gaussian_filter_grid

    num_clouds, height, width = rgb_grid.shape
    point_grid = rgb_grid.new_zeros(num_clouds, height * width)
    point_grid[batch, grid_index] = point_raw.to(rgb_grid.dtype)
    point_image = gaussian_filter_grid(point_grid.view(num_clouds, height, width), sigma)
    rgb_image = gaussian_filter_grid(rgb_grid, sigma)
    fused_image = gaussian_filter_grid((point_image + rgb_image) / 2.0, sigma)
    mean_view = view_probs.mean(dim=1)

    def at_points(image: Tensor) -> Tensor:
        return image.flatten(1)[batch, grid_index]

    def image_max(image: Tensor) -> Tensor:
        return image.flatten(1).amax(dim=1)

    point_score = 0.5 * image_max(point_image) + 0.5 * mean_view
    pred_score = image_max(fused_image) + 0.5 * (rgb_score + mean_view)
    return FusedScores(at_points(fused_image), pred_score, at_points(point_image), point_score, at_points(rgb_image))


__all__ = [
    "FUSIONS",
    "FusedScores",
    "blackout_background",
    "fuse_official",
    "fuse_point_and_rgb",
    "rgb_abnormal_grid",
]
