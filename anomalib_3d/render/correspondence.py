"""Pixel -> point: read per-view 2D maps back onto the points they were rendered from.

This is PointAD's back-projection (paper §3.3, "(R^(k))^(-1) S^2d(k) ⊗ M^(k)"): each point takes
the map value at the pixel its centre projects to, in every view where it is visible, and the
views are averaged. Maps at a coarser resolution (e.g. CLIP patch maps) are first bilinearly
upsampled to the render size, as PointAD does with ``Up(.)``.

Points that no view sees (fully occluded or squeezed out by neighbours) get, with
``fallback="nearest"``, the value of their nearest visible point of the same cloud (Euclidean
distance in the input coordinates, via :func:`anomalib_3d.ops.knn`); with ``fallback="zero"``
they get 0 and with ``fallback="nan"`` NaN, so callers can tell them apart. A cloud with no
visible point at all gets 0 (``"nearest"``/``"zero"``) or NaN (``"nan"``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from anomalib_3d.render.splat import RenderOutput

Fallback = Literal["nearest", "zero", "nan"]

__all__ = ["Fallback", "gather_to_points", "upsample_maps"]

# Largest N * V * C read in one go; wider reads loop over views.
_ALL_VIEWS_AT_ONCE = 1 << 24


def upsample_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly resize ``(B, V, h, w)`` or ``(B, V, C, h, w)`` maps to ``size = (H, W)``.

    Uses ``align_corners=False`` (pixel centres map to pixel centres, like ``F.interpolate``'s
    default for images). Returns the input unchanged when it already has that size.
    """
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    if not flat.is_floating_point():
        flat = flat.float()
    resized = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return resized.reshape(*lead, *size)


def gather_to_points(
    maps: Tensor,
    output: RenderOutput,
    *,
    fallback: Fallback = "nearest",
) -> Tensor:
    """Average per-view pixel maps over the views in which each point is visible.

    Args:
        maps: ``(B, V, H', W')`` or ``(B, V, C, H', W')`` per-view maps, any resolution (resized
            bilinearly to the render size when it differs).
        output: the :class:`RenderOutput` the maps were computed from (its ``point_uv``,
            ``visible`` and ``batch`` define the correspondence).
        fallback: value for points visible in no view: ``"nearest"`` (nearest visible point of the
            same cloud), ``"zero"`` or ``"nan"``.

    Returns:
        ``(N,)`` for ``(B, V, H', W')`` maps, ``(N, C)`` for ``(B, V, C, H', W')`` maps, float.

    Raises:
        ValueError: maps whose batch/view dimensions do not match the render, or an unknown fallback.
    """
    if fallback not in ("nearest", "zero", "nan"):
        msg = f"fallback must be 'nearest', 'zero' or 'nan', got {fallback!r}."
        raise ValueError(msg)
    num_clouds, num_views = output.num_clouds, output.num_views
    if not isinstance(maps, Tensor) or maps.ndim not in (4, 5) or tuple(maps.shape[:2]) != (num_clouds, num_views):
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        msg = (
            f"maps must have shape ({num_clouds}, {num_views}, H, W) or ({num_clouds}, {num_views}, C, H, W) "
            f"to match the render (B clouds, V views), got {shape}."
        )
        raise ValueError(msg)
    squeeze = maps.ndim == 4
    if squeeze:
        maps = maps.unsqueeze(2)
    height, width = output.image_size
    maps = upsample_maps(maps.to(output.depth.device), (height, width))
    if not maps.is_floating_point():
        maps = maps.float()

    batch = output.batch
    visible = output.visible
    channels = maps.shape[2]
    # Out-of-frame points are invisible; clamping only keeps their (discarded) reads in bounds.
    cols = output.point_uv[..., 0].clamp(0, width - 1)
    rows = output.point_uv[..., 1].clamp(0, height - 1)
    view_index = torch.arange(num_views, device=batch.device)
    pixel = ((batch.unsqueeze(1) * num_views + view_index) * height + rows) * width + cols  # (N, V)
    # One row per pixel holding all channels, so each read is a single index_select.
    table = maps.permute(0, 1, 3, 4, 2).reshape(-1, channels)

    num_points = batch.shape[0]
    if num_points * num_views * channels <= _ALL_VIEWS_AT_ONCE:
        read = table.index_select(0, pixel.reshape(-1)).view(num_points, num_views, channels)
        total = read.masked_fill_(~visible.unsqueeze(2), 0.0).sum(dim=1)
    else:
        # Wide feature maps: a loop over views keeps memory at O(N * C), not O(N * V * C).
        total = maps.new_zeros(num_points, channels)
        pixel_by_view, hidden_by_view = pixel.T.contiguous(), (~visible).T.unsqueeze(2)
        for view in range(num_views):
            read = table.index_select(0, pixel_by_view[view])
            total += read.masked_fill_(hidden_by_view[view], 0.0)
    count = visible.sum(dim=1)
    result = total / count.clamp(min=1).unsqueeze(1).to(total.dtype)

    unseen = count == 0
    if fallback == "nan":
        result = torch.where(unseen.unsqueeze(1), torch.full_like(result, float("nan")), result)
    elif fallback == "nearest" and bool(unseen.any()):
        result = _fill_from_nearest_visible(result, unseen, output.points, batch, num_clouds)
    return result.squeeze(1) if squeeze else result


def _fill_from_nearest_visible(
    result: Tensor, unseen: Tensor, points: Tensor, batch: Tensor, num_clouds: int
) -> Tensor:
    """Copy each unseen point's row from its nearest seen point of the same cloud (0 if none)."""
    from anomalib_3d.ops import knn  # lazy: ops is optional at import time

    seen = ~unseen
    seen_per_cloud = torch.zeros(num_clouds, dtype=torch.long, device=batch.device).index_add_(
        0, batch, seen.long()
    )
    # Clouds without any visible point have nobody to copy from; their points keep 0.
    fillable = unseen & (seen_per_cloud[batch] > 0)
    if not bool(fillable.any()):
        return result
    seen_idx = seen.nonzero().squeeze(1)
    query_idx = fillable.nonzero().squeeze(1)
    neighbours, _ = knn(
        points[seen_idx],
        points[query_idx],
        1,
        batch_points=batch[seen_idx],
        batch_queries=batch[query_idx],
    )
    result = result.clone()
    result[query_idx] = result[seen_idx[neighbours[:, 0]]]
    return result
