"""The z-buffer of point footprints: which point owns each pixel, and which points are visible.

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
336 px, radius 2, margin 0.1: 1.6 % of the object's diameter). With ``depth_tolerance=0`` only the
owner of the centre pixel is visible (and points at exactly its depth).

The PointAD authors' rule (``visibility="nearest"``) is stricter and ignores the splats: per *output*
pixel, only the nearest point whose centre falls in it is visible (ties: the lower index), whatever
the point size. With a ``window_size`` rig the z-buffer is built at the window size and each output
pixel reads the window pixel under its centre; ``point_uv`` is then the authors' correspondence,
``floor((u - 0.5) * H / H_window)`` clipped into the image (``u``: the window coordinate of the
point), so a point just outside the frame still has a pixel, as in their code.

Point shapes: ``"disc"`` (radius ``point_radius_px``) or ``"square"`` of side ``2 * point_radius_px``
pixels (an integer), OpenGL's non-smooth points as Open3D draws them: every pixel whose centre
lies in the square around the projected point (for an even side the square's anchor is the
nearest pixel corner). A square is a separable structuring element, so its min-filter runs as a
row pass and a column pass (``2 s`` shifted minima instead of ``s^2``).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from anomalib_3d.render.cameras import CameraRig

__all__ = [
    "POINT_SHAPES",
    "VISIBILITY_RULES",
    "PointShape",
    "Raster",
    "ViewBoxes",
    "Visibility",
    "default_depth_tolerance",
    "disc_offsets",
    "footprint_offsets",
    "rasterize_normalised",
    "square_side",
    "view_boxes",
]

PointShape = Literal["disc", "square"]
Visibility = Literal["tolerance", "nearest"]
POINT_SHAPES = ("disc", "square")
VISIBILITY_RULES = ("tolerance", "nearest")

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


def square_side(half_side_px: float) -> int:
    """Side in pixels of a ``"square"`` point of half-side ``half_side_px``: ``2 * half_side_px``, a positive integer."""
    side = 2.0 * float(half_side_px)
    if not math.isfinite(side) or side < 1 or abs(side - round(side)) > 1e-6:
        msg = f"a square point needs point_radius_px = side / 2 with an integer side >= 1, got {half_side_px!r}."
        raise ValueError(msg)
    return int(round(side))


def _square_span(side: int) -> tuple[int, int]:
    """Offsets ``lo .. hi`` (inclusive) a square of ``side`` pixels covers around its anchor pixel."""
    low = -(side // 2)
    return low, low + side - 1


def footprint_offsets(size_px: float, shape: PointShape = "disc", device: torch.device | str | None = None) -> Tensor:
    """``(K, 2)`` long pixel offsets ``(dx, dy)`` one point covers around its anchor pixel.

    Args:
        size_px: disc radius, or half the side of a square.
        shape: ``"disc"`` (:func:`disc_offsets`) or ``"square"`` (side ``2 * size_px``; for an even
            side the anchor is the pixel right of / below the nearest pixel corner, see the module docstring).
        device: where to put the result.
    """
    if shape == "disc":
        return disc_offsets(size_px, device)
    if shape != "square":
        msg = f"point_shape must be one of {POINT_SHAPES}, got {shape!r}."
        raise ValueError(msg)
    low, high = _square_span(square_side(size_px))
    steps = torch.arange(low, high + 1, device=device)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([dx.reshape(-1), dy.reshape(-1)], dim=1)


def _project(
    points_norm: Tensor,
    rig: CameraRig,
    batch: Tensor | None = None,
    num_clouds: int = 1,
    scale: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Sub-pixel column ``x`` ``(N, V)``, row ``y`` ``(N, V)`` and depth ``(N, V)`` of every point in
    every view, in raster pixels (:attr:`CameraRig.raster_size`).

    Pixel ``(u, v)`` covers ``[u, u + 1) x [v, v + 1)``; the optical axis hits ``(W / 2, H / 2)``.
    ``batch``, ``num_clouds`` and ``scale`` (``(B,)``, input units per normalised unit) are needed
    by the ``view_box`` framing only (per cloud and view; ``scale`` for ``recede_step``).
    """
    if rig.framing == "view_box":
        return _project_view_box(points_norm, rig, batch, num_clouds, scale)
    height, width = rig.raster_size
    rotations = rig.rotations.to(points_norm.dtype)
    # Each output is one fused (N, 3) @ (3, V) + bias: the rotation, scale and principal point
    # are folded into the matrix, so no (N, V, 3) intermediate is built.
    def bias(value: float) -> Tensor:
        return points_norm.new_tensor(value).expand(rig.num_views)

    depth = torch.addmm(bias(rig.camera_distance), points_norm, -rotations[:, 2, :].T)
    if rig.projection == "orthographic":
        scale_px = rig.ortho_scale_px
        x_px = torch.addmm(bias(width / 2.0), points_norm, scale_px * rotations[:, 0, :].T)
        y_px = torch.addmm(bias(height / 2.0), points_norm, -scale_px * rotations[:, 1, :].T)
    else:
        # Points at or behind the camera centre get a dummy position; they are marked out of frame.
        inv_depth = torch.where(depth > 0, depth, torch.ones_like(depth)).reciprocal_()
        x_px = (points_norm @ (rig.focal_px * rotations[:, 0, :].T)).mul_(inv_depth).add_(width / 2.0)
        y_px = (points_norm @ (-rig.focal_px * rotations[:, 1, :].T)).mul_(inv_depth).add_(height / 2.0)
    return x_px, y_px, depth


