"""Splat radius: how large a disc each point is drawn with, so that a surface shows no holes.

Two rules, one per caller's knowledge of the cloud:

* :func:`radius_for_point_count` knows only how many points a cloud has and the image size (the
  visualizer, which draws any cloud quickly);
* :func:`radius_from_sampling` measures the cloud's own sampling (PointAD, whose renders must not
  depend on the rest of the batch): the pitch of its organized grid, else the median distance to
  the nearest neighbour, converted to render pixels of a rig. :func:`cloud_radii` applies it to
  every cloud of a batch.

The disc of the sampling rule has twice the image area each point owns: no holes on a lattice
(that needs ``r >= 0.71`` pitch) nor, mostly, on random samples. For a lattice of pitch ``p`` that
is ``r = sqrt(2 / pi) p``; for a random (Poisson) sample whose median nearest-neighbour distance
is ``d`` (``= sqrt(ln 2 / (pi rho))``), ``r = sqrt(2 / ln 2) d``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from anomalib_3d.render.cameras import CameraRig, fit_unit_sphere

__all__ = [
    "MAX_RADIUS_PX",
    "MIN_RADIUS_PX",
    "cloud_radii",
    "grid_pitch",
    "median_nn_spacing",
    "pixels_per_unit",
    "radius_for_point_count",
    "radius_from_sampling",
]

RADIUS_PER_GRID_PITCH = math.sqrt(2.0 / math.pi)
RADIUS_PER_MEDIAN_NN = math.sqrt(2.0 / math.log(2.0))
#: Bounds of the sampling rule, in pixels.
MIN_RADIUS_PX, MAX_RADIUS_PX = 1.0, 8.0
#: The median spacing is measured on (at most about) this many evenly strided query points.
_SPACING_QUERIES = 2048


def radius_for_point_count(num_points: int, image_size: tuple[int, int]) -> float:
    """Disc radius (pixels) so a cloud of ``num_points`` covers its silhouette without holes.

    About half the points face a view and the object covers roughly 40 % of the frame, so each
    visible point owns about ``0.8 H W / N`` pixels; the disc gets 2.5 times that area (discs
    overlap, so the surface shows no holes), clamped to ``[1.5, 4]``.
    """
    height, width = image_size
    return float(min(4.0, max(1.5, math.sqrt(2.0 * height * width / (math.pi * max(num_points, 1))))))


def median_nn_spacing(points: Tensor) -> float:
    """Median distance of (a fixed, evenly strided subset of) ``points (N, 3)`` to their nearest other point.

    Returns 0 for fewer than two points or when every point coincides with another.
    """
    from anomalib_3d.ops import knn

    num = points.shape[0]
    if num < 2:
        return 0.0
    step = max(1, num // _SPACING_QUERIES)
    _, sq = knn(points, points[::step], 2)
    distances = sq[:, 1].clamp(min=0).sqrt()
    positive = distances[distances > 0]
    return float(positive.median()) if positive.numel() else 0.0


def grid_pitch(points: Tensor, grid_index: Tensor, grid_shape: Sequence[int]) -> float:
    """Median 3D distance between points on horizontally / vertically adjacent grid pixels (0 if none).

    Args:
        points: ``(N, 3)`` one organized cloud.
        grid_index: ``(N,)`` flat pixel ``row * W + col`` of each point.
        grid_shape: ``(H, W)``.
    """
    height, width = (int(v) for v in grid_shape)
    owner = torch.full((height * width,), -1, dtype=torch.long, device=points.device)
    owner[grid_index.long()] = torch.arange(points.shape[0], device=points.device)
    owner = owner.view(height, width)
    pairs = [(owner[:, :-1], owner[:, 1:]), (owner[:-1, :], owner[1:, :])]
    distances = []
    for first, second in pairs:
        both = (first >= 0) & (second >= 0)
        if bool(both.any()):
            distances.append((points[first[both]] - points[second[both]]).norm(dim=1))
    if not distances:
        return 0.0
    values = torch.cat(distances)
    values = values[values > 0]
    return float(values.median()) if values.numel() else 0.0


def pixels_per_unit(rig: CameraRig) -> float:
    """Render pixels per unit of the normalised (unit-sphere) cloud at the object centre."""
    return rig.ortho_scale_px if rig.projection == "orthographic" else rig.focal_px / rig.camera_distance


def radius_from_sampling(
    points: Tensor,
    rig: CameraRig,
    grid_index: Tensor | None = None,
    grid_shape: Sequence[int] | None = None,
) -> float:
    """Splat radius (pixels) of one cloud seen by ``rig``, from that cloud alone (deterministic).

    ``sqrt(2 / pi) * pitch`` for organized clouds (``pitch``: the median 3D distance of grid
    neighbours, in render pixels), ``sqrt(2 / ln 2) * d`` for unorganized ones or grids without
    neighbours (``d``: the median nearest-neighbour distance in render pixels); distances are
    measured on the cloud fitted into the unit sphere, as the renderer draws it; clamped to
    ``[MIN_RADIUS_PX, MAX_RADIUS_PX]``.

    Args:
        points: ``(N, 3)`` one cloud.
        rig: the views it is rendered from (orthographic or pinhole).
        grid_index, grid_shape: the cloud's organized grid, if any.
    """
    normalised, _, _ = fit_unit_sphere(points.detach().float(), points.new_zeros(points.shape[0], dtype=torch.long), 1)
    organized = grid_index is not None and grid_shape is not None
    spacing = grid_pitch(normalised, grid_index, grid_shape) if organized else 0.0
    factor = RADIUS_PER_GRID_PITCH
    if spacing <= 0:
        spacing, factor = median_nn_spacing(normalised), RADIUS_PER_MEDIAN_NN
    radius = factor * spacing * pixels_per_unit(rig)
    # Rounded so tiny float differences cannot change the disc (nor a cache key made of it).
    return float(min(MAX_RADIUS_PX, max(MIN_RADIUS_PX, round(radius, 3))))


def cloud_radii(
    points: Tensor,
    batch: Tensor,
    num_clouds: int,
    rig: CameraRig,
    grid_index: Tensor | None = None,
    grid_shape: tuple[int, int] | None = None,
) -> list[float]:
    """:func:`radius_from_sampling` of every cloud of a batch (an empty cloud gets ``MIN_RADIUS_PX``).

    Args:
        points: ``(N, 3)`` all clouds, concatenated in cloud order.
        batch: ``(N,)`` sorted cloud index of each point.
        num_clouds: ``B``.
        rig: the views.
        grid_index: ``(N,)`` pixel of each point on its cloud's grid (organized clouds), or ``None``.
        grid_shape: ``(H, W)`` shared by every organized cloud of the batch.
    """
    ptr = torch.cat([batch.new_zeros(1), torch.bincount(batch, minlength=num_clouds).cumsum(0)]).tolist()
    radii = []
    for cloud in range(num_clouds):
        lo, hi = ptr[cloud], ptr[cloud + 1]
        if hi - lo == 0:
            radii.append(MIN_RADIUS_PX)
            continue
        index = None if grid_index is None or grid_shape is None else grid_index[lo:hi]
        radii.append(radius_from_sampling(points[lo:hi], rig, index, grid_shape if index is not None else None))
    return radii
