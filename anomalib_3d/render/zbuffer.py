"""The z-buffer of point discs: which point owns each pixel, and which points are visible.

How the z-buffer works: a point's depth (a positive float32, whose bit pattern therefore sorts
like the number) goes into the high 32 bits of an int64 key and its index into the low 32 bits.
One ``scatter_reduce(amin)`` of the N x V centre keys gives, per pixel, the nearest point whose
centre falls there. Since a disc carries one key for all its pixels, the z-buffer of discs is
exactly the min-filter of that centre buffer over the disc's pixel offsets (K shifted
``torch.minimum`` over whole images). All clouds and views are processed in one batch; there is
no Python loop over points, pixels or views (only over the K ~ 13 disc offsets).

Visibility rule: point ``n`` is *visible* in view ``v`` iff its centre pixel lies in the image
and either ``n`` owns that pixel, or its depth is within ``depth_tolerance`` (normalised units:
the object fits the unit sphere) of the owner's depth. The tolerance keeps densely sampled
surfaces visible where a neighbour on the same surface happened to win the centre pixel, while a
surface hidden behind another (depth gap larger than the tolerance) stays invisible. The default
(:func:`default_depth_tolerance`) is ``2 * point_radius_px + 1`` pixel footprints (about 0.033 for
336 px, radius 2, margin 0.1: 1.6 % of the object's diameter). With ``depth_tolerance=0`` this is
PointAD's rule (only the minimum-depth point per pixel is visible; exact depth ties count as
visible).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
from torch import Tensor

from anomalib_3d.render.cameras import CameraRig

__all__ = ["Raster", "default_depth_tolerance", "disc_offsets", "rasterize_normalised"]

# Background key: depth bits of +inf above an all-ones index word. Every real fragment (finite
# depth) sorts below it, and decoding it yields depth = inf and point index = -1 for free.
_EMPTY_KEY = (0x7F800000 << 32) | 0xFFFFFFFF
_LITTLE_ENDIAN = sys.byteorder == "little"


def disc_offsets(radius_px: float, device: torch.device | str | None = None) -> Tensor:
    """Integer pixel offsets ``(dx, dy)`` covered by a disc of ``radius_px`` around a pixel.

    Args:
        radius_px: disc radius in pixels, ``>= 0`` (0 gives the single centre pixel).
        device: where to put the result.

    Returns:
        ``(K, 2)`` long offsets with ``dx**2 + dy**2 <= radius_px**2``; ``(0, 0)`` comes first.
    """
    if not math.isfinite(radius_px) or radius_px < 0:
        msg = f"point_radius_px must be a finite number >= 0, got {radius_px!r}."
        raise ValueError(msg)
    reach = int(math.floor(radius_px))
    steps = torch.arange(-reach, reach + 1, device=device)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    offsets = torch.stack([dx.reshape(-1), dy.reshape(-1)], dim=1)
    inside = (offsets.pow(2).sum(dim=1)).double() <= radius_px**2 + 1e-9
    offsets = offsets[inside]
    # Centre first so chunked scattering always includes it in the first chunk (not required, tidy).
    order = torch.argsort(offsets.abs().sum(dim=1), stable=True)
    return offsets[order]


def _project(points_norm: Tensor, rig: CameraRig) -> tuple[Tensor, Tensor, Tensor]:
    """Sub-pixel column ``x`` ``(N, V)``, row ``y`` ``(N, V)`` and depth ``(N, V)`` of every point in every view.

    Pixel ``(u, v)`` covers ``[u, u + 1) x [v, v + 1)``; the optical axis hits ``(W / 2, H / 2)``.
    """
    height, width = rig.image_size
    rotations = rig.rotations.to(points_norm.dtype)
    # Each output is one fused (N, 3) @ (3, V) + bias: the rotation, scale and principal point
    # are folded into the matrix, so no (N, V, 3) intermediate is built.
    def bias(value: float) -> Tensor:
        return points_norm.new_tensor(value).expand(rig.num_views)

    depth = torch.addmm(bias(rig.camera_distance), points_norm, -rotations[:, 2, :].T)
    if rig.projection == "orthographic":
        scale = rig.ortho_scale_px
        x_px = torch.addmm(bias(width / 2.0), points_norm, scale * rotations[:, 0, :].T)
        y_px = torch.addmm(bias(height / 2.0), points_norm, -scale * rotations[:, 1, :].T)
    else:
        # Points at or behind the camera centre get a dummy position; they are marked out of frame.
        inv_depth = torch.where(depth > 0, depth, torch.ones_like(depth)).reciprocal_()
        x_px = (points_norm @ (rig.focal_px * rotations[:, 0, :].T)).mul_(inv_depth).add_(width / 2.0)
        y_px = (points_norm @ (-rig.focal_px * rotations[:, 1, :].T)).mul_(inv_depth).add_(height / 2.0)
    return x_px, y_px, depth


def _pack_keys(depth: Tensor, point_index: Tensor) -> Tensor:
    """int64 keys ordering fragments by (depth, point index): float32 depth bits above the index.

    Positive float32 bit patterns sort like the numbers, so an integer ``amin`` over keys picks
    the nearest point and breaks exact depth ties towards the lower index. ``depth`` ``(N, V)``
    float32 (must be > 0 where it matters), ``point_index`` ``(N, 1)`` int32; returns ``(N, V)``.
    """
    bits = depth.view(torch.int32)
    if _LITTLE_ENDIAN:
        # Write the two 32-bit halves in place instead of widening, shifting and or-ing.
        halves = torch.empty(*depth.shape, 2, dtype=torch.int32, device=depth.device)
        halves[..., 0] = point_index
        halves[..., 1] = bits
        return halves.view(torch.int64).squeeze(-1)
    return (bits.to(torch.int64) << 32) | point_index.to(torch.int64)


def _unpack_keys(keys: Tensor) -> tuple[Tensor, Tensor]:
    """``(depth float32, point index int32)`` of int64 keys; ``(inf, -1)`` for the background key."""
    if _LITTLE_ENDIAN:
        halves = keys.view(torch.int32)  # zero-copy: (..., 2 * last)
        return halves[..., 1::2].view(torch.float32), halves[..., 0::2]
    depth = (keys >> 32).to(torch.int32).view(torch.float32)
    index = (keys & 0xFFFFFFFF).to(torch.int32)  # 0xFFFFFFFF wraps to -1 for the background
    return depth, index


@dataclass
class Raster:
    """The z-buffer of ``B`` clouds in ``V`` views (``N`` points, ``H x W`` pixels).

    Attributes:
        pixel_to_point: ``(B, V, H, W)`` long index of the point owning each pixel, ``-1`` on background.
        depth: ``(B, V, H, W)`` float32 depth of the owner, ``inf`` on background.
        point_uv: ``(N, V, 2)`` long pixel ``(column, row)`` of each point's centre.
        point_depth: ``(N, V)`` float32 depth of each point's centre.
        visible: ``(N, V)`` bool, see the module docstring for the rule.
    """

    pixel_to_point: Tensor
    depth: Tensor
    point_uv: Tensor
    point_depth: Tensor
    visible: Tensor


def rasterize_normalised(
    points_norm: Tensor,
    batch: Tensor | None,
    num_clouds: int,
    rig: CameraRig,
    point_radius_px: float | list[float],
    depth_tolerance: float | list[float],
) -> Raster:
    """Z-buffer of normalised clouds: one ``scatter_reduce`` of the centres, then a min-filter with the disc.

    Args:
        points_norm: ``(N, 3)`` float points, each cloud already in the rig's normalised frame.
        batch: ``(N,)`` long cloud index (may be ``None`` when ``num_clouds == 1``).
        num_clouds: ``B``.
        rig: the views (with the image size used).
        point_radius_px: disc radius, one for all clouds or a list of ``B``.
        depth_tolerance: visibility tolerance, one or a list of ``B``.
    """
    num_points = points_norm.shape[0]
    num_views = rig.num_views
    height, width = rig.image_size
    device = points_norm.device

    x_px, y_px, depth = _project(points_norm, rig)
    in_frame = (x_px >= 0) & (x_px < width) & (y_px >= 0) & (y_px < height) & (depth > 0)
    point_uv = torch.empty(num_points, num_views, 2, dtype=torch.long, device=device)
    point_uv[..., 0] = x_px.floor_()
    point_uv[..., 1] = y_px.floor_()
    col, row = point_uv[..., 0], point_uv[..., 1]
    depth32 = depth.to(torch.float32)

    # Every fragment of a point carries the same key (flat, camera-facing disc), so the z-buffer
    # of discs equals a min-filter ("erosion" with the disc as structuring element) of the
    # z-buffer of centres: min over discs covering q == min over offsets o of centre_min(q - o).
    # One scatter of N*V centres plus K shifted minima over the images replaces N*V*K fragments.
    radii = point_radius_px if isinstance(point_radius_px, list) else [float(point_radius_px)] * num_clouds
    largest = max(radii) if radii else 0.0
    offsets = disc_offsets(largest)  # stays on the CPU: only read as Python ints
    reach = int(math.floor(largest))
    padded_h, padded_w = height + 2 * reach, width + 2 * reach
    view_size = padded_h * padded_w
    num_slots = num_clouds * num_views
    # Each (cloud, view) image is padded by the disc reach so shifted reads never wrap; points
    # outside the frame go to one extra "trash" image (never read back), so no data-dependent
    # filtering is needed and their keys need not be meaningful.
    slot_start = torch.arange(num_views, device=device) * view_size + (reach * padded_w + reach)
    if num_clouds > 1:
        slot_start = (batch * (num_views * view_size)).unsqueeze(1) + slot_start
    centre_lin = (row * padded_w).add_(col).add_(slot_start)
    trash = num_slots * view_size + reach * padded_w + reach
    centre_lin = torch.where(in_frame, centre_lin, trash).reshape(-1)

    point_index = torch.arange(num_points, device=device, dtype=torch.int32).unsqueeze(1)
    keys = _pack_keys(depth32, point_index)

    buffer_size = (num_slots + 1) * view_size
    centre_keys = torch.full((buffer_size,), _EMPTY_KEY, dtype=torch.int64, device=device)
    centre_keys.scatter_reduce_(0, centre_lin, keys.reshape(-1), "amin", include_self=True)
    source = centre_keys.view(num_slots + 1, padded_h, padded_w)
    zbuffer = centre_keys.clone()  # same padded layout, so centre_lin indexes it directly
    interior = zbuffer.view(num_slots + 1, padded_h, padded_w)[:, reach : reach + height, reach : reach + width]
    # Clouds with a smaller disc skip the offsets outside it (per-cloud radii: a cloud renders
    # exactly as it would alone, whatever else is in the batch).
    slot_radius_sq = torch.tensor([r * r for r in radii for _ in range(num_views)] + [largest**2], device=device)
    for dx, dy in offsets[1:].tolist():
        shifted = source[:, reach + dy : reach + dy + height, reach + dx : reach + dx + width]
        reached = slot_radius_sq >= dx * dx + dy * dy - 1e-9
        if bool(reached.all()):
            torch.minimum(interior, shifted, out=interior)
        else:
            blocked = ~reached.view(-1, 1, 1)
            torch.minimum(interior, shifted.masked_fill(blocked, _EMPTY_KEY), out=interior)

    # Visible: within tolerance of the owner of the centre pixel (the owner itself included,
    # as its depth equals the pixel's depth).
    owner_depth, _ = _unpack_keys(zbuffer.index_select(0, centre_lin).view(num_points, num_views))
    if isinstance(depth_tolerance, list):
        per_cloud = torch.tensor(depth_tolerance, dtype=torch.float32, device=device)
        tolerance = per_cloud.index_select(0, batch).unsqueeze(1)
    else:
        tolerance = depth_tolerance
    visible = in_frame & (depth32 <= owner_depth + tolerance)

    image_keys = interior[:num_slots].reshape(num_clouds, num_views, height, width)
    image_depth, image_owner = _unpack_keys(image_keys)
    return Raster(
        pixel_to_point=image_owner.to(torch.long),
        depth=image_depth.contiguous(),
        point_uv=point_uv,
        point_depth=depth32,
        visible=visible,
    )


def default_depth_tolerance(rig: CameraRig, point_radius_px: float) -> float:
    """Default visibility tolerance: ``2 * point_radius_px + 1`` pixel footprints, in depth units.

    Where a neighbour's disc wins a point's centre pixel, the two points lie up to about
    ``point_radius_px + 0.7`` pixels apart, so on a surface tilted by ``theta`` their depths differ
    by up to that distance times ``tan(theta)``. This tolerance keeps surfaces tilted up to about
    60 degrees visible while hiding anything more than a few pixel footprints behind the owner.
    The footprint is measured at the object centre (orthographic: everywhere).
    """
    if rig.projection == "orthographic":
        pixel = 1.0 / rig.ortho_scale_px
    else:
        pixel = rig.camera_distance / rig.focal_px
    return (2.0 * float(point_radius_px) + 1.0) * pixel