def _per_view_bounds(rotated: Tensor, batch: Tensor | None, num_clouds: int) -> tuple[Tensor, Tensor]:
    """``(B, V, 3)`` lowest and highest coordinates of every cloud in every view of ``rotated (N, V, 3)``."""
    if num_clouds == 1 or batch is None:
        low, high = rotated.aminmax(dim=0)
        return low.unsqueeze(0), high.unsqueeze(0)
    index = batch.view(-1, 1, 1).expand_as(rotated)
    shape = (num_clouds, *rotated.shape[1:])
    low = rotated.new_full(shape, math.inf).scatter_reduce(0, index, rotated, "amin")
    high = rotated.new_full(shape, -math.inf).scatter_reduce(0, index, rotated, "amax")
    # Clouds without points (allowed in a batch) get an empty box at the origin.
    empty = ~torch.isfinite(low)
    return low.masked_fill(empty, 0.0), high.masked_fill(empty, 0.0)


@dataclass
class ViewBoxes:
    """Open3D's default camera refitted to every rotated view (``framing="view_box"``), in
    normalised units: ``B`` clouds, ``V`` views, ``N`` points.

    Attributes:
        rotated: ``(N, V, 3)`` every point in every view (``R_v p``).
        centre: ``(B, V, 3)`` the centre of each rotated cloud's axis-aligned box (the look-at point).
        extent: ``(B, V)`` the longest side of that box.
        distance: ``(B, V)`` from the camera to the box centre along the viewing axis (+Z).
        cloud: ``(N,)`` the cloud of each point.
    """

    rotated: Tensor
    centre: Tensor
    extent: Tensor
    distance: Tensor
    cloud: Tensor


