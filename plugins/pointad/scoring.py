"""PointAD's scores: prompt similarities of the views, smoothing on the points, the object score.

* :func:`cosine_view_scores`: cosine similarities of global / patch features with the normal and
  abnormal prompts over ``tau``: per-view global logits and per-layer two-class patch maps;
* :func:`gather_point_probs`: those maps read back at the points, over the views that see them;
* :func:`smooth_point_scores`: the Gaussian ``G_sigma`` of per-point scores (on the sensor grid for
  organized clouds, on the points otherwise);
* :func:`object_score`: ``A^s = 1/2 (mean_v P_a^(v) + max A^m)`` (paper, section 3.6).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor


class ViewScores(NamedTuple):
    """Per-view scores of ``B`` clouds.

    Attributes:
        logits: ``(B, V, 2)`` global ``[normal, abnormal]`` logits (``cos / tau``).
        patch_probs: ``L x (B, V, 2, h, w)`` two-class softmax maps of each vision layer.
    """

    logits: Tensor
    patch_probs: list[Tensor]


class PointADPrediction(NamedTuple):
    """Inference outputs (``N`` points, ``B`` clouds).

    Attributes:
        anomaly_map: ``(N,)`` final point scores (multimodal when RGB was fused).
        pred_score: ``(B,)`` final object scores.
        point_map: ``(N,)`` point-only map ``A^m``.
        point_score: ``(B,)`` point-only score ``A^s``.
        view_probs: ``(B, V)`` abnormal probability of every view.
        rgb_map: ``(N,)`` smoothed RGB map on the points, or ``None``.
        rgb_score: ``(B,)`` RGB global probability, or ``None``.
        view_maps: ``(B, V, H, W)`` abnormal maps of the views at render size (``return_views``).
        renders: ``(B, V, 3, H, W)`` the renders (``return_views``).
    """

    anomaly_map: Tensor
    pred_score: Tensor
    point_map: Tensor
    point_score: Tensor
    view_probs: Tensor
    rgb_map: Tensor | None = None
    rgb_score: Tensor | None = None
    view_maps: Tensor | None = None
    renders: Tensor | None = None


def segment_max(values: Tensor, batch: Tensor, num_clouds: int) -> Tensor:
    """``(B,)`` maximum of ``values (N,)`` over the points of each cloud."""
    out = values.new_full((num_clouds,), -math.inf)
    return out.scatter_reduce(0, batch, values, reduce="amax", include_self=True)


def object_score(view_probs: Tensor, point_map: Tensor, batch: Tensor, num_clouds: int) -> Tensor:
    """``(B,)`` ``1/2 (mean over views of the abnormal probability + max of the point map)``.

    Args:
        view_probs: ``(B, V)`` abnormal probability of every view.
        point_map: ``(N,)`` point scores.
        batch: ``(N,)`` cloud of each point.
        num_clouds: ``B``.
    """
    return 0.5 * (view_probs.mean(dim=1) + segment_max(point_map, batch, num_clouds))


def cosine_view_scores(
    global_features: Tensor,
    patch_tokens: Tensor,
    text: Tensor,
    temperature: float,
    grid_size: tuple[int, int],
) -> ViewScores:
    """Cosine scores of views against the prompts.

    Args:
        global_features: ``(B, V, D)``.
        patch_tokens: ``(L, B, V, h*w, D)``.
        text: ``(B, 2, D)`` normalised text features of each cloud.
        temperature: ``tau``.
        grid_size: the patch grid ``(h, w)``.
    """
    text = text.float()
    glob = F.normalize(global_features.float(), dim=-1)
    logits = torch.einsum("bvd,bcd->bvc", glob, text) / temperature
    height, width = grid_size
    maps = []
    for tokens in patch_tokens:
        tokens = F.normalize(tokens.float(), dim=-1)
        probs = (torch.einsum("bvnd,bcd->bvnc", tokens, text) / temperature).softmax(dim=-1)
        maps.append(probs.permute(0, 1, 3, 2).reshape(*probs.shape[:2], 2, height, width))
    return ViewScores(logits, maps)


def gather_point_probs(pixel_probs: Sequence[Tensor], output: object) -> tuple[list[Tensor], Tensor]:
    """The 3D segmentation ``S^3d`` of every layer: per-view maps read at each point's pixel,
    averaged over the views in which the point is *visible* (occluded views do not count).

    Args:
        pixel_probs: ``L x (B, V, 2, H', W')`` two-class maps (upsampled bilinearly when not at
            the render size).
        output: the :class:`~anomalib_3d.render.RenderOutput` the maps come from.

    Returns:
        ``(L x (N, 2), valid (N,) bool)``: ``valid`` marks points visible in at least one view
        (the others get 0 and must be ignored).
    """
    from anomalib_3d.render import gather_to_points

    layers = len(pixel_probs)
    stacked = torch.cat(list(pixel_probs), dim=2)  # (B, V, 2L, H, W): one gather for all layers
    gathered = gather_to_points(stacked, output, fallback="zero")
    return list(gathered.view(-1, layers, 2).unbind(dim=1)), output.visible.any(dim=1)


def cloud_offsets(batch: Tensor, num_clouds: int) -> list[int]:
    """``B + 1`` offsets of the clouds in a sorted batch vector ``(N,)``."""
    return torch.cat([batch.new_zeros(1), torch.bincount(batch, minlength=num_clouds).cumsum(0)]).tolist()


def smooth_point_scores(
    points: Tensor,
    scores: Tensor,
    batch: Tensor,
    num_clouds: int,
    *,
    sigma: float,
    k: int | None = None,
    truncate: float = 3.0,
    grid_index: Tensor | None = None,
    grid_shape: tuple[int, int] | None = None,
) -> Tensor:
    """Gaussian smoothing ``G_sigma`` of per-point scores ``(N,)`` or ``(N, C)``, cloud by cloud.

    On a grid (``grid_index`` and ``grid_shape`` given): ``scipy.ndimage.gaussian_filter(sigma)`` of
    the score image (0 where the grid has no point), as the authors. On the points: a Gaussian of
    ``sigma * median spacing`` over every neighbour within ``truncate`` sigmas (or the ``k``
    nearest when set). ``sigma <= 0`` returns the scores unchanged.

    Args:
        points: ``(N, 3)``.
        scores: ``(N,)`` or ``(N, C)``.
        batch: ``(N,)`` sorted cloud index.
        num_clouds: ``B``.
        sigma: grid pixels, or median point spacings.
        k: nearest neighbours instead of the radius support.
        truncate: support of the radius Gaussian, in sigmas.
        grid_index, grid_shape: the clouds' organized grid (smooth on it).
    """
    if sigma <= 0:
        return scores
    from anomalib_3d.ops.graph import smooth_grid_scores, smooth_scores
    from anomalib_3d.render.radius import median_nn_spacing

    if grid_index is not None and grid_shape is not None:
        return smooth_grid_scores(scores, grid_index, grid_shape, batch, sigma=sigma, num_clouds=num_clouds)
    out = torch.empty_like(scores)
    ptr = cloud_offsets(batch, num_clouds)
    for cloud in range(num_clouds):
        lo, hi = ptr[cloud], ptr[cloud + 1]
        spacing = median_nn_spacing(points[lo:hi].detach()) if hi - lo >= 2 else 0.0
        if spacing <= 0:
            out[lo:hi] = scores[lo:hi]
            continue
        cloud_points = points[lo:hi].detach()
        width = sigma * spacing
        if k is not None:
            out[lo:hi] = smooth_scores(cloud_points, scores[lo:hi], k=min(k, hi - lo), sigma=width)
        else:
            out[lo:hi] = smooth_scores(cloud_points, scores[lo:hi], radius=truncate * width, sigma=width)
    return out


__all__ = [
    "PointADPrediction",
    "ViewScores",
    "cloud_offsets",
    "cosine_view_scores",
    "gather_point_probs",
    "object_score",
    "segment_max",
    "smooth_point_scores",
]
