"""Z-buffered point splatting with exact point <-> pixel correspondence.

Every point of every cloud is projected into every view of a :class:`CameraRig` and drawn as a
flat disc of ``point_radius_px`` pixels around the pixel its centre falls in (or, with
``point_shape="square"``, a square of side ``2 * point_radius_px``, as Open3D draws points). Each
pixel belongs to exactly one point: the one with the smallest depth among the footprints covering
it (ties go to the lower point index). Images, depth maps, value maps and ground-truth masks are
all read from that one ownership map (``pixel_to_point``), so they align pixel for pixel. A rig
with a ``window_size`` is rasterised at that size; its images are shaded there and resized to the
rig's ``image_size`` with an antialiased bicubic filter, and the other maps read the window pixel
under each output pixel's centre.

The z-buffer itself, and the rule deciding which points are *visible*, are in
:mod:`~anomalib_3d.render.zbuffer`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from anomalib_3d.errors import (
    EmptyPointCloudError,
    GroundTruthMismatchError,
    InvalidPointsError,
)
from anomalib_3d.render.cameras import CameraRig, fit_unit_sphere, pointad_rig
from anomalib_3d.render.zbuffer import (
    default_depth_tolerance,
    footprint_offsets,
    rasterize_normalised,
)

__all__ = [
    "RenderOutput",
    "open3d_phong",
    "rasterize_points",
    "render_mask",
    "render_mask_like",
    "render_points",
]


@dataclass
class RenderOutput:
    """Everything a render produces, plus what is needed to map pixel maps back to points.

    ``B`` clouds, ``V`` views, ``N`` points in total, renders of ``H x W`` pixels.

    Attributes:
        images: ``(B, V, 3, H, W)`` float in ``[0, 1]``; ``None`` for geometry-only rasterisation.
        depth: ``(B, V, H, W)`` float depth of the owning point (normalised units), ``inf`` on background.
        pixel_to_point: ``(B, V, H, W)`` long global index (into the input points) of the point
            owning each pixel, ``-1`` on background.
        point_uv: ``(N, V, 2)`` long pixel ``(u = column, v = row)`` each point's centre projects to.
            May lie outside ``[0, W) x [0, H)`` only when ``normalize=False`` was used.
        visible: ``(N, V)`` bool, see the module docstring for the rule.
        point_depth: ``(N, V)`` float depth of each point's centre in each view.
        values: ``(B, V, C, H, W)`` (or ``(B, V, H, W)`` for 1-D values) splatted extra channels, or ``None``.
        points: ``(N, 3)`` the input coordinates (not normalised).
        batch: ``(N,)`` long cloud index of each point.
        center: ``(B, 3)`` and ``scale``: ``(B,)`` the per-cloud normalisation, ``(p - center) / scale``.
        rig: the camera rig, with the image size actually used.
        point_radius_px: disc radius (or square half-side) used for splatting: a float, or a list
            of ``B`` per-cloud values.
        depth_tolerance: tolerance used for ``visible`` (a float, or a list of ``B`` per-cloud
            values; unused with ``visibility="nearest"``).
        point_shape: ``"disc"`` or ``"square"``.
        visibility: ``"tolerance"`` or ``"nearest"`` (:mod:`~anomalib_3d.render.zbuffer`).
    """

    images: Tensor | None
    depth: Tensor
    pixel_to_point: Tensor
    point_uv: Tensor
    visible: Tensor
    point_depth: Tensor
    values: Tensor | None
    points: Tensor
    batch: Tensor
    center: Tensor
    scale: Tensor
    rig: CameraRig
    point_radius_px: float | list[float]
    depth_tolerance: float | list[float]
    point_shape: str = "disc"
    visibility: str = "tolerance"

    @property
    def num_clouds(self) -> int:
        """``B``."""
        return int(self.depth.shape[0])

    @property
    def num_views(self) -> int:
        """``V``."""
        return int(self.depth.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return (int(self.depth.shape[2]), int(self.depth.shape[3]))


# ----------------------------------------------------------------------------------------------
# input checks


def _check_points(points: Tensor, batch: Tensor | None, num_clouds: int | None) -> tuple[Tensor, int]:
    if not isinstance(points, Tensor):
        msg = f"points must be a torch.Tensor of shape (N, 3), got {type(points).__name__}."
        raise InvalidPointsError(msg, fix="Convert with torch.as_tensor(points, dtype=torch.float32).")
    if points.ndim != 2 or points.shape[1] != 3:
        msg = f"points must have shape (N, 3), got {tuple(points.shape)}."
        raise InvalidPointsError(msg, fix="Pass xyz coordinates only, one row per point.")
    if not points.is_floating_point():
        msg = f"points must be a floating tensor, got dtype {points.dtype}."
        raise InvalidPointsError(msg, fix="Cast with points.float().")
    if points.shape[0] == 0:
        msg = "points is empty (N = 0); there is nothing to render."
        raise EmptyPointCloudError(msg, fix="Pass at least one point.")
    if points.shape[0] >= 2**31:
        msg = f"at most 2**31 - 1 points can be rendered at once, got {points.shape[0]}."
        raise InvalidPointsError(msg, fix="Render the clouds in several calls.")
    if not bool(torch.isfinite(points).all()):
        bad = int((~torch.isfinite(points).all(dim=1)).sum())
        msg = f"points contains {bad} row(s) with NaN/inf coordinates."
        raise InvalidPointsError(msg, fix="Remove or repair non-finite points before rendering.")
    if batch is None:
        if num_clouds not in (None, 1):
            msg = f"num_clouds={num_clouds} given without a batch vector."
            raise InvalidPointsError(msg, fix="Pass batch (N,) with the cloud index of every point.")
        return torch.zeros(points.shape[0], dtype=torch.long, device=points.device), 1
    if not isinstance(batch, Tensor) or batch.shape != (points.shape[0],):
        shape = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
        msg = f"batch must have shape ({points.shape[0]},) to match points, got {shape}."
        raise InvalidPointsError(msg, fix="Pass one cloud index per point.")
    if batch.dtype.is_floating_point or batch.dtype == torch.bool:
        msg = f"batch must be an integer tensor, got dtype {batch.dtype}."
        raise InvalidPointsError(msg, fix="Cast with batch.long().")
    batch = batch.to(device=points.device, dtype=torch.long)
    low, high = int(batch.min()), int(batch.max())
    if low < 0:
        raise InvalidPointsError("batch contains negative cloud indices.", fix="Number clouds 0 .. B-1.")
    if num_clouds is None:
        num_clouds = high + 1
    elif high >= num_clouds:
        msg = f"batch refers to cloud {high} but num_clouds={num_clouds}."
        raise InvalidPointsError(msg, fix="Raise num_clouds or fix the batch vector.")
    return batch, int(num_clouds)


def _check_per_point(name: str, tensor: Tensor | None, num_points: int, width: int | None) -> None:
    if tensor is None:
        return
    if not isinstance(tensor, Tensor):
        msg = f"{name} must be a torch.Tensor, got {type(tensor).__name__}."
        raise InvalidPointsError(msg)
    ok = tensor.shape[:1] == (num_points,) and (
        (width is None and tensor.ndim in (1, 2)) or (width is not None and tensor.shape == (num_points, width))
    )
    if not ok:
        expected = f"({num_points}, {width})" if width is not None else f"({num_points},) or ({num_points}, C)"
        msg = f"{name} must have shape {expected}, got {tuple(tensor.shape)}."
        raise InvalidPointsError(msg, fix=f"Pass one {name} row per point.")
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        msg = f"{name} contains NaN/inf."
        raise InvalidPointsError(msg, fix=f"Repair {name} before rendering.")


def _resolve_rig(rig: CameraRig | None, image_size: int | Sequence[int] | None, device: torch.device) -> CameraRig:
    if rig is None:
        rig = pointad_rig()
    if not isinstance(rig, CameraRig):
        msg = f"rig must be a CameraRig, got {type(rig).__name__}."
        raise TypeError(msg)
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        rig = dataclasses.replace(rig, image_size=size)
    if rig.rotations.device != device:
        rig = rig.to(device)
    return rig


def _radius_list(
    point_radius_px: float | Sequence[float] | Tensor, num_clouds: int, point_shape: str = "disc"
) -> float | list[float]:
    """A float (one radius for all clouds) or a list of ``num_clouds`` per-cloud radii, validated."""
    if isinstance(point_radius_px, Tensor):
        point_radius_px = point_radius_px.detach().cpu().reshape(-1).tolist()
        if len(point_radius_px) == 1:
            point_radius_px = point_radius_px[0]
    if isinstance(point_radius_px, (list, tuple)):
        radii = [float(r) for r in point_radius_px]
        if len(radii) != num_clouds:
            msg = f"point_radius_px has {len(radii)} per-cloud values for {num_clouds} clouds."
            raise ValueError(msg)
        for r in radii:
            footprint_offsets(r, point_shape)  # validates
        return radii[0] if radii and all(r == radii[0] for r in radii) else radii
    footprint_offsets(float(point_radius_px), point_shape)
    return float(point_radius_px)


def _splat_per_point(per_point: Tensor, pixel_to_point: Tensor, background: float) -> Tensor:
    """Copy per-point rows ``(N,)``/``(N, C)`` onto pixels: ``(B, V, H, W)``/``(B, V, C, H, W)``."""
    hit = pixel_to_point >= 0
    owner = pixel_to_point.clamp(min=0).reshape(-1)
    gathered = per_point.index_select(0, owner).view(*pixel_to_point.shape, *per_point.shape[1:])
    if per_point.ndim == 1:
        return torch.where(hit, gathered, torch.full_like(gathered, background))
    gathered = torch.where(hit.unsqueeze(-1), gathered, torch.full_like(gathered, background))
    return gathered.permute(0, 1, 4, 2, 3).contiguous()


# ----------------------------------------------------------------------------------------------
# public API


def _rasterize(
    points: Tensor,
    batch: Tensor | None,
    rig: CameraRig | None,
    image_size: int | Sequence[int] | None,
    point_radius_px: float | Sequence[float] | Tensor,
    depth_tolerance: float | None,
    normalize: bool,
    num_clouds: int | None,
    point_shape: str,
    visibility: str,
) -> tuple[RenderOutput, Tensor | None]:
    """The render output without images, and the window-size owner map of a ``window_size`` rig.

    Checks the inputs, resolves the rig, the per-cloud radii and depth tolerances, normalises the
    clouds into the unit sphere (``normalize``) and z-buffers them (:func:`rasterize_normalised`).
    """
    batch, num_clouds = _check_points(points, batch, num_clouds)
    rig = _resolve_rig(rig, image_size, points.device)
    radius = _radius_list(point_radius_px, num_clouds, point_shape)
    if depth_tolerance is None:
        if isinstance(radius, list):
            depth_tolerance = [default_depth_tolerance(rig, r) for r in radius]
        else:
            depth_tolerance = default_depth_tolerance(rig, radius)
    for value in depth_tolerance if isinstance(depth_tolerance, list) else [depth_tolerance]:
        if not math.isfinite(value) or value < 0:
            msg = f"depth_tolerance must be a finite number >= 0 (or None), got {depth_tolerance!r}."
            raise ValueError(msg)
    if normalize:
        points_norm, center, scale = fit_unit_sphere(points, batch, num_clouds)
    else:
        points_norm = points
        center = points.new_zeros(num_clouds, 3)
        scale = points.new_ones(num_clouds)
    raster = rasterize_normalised(points_norm, batch, num_clouds, rig, radius, depth_tolerance,
                                  point_shape=point_shape, visibility=visibility, scale=scale)
    output = RenderOutput(
        images=None,
        depth=raster.depth,
        pixel_to_point=raster.pixel_to_point,
        point_uv=raster.point_uv,
        visible=raster.visible,
        point_depth=raster.point_depth,
        values=None,
        points=points,
        batch=batch,
        center=center,
        scale=scale,
        rig=rig,
        point_radius_px=radius,
        depth_tolerance=depth_tolerance,
        point_shape=point_shape,
        visibility=visibility,
    )
    return output, raster.window_owner


def rasterize_points(
    points: Tensor,
    batch: Tensor | None = None,
    rig: CameraRig | None = None,
    *,
    image_size: int | Sequence[int] | None = None,
    point_radius_px: float | Sequence[float] | Tensor = 2.0,
    depth_tolerance: float | None = None,
    normalize: bool = True,
    num_clouds: int | None = None,
    point_shape: str = "disc",
    visibility: str = "tolerance",
) -> RenderOutput:
    """Geometry only: z-buffer, correspondence and visibility, no shading (``images`` is ``None``).

    Same arguments as :func:`render_points`. Use it when only ``pixel_to_point``/``visible`` are
    needed (e.g. to splat masks or to gather maps computed elsewhere).
    """
    output, _ = _rasterize(points, batch, rig, image_size, point_radius_px, depth_tolerance, normalize, num_clouds,
                           point_shape, visibility)
    return output


def render_points(
    points: Tensor,
    batch: Tensor | None = None,
    rig: CameraRig | None = None,
    *,
    image_size: int | Sequence[int] | None = None,
    point_radius_px: float | Sequence[float] | Tensor = 2.0,
    colors: Tensor | None = None,
    normals: Tensor | None = None,
    light_dir: Sequence[float] = (-0.4, 0.5, 1.0),
    ambient: float = 0.35,
    base_color: Sequence[float] = (0.8, 0.8, 0.8),
    background: float | Sequence[float] = 1.0,
    shading: bool = True,
    normal_k: int = 30,
    values: Tensor | None = None,
    values_background: float = 0.0,
    depth_tolerance: float | None = None,
    normalize: bool = True,
    num_clouds: int | None = None,
    point_shape: str = "disc",
    visibility: str = "tolerance",
    lighting: str = "lambert",
) -> RenderOutput:
    """Render ``B`` point clouds from every view of ``rig`` with exact point <-> pixel correspondence.

    Args:
        points: ``(N, 3)`` float coordinates of all clouds, concatenated.
        batch: ``(N,)`` long cloud index of each point (sorted, PyG style); ``None`` for one cloud.
        rig: the views; ``None`` uses :func:`pointad_rig` (9 views about X, 336 px, orthographic).
        image_size: ``int`` or ``(H, W)`` overriding ``rig.image_size``; ``None`` keeps the rig's.
        point_radius_px: each point is drawn as a disc of this radius (raster pixels) around its
            centre pixel (a square of twice this side with ``point_shape="square"``); one value, or
            ``B`` per-cloud values (each cloud then renders exactly as alone).
        colors: ``(N, 3)`` per-point base colours in ``[0, 1]``; ``None`` uses ``base_color``.
        normals: ``(N, 3)`` per-point normals (any orientation; they are flipped to face the
            camera). ``None`` estimates them with :func:`anomalib_3d.ops.estimate_normals`
            (``k = normal_k``) when ``shading`` is on.
        light_dir: direction *towards* the light in camera coordinates (x right, y up, z to the viewer).
        ambient: ambient term; pixel colour is ``color * (ambient + (1 - ambient) * max(0, n . l))``.
        base_color: colour of uncoloured points.
        background: background intensity (scalar or RGB), white by default.
        shading: ``False`` draws flat colours (no normals needed).
        normal_k: neighbours for normal estimation.
        values: ``(N, C)`` or ``(N,)`` extra per-point channels splatted with the same z-buffer.
        values_background: value of background pixels in ``values``.
        depth_tolerance: visibility tolerance in normalised depth units, see the module
            docstring; ``None`` uses :func:`default_depth_tolerance` (of each cloud's radius).
        normalize: normalise each cloud into the unit sphere first (recommended; ``False`` expects
            clouds already normalised, points outside the frame are then never visible).
        num_clouds: ``B`` when known (avoids a device sync and allows trailing empty clouds).
        point_shape: ``"disc"`` or ``"square"`` (Open3D's points; side ``2 * point_radius_px``).
        visibility: ``"tolerance"`` (the depth tolerance above) or ``"nearest"`` (only the nearest
            centre per output pixel: the PointAD authors' rule), see :mod:`~anomalib_3d.render.zbuffer`.
        lighting: ``"lambert"`` (``light_dir``, ``ambient``) or ``"open3d"``: the Phong lighting of
            Open3D's Visualizer (:func:`open3d_phong`; ``light_dir`` and ``ambient`` unused).

    Returns:
        :class:`RenderOutput` with ``images (B, V, 3, H, W)``, ``depth``, ``pixel_to_point``,
        ``point_uv``, ``visible`` and ``values (B, V, C, H, W)`` (``(B, V, H, W)`` for 1-D values).

    Raises:
        InvalidPointsError: wrong shapes/dtypes or NaN/inf in points, batch, colors, normals or values.
        EmptyPointCloudError: ``N == 0``.
    """
    num_points = points.shape[0] if isinstance(points, Tensor) and points.ndim == 2 else -1
    _check_per_point("colors", colors, num_points, 3)
    _check_per_point("normals", normals, num_points, 3)
    _check_per_point("values", values, num_points, None)
    if not 0.0 <= ambient <= 1.0:
        msg = f"ambient must lie in [0, 1], got {ambient}."
        raise ValueError(msg)

    output, window_owner = _rasterize(points, batch, rig, image_size, point_radius_px, depth_tolerance, normalize,
                                      num_clouds, point_shape, visibility)
    dtype = points.dtype
    pixel_to_point = output.pixel_to_point if window_owner is None else window_owner
    hit = pixel_to_point >= 0
    owner = pixel_to_point.clamp(min=0)

    if shading:
        if normals is None:
            normals = _estimate_normals(points, output.batch if batch is not None else None, normal_k)
        # Intensity per (point, view) is cheap (one small matmul); pixels then read their owner's.
        view = torch.arange(output.num_views, device=owner.device).view(1, -1, 1, 1)
        lookup = (owner * output.num_views + view).reshape(-1)

        def per_pixel(per_point_view: Tensor) -> Tensor:
            return per_point_view.reshape(-1).index_select(0, lookup).view_as(owner).unsqueeze(2)

        if lighting == "open3d":
            diffuse, specular = open3d_phong(normals.to(dtype), output)
            intensity, highlight = per_pixel(diffuse), per_pixel(specular)
        elif lighting == "lambert":
            intensity, highlight = per_pixel(_lambert(normals.to(dtype), output, light_dir, ambient)), None
        else:
            msg = f"lighting must be 'lambert' or 'open3d', got {lighting!r}."
            raise ValueError(msg)
    else:
        intensity = highlight = None

    # Build images directly as (B, V, 3, H, W): no channels-last intermediate to transpose.
    if colors is not None:
        albedo = colors.to(dtype).clamp(0.0, 1.0).T.contiguous()  # (3, N)
        rgb = albedo.index_select(1, owner.reshape(-1)).view(3, *owner.shape).movedim(0, 2)
    else:
        rgb = points.new_tensor(base_color).clamp(0.0, 1.0).view(1, 1, 3, 1, 1)
    if intensity is not None:
        rgb = rgb * intensity
    if highlight is not None:
        rgb = rgb + highlight
    bg = points.new_tensor(background) if not isinstance(background, Tensor) else background.to(points)
    bg = bg.expand(3).view(1, 1, 3, 1, 1)
    rgb = torch.where(hit.unsqueeze(2), rgb, bg).clamp_(0.0, 1.0)
    if window_owner is not None:
        rgb = _resize_antialiased(rgb, output.rig.image_size)
    output.images = rgb.contiguous()
    if values is not None:
        output.values = _splat_per_point(values, output.pixel_to_point, values_background)
    return output


def _resize_antialiased(images: Tensor, size: tuple[int, int]) -> Tensor:
    """``(B, V, 3, H_w, W_w)`` window images resized to ``size`` with an antialiased bicubic
    filter (the one PIL's ``BICUBIC`` resize uses), clamped to ``[0, 1]``."""
    lead = images.shape[:2]
    flat = images.reshape(-1, *images.shape[2:])
    resized = F.interpolate(flat, size=size, mode="bicubic", align_corners=False, antialias=True)
    return resized.clamp_(0.0, 1.0).reshape(*lead, *resized.shape[1:])


def _estimate_normals(points: Tensor, batch: Tensor | None, k: int) -> Tensor:
    """PCA normals from :func:`anomalib_3d.ops.estimate_normals`, ``k`` capped by the smallest cloud.

    Clouds of fewer than 3 points have no defined normal: all normals are then zero, which
    shades every point with the ambient term only.
    """
    from anomalib_3d.ops import estimate_normals  # lazy: ops is optional at import time

    if batch is None:
        smallest = points.shape[0]
    else:
        # Clouds absent from the batch vector have no queries and do not limit k.
        counts = torch.bincount(batch)
        smallest = int(counts[counts > 0].min())
    k = min(int(k), smallest)
    if k < 3:
        return torch.zeros_like(points)
    normals, _ = estimate_normals(points, k=k, batch=batch)
    return normals


def _lambert(normals: Tensor, output: RenderOutput, light_dir: Sequence[float], ambient: float) -> Tensor:
    """Lambert intensity ``(N, V)`` of every point in every view, normals flipped towards the camera.

    Rotations preserve dot products, so instead of rotating every normal into every view the
    light and viewing directions are rotated back into object space: ``n_cam . l = n . (R^T l)``.
    """
    rig = output.rig
    rotations = rig.rotations.to(normals.dtype)  # (V, 3, 3)
    unit = F.normalize(normals, dim=1)
    light = F.normalize(normals.new_tensor(light_dir), dim=0)
    light_in_object = rotations.transpose(1, 2) @ light  # (V, 3): R^T l
    towards_camera_axis = rotations[:, 2, :]  # (V, 3): R^T e_z
    lit = unit @ light_in_object.T  # (N, V)
    facing = unit @ towards_camera_axis.T  # (N, V): n_cam . e_z
    if rig.projection == "pinhole" and rig.framing == "sphere":
        # Towards the camera centre from the point: (0, 0, d) - R p, so
        # n_cam . (d e_z - R p) = d (n . R^T e_z) - n . p.
        batch = output.batch
        points_norm = (output.points - output.center[batch]) / output.scale[batch].unsqueeze(1)
        facing = facing * rig.camera_distance - (unit * points_norm.to(unit.dtype)).sum(1, keepdim=True)
    lit = torch.where(facing < 0, -lit, lit)
    return lit.clamp_(min=0.0).mul_(1.0 - ambient).add_(ambient)


#: Open3D's default lights (``RenderOption``): two at ``+2`` and two at ``-2`` longest box sides
#: along the viewing axis from the look-at point, diffuse 0.66, specular 0.2, shininess 100, no
#: ambient light. The pairs coincide, so each position counts twice.
_OPEN3D_LIGHT_OFFSETS = (2.0, -2.0)
_OPEN3D_DIFFUSE, _OPEN3D_SPECULAR, _OPEN3D_SHININESS = 2 * 0.66, 2 * 0.2, 100.0


def open3d_phong(normals: Tensor, output: RenderOutput) -> tuple[Tensor, Tensor]:
    """Open3D Visualizer's Phong lighting of every point in every view: ``(N, V)`` diffuse factor
    (multiplies the colour) and ``(N, V)`` specular term (added), as its shaders compute them.

    Lights sit on the viewing axis through each view's look-at point (see
    :data:`_OPEN3D_LIGHT_OFFSETS`); ``cos`` terms are clamped to ``[0, 1]``, the eye is the view's
    camera. Normals are turned towards the camera first (Open3D keeps the arbitrary sign of its
    PCA normals; with lights in front of and behind the object the diffuse term barely depends on it).
    Needs a ``view_box`` rig (Open3D's camera); other rigs use a camera at ``camera_distance``
    straight in front of the unit sphere.
    """
    from anomalib_3d.render.zbuffer import view_boxes

    rig = output.rig
    batch = output.batch
    points_norm = (output.points - output.center[batch]) / output.scale[batch].unsqueeze(1)
    points_norm = points_norm.to(normals.dtype)
    rotations = rig.rotations.to(normals.dtype)
    unit = torch.einsum("nc,vdc->nvd", F.normalize(normals, dim=1), rotations)
    if rig.framing == "view_box":
        boxes = view_boxes(points_norm, rig, batch, output.num_clouds, output.scale)
        position, centre = boxes.rotated, boxes.centre[boxes.cloud]
        extent, distance = boxes.extent[boxes.cloud], boxes.distance[boxes.cloud]
    else:
        position = torch.einsum("nc,vdc->nvd", points_norm, rotations)
        centre = torch.zeros_like(position)
        extent = distance = torch.full(position.shape[:2], 2.0, dtype=position.dtype, device=position.device)
        distance = distance * 0 + rig.camera_distance
    axis = torch.zeros_like(position)
    axis[..., 2] = 1.0
    eye = F.normalize(centre + axis * distance.unsqueeze(-1) - position, dim=-1)
    unit = torch.where((unit * eye).sum(-1, keepdim=True) < 0, -unit, unit)
    diffuse = torch.zeros_like(distance)
    specular = torch.zeros_like(distance)
    for offset in _OPEN3D_LIGHT_OFFSETS:
        light = F.normalize(centre + axis * (offset * extent).unsqueeze(-1) - position, dim=-1)
        facing = (unit * light).sum(-1)
        diffuse += facing.clamp(0.0, 1.0)
        reflected = 2.0 * facing.unsqueeze(-1) * unit - light
        specular += (reflected * eye).sum(-1).clamp(0.0, 1.0).pow(_OPEN3D_SHININESS)
    return diffuse * _OPEN3D_DIFFUSE, specular * _OPEN3D_SPECULAR


def render_mask_like(point_labels: Tensor, output: RenderOutput) -> Tensor:
    """Splat per-point ground truth through an existing render's z-buffer.

    Args:
        point_labels: ``(N,)`` bool/int/float labels; a point is anomalous when its label is > 0.5
            (``True``/1 for anomalous).
        output: a :class:`RenderOutput` of the same points.

    Returns:
        ``(B, V, H, W)`` float mask, 1 where the pixel's owner is anomalous, 0 elsewhere (background
        included). Aligns with ``output.images`` by construction.
    """
    num_points = output.points.shape[0]
    if not isinstance(point_labels, Tensor) or point_labels.shape != (num_points,):
        shape = tuple(point_labels.shape) if isinstance(point_labels, Tensor) else type(point_labels).__name__
        msg = f"point_labels must have shape ({num_points},), one label per point, got {shape}."
        raise GroundTruthMismatchError(msg, fix="Pass the per-point labels of exactly the rendered points.")
    anomalous = (point_labels.to(output.depth.device).float() > 0.5).float()
    if point_labels.is_floating_point() and not bool(torch.isfinite(point_labels).all()):
        raise GroundTruthMismatchError("point_labels contains NaN/inf.", fix="Labels must be 0/1.")
    return _splat_per_point(anomalous, output.pixel_to_point, 0.0)


def render_mask(
    point_labels: Tensor,
    points: Tensor,
    batch: Tensor | None = None,
    rig: CameraRig | None = None,
    *,
    image_size: int | Sequence[int] | None = None,
    point_radius_px: float = 2.0,
    normalize: bool = True,
    num_clouds: int | None = None,
) -> Tensor:
    """Render point-level ground truth into pixel masks with the image renderer's geometry.

    Anomalous points (label > 0.5) are white (1) on black (0). With the same ``points``, ``batch``,
    ``rig``, ``image_size``, ``point_radius_px`` and ``normalize`` as :func:`render_points`, the
    masks align exactly with the images (same deterministic z-buffer).

    Args:
        point_labels: ``(N,)`` per-point labels.
        points: ``(N, 3)`` float coordinates.
        batch: ``(N,)`` cloud index per point, or ``None``.
        rig: views (``None``: :func:`pointad_rig`).

    Returns:
        ``(B, V, H, W)`` float mask in ``{0, 1}``.

    Raises:
        GroundTruthMismatchError: ``point_labels`` does not have one entry per point.
    """
    if isinstance(points, Tensor) and points.ndim == 2 and isinstance(point_labels, Tensor):
        if point_labels.shape != (points.shape[0],):
            msg = f"point_labels has shape {tuple(point_labels.shape)} but there are {points.shape[0]} points."
            raise GroundTruthMismatchError(msg, fix="Pass exactly one label per point.")
    output = rasterize_points(
        points,
        batch,
        rig,
        image_size=image_size,
        point_radius_px=point_radius_px,
        normalize=normalize,
        num_clouds=num_clouds,
    )
    return render_mask_like(point_labels, output)