def view_boxes(
    points_norm: Tensor, rig: CameraRig, batch: Tensor | None, num_clouds: int, scale: Tensor | None = None
) -> ViewBoxes:
    """The per-view cameras of a ``view_box`` rig (see :mod:`~anomalib_3d.render.cameras`).

    Args:
        points_norm: ``(N, 3)`` normalised points.
        rig: the views.
        batch: ``(N,)`` cloud index (``None`` for one cloud).
        num_clouds: ``B``.
        scale: ``(B,)`` input units per normalised unit (``recede_step`` is in input units).
    """
    rotated = torch.einsum("nc,vdc->nvd", points_norm, rig.rotations.to(points_norm.dtype))
    low, high = _per_view_bounds(rotated, batch, num_clouds)
    centre = (low + high) / 2.0
    extent = (high - low).amax(dim=-1)
    extent = torch.where(extent > 0, extent, torch.ones_like(extent))  # a single point: any finite frame
    distance = rig.zoom * extent / math.tan(math.radians(rig.fov_deg) / 2.0)
    cloud = batch if batch is not None and num_clouds > 1 else torch.zeros(
        points_norm.shape[0], dtype=torch.long, device=points_norm.device)
    if rig.projection == "pinhole" and rig.recede_step > 0:
        distance = distance + _recede(rotated - centre[cloud], distance, rig, cloud, num_clouds, scale)
    return ViewBoxes(rotated, centre, extent, distance, cloud)


def _project_view_box(
    points_norm: Tensor, rig: CameraRig, batch: Tensor | None, num_clouds: int, scale: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Project through the per-view cameras of :func:`view_boxes`."""
    height, width = rig.raster_size
    boxes = view_boxes(points_norm, rig, batch, num_clouds, scale)
    relative = boxes.rotated - boxes.centre[boxes.cloud]
    depth = boxes.distance[boxes.cloud] - relative[..., 2]
    if rig.projection == "orthographic":
        scale_px = (min(height, width) / 2.0) / (rig.zoom * boxes.extent[boxes.cloud])
        return relative[..., 0] * scale_px + width / 2.0, -relative[..., 1] * scale_px + height / 2.0, depth
    inv_depth = torch.where(depth > 0, depth, torch.ones_like(depth)).reciprocal()
    x_px = relative[..., 0] * rig.focal_px * inv_depth + width / 2.0
    y_px = -relative[..., 1] * rig.focal_px * inv_depth + height / 2.0
    return x_px, y_px, depth


def _recede(
    relative: Tensor, distance: Tensor, rig: CameraRig, cloud: Tensor, num_clouds: int, scale: Tensor | None
) -> Tensor:
    """``(B, V)`` how far the camera backs off: the fewest (at least one) ``recede_step`` steps after
    which every point projects into the frame (OpenCV pixel coordinates ``[0, W) x [0, H)``)."""
    height, width = rig.raster_size
    step = relative.new_full((num_clouds,), rig.recede_step)
    if scale is not None:
        step = step / scale.to(relative.dtype).clamp(min=1e-12)  # input units -> normalised units
    focal = rig.focal_px
    # The principal point of the OpenCV intrinsics sits half a pixel left of / above the centre.
    half_x = torch.where(relative[..., 0] > 0, width / 2.0 + 0.5, width / 2.0 - 0.5)
    half_y = torch.where(relative[..., 1] > 0, height / 2.0 - 0.5, height / 2.0 + 0.5)
    needed = torch.maximum(focal * relative[..., 0].abs() / half_x, focal * relative[..., 1].abs() / half_y)
    needed = needed + relative[..., 2]  # the depth each point needs, measured from the box centre
    most = needed.new_full(distance.shape, -math.inf).view(-1)
    slot = (cloud.unsqueeze(1) * distance.shape[1] + torch.arange(distance.shape[1], device=cloud.device)).reshape(-1)
    most = most.scatter_reduce(0, slot, needed.reshape(-1), "amax").view_as(distance)
    steps = torch.ceil((most - distance) / step.unsqueeze(1)).clamp(min=1.0)
    return steps * step.unsqueeze(1)


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
        window_owner: ``(B, V, H_w, W_w)`` the owners at the window size of a ``window_size`` rig
            (what images are shaded from before they are resized), else ``None``.
    """

    pixel_to_point: Tensor
    depth: Tensor
    point_uv: Tensor
    point_depth: Tensor
    visible: Tensor
    window_owner: Tensor | None = None


def rasterize_normalised(
    points_norm: Tensor,
    batch: Tensor | None,
    num_clouds: int,
    rig: CameraRig,
    point_radius_px: float | list[float],
    depth_tolerance: float | list[float],
    *,
    point_shape: PointShape = "disc",
    visibility: Visibility = "tolerance",
    scale: Tensor | None = None,
) -> Raster:
    """Z-buffer of normalised clouds: one ``scatter_reduce`` of the centres, then a min-filter with the footprint.

    Args:
        points_norm: ``(N, 3)`` float points, each cloud already in the rig's normalised frame.
        batch: ``(N,)`` long cloud index (may be ``None`` when ``num_clouds == 1``).
        num_clouds: ``B``.
        rig: the views (with the image size used).
        point_radius_px: disc radius or square half-side (raster pixels), one for all clouds or a list of ``B``.
        depth_tolerance: visibility tolerance, one or a list of ``B`` (``visibility="tolerance"``).
        point_shape: ``"disc"`` or ``"square"``.
        visibility: ``"tolerance"`` or ``"nearest"`` (see the module docstring).
        scale: ``(B,)`` input units per normalised unit (the rig's ``recede_step`` is in input units).
    """
    if point_shape not in POINT_SHAPES:
        msg = f"point_shape must be one of {POINT_SHAPES}, got {point_shape!r}."
        raise ValueError(msg)
    if visibility not in VISIBILITY_RULES:
        msg = f"visibility must be one of {VISIBILITY_RULES}, got {visibility!r}."
        raise ValueError(msg)
    num_points = points_norm.shape[0]
    num_views = rig.num_views
    height, width = rig.raster_size
    device = points_norm.device

    x_px, y_px, depth = _project(points_norm, rig, batch, num_clouds, scale)
    in_frame = (x_px >= 0) & (x_px < width) & (y_px >= 0) & (y_px < height) & (depth > 0)
    depth32 = depth.to(torch.float32)
    radii = point_radius_px if isinstance(point_radius_px, list) else [float(point_radius_px)] * num_clouds
    centre_col, centre_row = x_px.floor().long(), y_px.floor().long()
    if point_shape == "square":
        # An even side is anchored at the nearest pixel corner: half a pixel further, then floor.
        shift = torch.tensor([0.5 * (square_side(r) % 2 == 0) for r in radii], dtype=x_px.dtype, device=device)
        shift = shift.index_select(0, batch).unsqueeze(1) if num_clouds > 1 else shift[:1]
        anchor_col, anchor_row = (x_px + shift).floor().long(), (y_px + shift).floor().long()
    else:
        anchor_col, anchor_row = centre_col, centre_row

    # Every fragment of a point carries the same key (flat, camera-facing footprint), so the
    # z-buffer of footprints equals a min-filter ("erosion" with the footprint as structuring
    # element) of the z-buffer of anchors: one scatter of N*V anchors plus shifted minima over the
    # images replaces N*V*K fragments.
    spans = _spans(radii, point_shape)
    reach = max(max(-low, high) for low, high in spans) if spans else 0
    padded_h, padded_w = height + 2 * reach, width + 2 * reach
    view_size = padded_h * padded_w
    num_slots = num_clouds * num_views
    # Each (cloud, view) image is padded by the footprint's reach so shifted reads never wrap;
    # points outside the frame go to one extra "trash" image (never read back), so no
    # data-dependent filtering is needed and their keys need not be meaningful.
    slot_start = torch.arange(num_views, device=device) * view_size + (reach * padded_w + reach)
    if num_clouds > 1:
        slot_start = (batch * (num_views * view_size)).unsqueeze(1) + slot_start
    trash = num_slots * view_size + reach * padded_w + reach
    # A centre in the frame puts the anchor at most one pixel outside it, inside the padding.
    anchor_lin = torch.where(in_frame, anchor_row * padded_w + anchor_col + slot_start, trash)

    point_index = torch.arange(num_points, device=device, dtype=torch.int32).unsqueeze(1)
    keys = _pack_keys(depth32, point_index)

    buffer_size = (num_slots + 1) * view_size
    anchor_keys = torch.full((buffer_size,), _EMPTY_KEY, dtype=torch.int64, device=device)
    anchor_keys.scatter_reduce_(0, anchor_lin.reshape(-1), keys.reshape(-1), "amin", include_self=True)
    source = anchor_keys.view(num_slots + 1, padded_h, padded_w)
    zbuffer = anchor_keys.clone()  # same padded layout
    interior = zbuffer.view(num_slots + 1, padded_h, padded_w)[:, reach : reach + height, reach : reach + width]
    if point_shape == "square":
        _erode_square(source, interior, spans, num_views, reach, height, width)
    else:
        _erode_disc(source, interior, radii, num_views, reach, height, width)

    image_keys = interior[:num_slots].reshape(num_clouds, num_views, height, width)
    image_depth, image_owner = _unpack_keys(image_keys)
    window_owner = None
    if rig.window_size is None:
        point_uv = torch.stack([centre_col, centre_row], dim=-1)
        seen_in_frame = in_frame
    else:
        point_uv, seen_in_frame = _output_pixels(x_px, y_px, depth, rig)
        window_owner = image_owner.to(torch.long)
        image_owner, image_depth = _sample_window(image_owner, rig), _sample_window(image_depth, rig)

    if visibility == "nearest":
        visible = _nearest_centre(point_uv, seen_in_frame, keys, batch, num_clouds, rig)
    else:
        # Visible: within tolerance of the owner of the centre pixel (the owner itself included,
        # as its depth equals the pixel's depth).
        centre_lin = torch.where(in_frame, centre_row * padded_w + centre_col + slot_start, trash)
        owner_depth, _ = _unpack_keys(zbuffer.index_select(0, centre_lin.reshape(-1)).view(num_points, num_views))
        if isinstance(depth_tolerance, list):
            per_cloud = torch.tensor(depth_tolerance, dtype=torch.float32, device=device)
            tolerance = per_cloud.index_select(0, batch).unsqueeze(1)
        else:
            tolerance = depth_tolerance
        visible = in_frame & (depth32 <= owner_depth + tolerance)
    return Raster(
        pixel_to_point=image_owner.to(torch.long),
        depth=image_depth.contiguous(),
        point_uv=point_uv,
        point_depth=depth32,
        visible=visible,
        window_owner=window_owner,
    )


def _spans(radii: list[float], point_shape: PointShape) -> list[tuple[int, int]]:
    """Per cloud, the offsets ``lo .. hi`` its footprint reaches along each axis."""
    if point_shape == "square":
        return [_square_span(square_side(r)) for r in radii]
    return [(-int(math.floor(r)), int(math.floor(r))) for r in radii]


def _erode_disc(source: Tensor, interior: Tensor, radii: list[float], num_views: int, reach: int, height: int,
                width: int) -> None:
    """Min-filter of the anchor keys with each cloud's disc, in place on ``interior``."""
    largest = max(radii) if radii else 0.0
    offsets = disc_offsets(largest)  # stays on the CPU: only read as Python ints
    # Clouds with a smaller disc skip the offsets outside it (per-cloud radii: a cloud renders
    # exactly as it would alone, whatever else is in the batch).
    slot_radius_sq = torch.tensor([r * r for r in radii for _ in range(num_views)] + [largest**2],
                                  device=source.device)
    for dx, dy in offsets[1:].tolist():
        shifted = source[:, reach + dy : reach + dy + height, reach + dx : reach + dx + width]
        reached = slot_radius_sq >= dx * dx + dy * dy - 1e-9
        if bool(reached.all()):
            torch.minimum(interior, shifted, out=interior)
        else:
            blocked = ~reached.view(-1, 1, 1)
            torch.minimum(interior, shifted.masked_fill(blocked, _EMPTY_KEY), out=interior)


def _erode_square(source: Tensor, interior: Tensor, spans: list[tuple[int, int]], num_views: int, reach: int,
                  height: int, width: int) -> None:
    """Min-filter of the anchor keys with each cloud's square: a pass along rows, then along columns."""
    low = min(lo for lo, _ in spans)
    high = max(hi for _, hi in spans)
    slot_low = torch.tensor([lo for lo, _ in spans for _ in range(num_views)] + [low], device=source.device)
    slot_high = torch.tensor([hi for _, hi in spans for _ in range(num_views)] + [high], device=source.device)
    # Rows first over the full padded height, so the column pass can read shifted rows. Pixel x
    # is covered by the anchors at x - dx for the offsets dx its cloud's square reaches.
    rows = source[:, :, reach : reach + width].clone()
    for dx in range(low, high + 1):
        if dx == 0:
            continue
        shifted = source[:, :, reach - dx : reach - dx + width]
        reached = (slot_low <= dx) & (dx <= slot_high)
        if not bool(reached.all()):
            shifted = shifted.masked_fill(~reached.view(-1, 1, 1), _EMPTY_KEY)
        torch.minimum(rows, shifted, out=rows)
    interior.copy_(rows[:, reach : reach + height])
    for dy in range(low, high + 1):
        if dy == 0:
            continue
        shifted = rows[:, reach - dy : reach - dy + height]
        reached = (slot_low <= dy) & (dy <= slot_high)
        if not bool(reached.all()):
            shifted = shifted.masked_fill(~reached.view(-1, 1, 1), _EMPTY_KEY)
        torch.minimum(interior, shifted, out=interior)


def _output_pixels(x_px: Tensor, y_px: Tensor, depth: Tensor, rig: CameraRig) -> tuple[Tensor, Tensor]:
    """``(N, V, 2)`` output pixel of every point of a window rig (the authors' correspondence:
    OpenCV coordinates scaled to the output size, truncated and clipped) and ``(N, V)`` whether it counts."""
    (height, width), (window_h, window_w) = rig.image_size, rig.raster_size
    col = ((x_px - 0.5) * (width / window_w)).floor().clamp(0, width - 1).long()
    row = ((y_px - 0.5) * (height / window_h)).floor().clamp(0, height - 1).long()
    return torch.stack([col, row], dim=-1), depth > 0


def _sample_window(maps: Tensor, rig: CameraRig) -> Tensor:
    """``(B, V, H, W)`` output-size maps read from ``(B, V, H_w, W_w)`` window maps at the window
    pixel under each output pixel's centre."""
    (height, width), (window_h, window_w) = rig.image_size, rig.raster_size
    rows = ((torch.arange(height, device=maps.device) + 0.5) * (window_h / height)).long().clamp(max=window_h - 1)
    cols = ((torch.arange(width, device=maps.device) + 0.5) * (window_w / width)).long().clamp(max=window_w - 1)
    return maps.index_select(2, rows).index_select(3, cols)


def _nearest_centre(point_uv: Tensor, counts: Tensor, keys: Tensor, batch: Tensor | None, num_clouds: int,
                    rig: CameraRig) -> Tensor:
    """``(N, V)`` the authors' rule: a point is visible iff it is the nearest of the points whose
    centre falls in its output pixel (ties: the lower index)."""
    num_points, num_views = keys.shape
    height, width = rig.image_size
    view_index = torch.arange(num_views, device=keys.device)
    cloud = batch.unsqueeze(1) if batch is not None and num_clouds > 1 else 0
    slot = (cloud * num_views + view_index) * (height * width)
    pixel = point_uv[..., 1] * width + point_uv[..., 0] + slot
    trash = num_clouds * num_views * height * width
    pixel = torch.where(counts, pixel, trash).reshape(-1)
    nearest = torch.full((trash + 1,), _EMPTY_KEY, dtype=torch.int64, device=keys.device)
    nearest.scatter_reduce_(0, pixel, keys.reshape(-1), "amin", include_self=True)
    return counts & (nearest.index_select(0, pixel).view(num_points, num_views) == keys)


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
