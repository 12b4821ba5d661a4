"""Voxel grids for scene models: back-projection of view features and differentiable volume rendering.

Conventions (shared with :mod:`anomalib_3d.data.scenes`):

* World coordinates in metres, ``z`` up; cameras are pinhole with intrinsics ``K (3, 3)`` and
  **world-to-camera** poses ``T (4, 4)`` in the OpenCV convention (camera ``x`` right, ``y``
  down, ``z`` forward): ``p_cam = T[:3, :3] @ p_world + T[:3, 3]``, ``(x_px, y_px) = (K p_cam)[:2] / z``.
* Continuous pixel coordinates: pixel ``(u, v)`` (column, row) covers ``[u, u + 1) x [v, v + 1)``,
  its centre is ``(u + 0.5, v + 0.5)``; so ``c_x = W / 2`` puts the optical axis at the image
  centre (as in the released ToysAD / PartsAD metadata, ``K = [[213.3, 0, 128], ...]`` for 256 px).
* Volumes are stored ``(B, C, D, H, W) = (B, C, Z, Y, X)`` so that :func:`torch.nn.functional.grid_sample`'s
  ``(x, y, z)`` sampling order is the world's ``(x, y, z)``. A :class:`VoxelGrid` of ``shape (X, Y, Z)``
  has voxel ``(i, j, k)`` centred at ``min_corner + (i + 0.5, j + 0.5, k + 0.5) * voxel_size``.

Odd-One-Out (paper and official code) uses a 96 x 96 x 16 grid of 4 cm voxels centred at the world
origin: :class:`VoxelGrid`'s defaults.

Functions:

* :func:`camera_rays`: one ray per pixel centre from ``K`` and the pose.
* :func:`backproject_features`: nearest-pixel feature of every voxel centre, averaged over the
  views that see it (inside the image, in front of the camera); voxels no view sees are 0.
  No occlusion reasoning (a voxel behind a surface receives that surface's feature), as in the paper.
* :func:`crop_boxes`: resample the part of a volume inside each (axis-aligned) object box to a
  fixed ``size`` (e.g. 8 x 8 x 8), trilinearly; per-object inputs of a scene model.
* :func:`render_volume`: emission-absorption ray marching, ``alpha_i = 1 - exp(-sigma_i delta_i)``,
  ``w_i = alpha_i prod_{j<i} (1 - alpha_j)``; feature ``sum w_i f_i``, opacity ``sum w_i``, depth
  ``sum w_i z_i``. Density ``sigma`` is in 1/metre and sampled trilinearly (or nearest).

Everything is pure torch, batched over scenes and views, differentiable with respect to the
volumes and the 2D features, and device-agnostic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "VolumeRender",
    "VoxelGrid",
    "backproject_features",
    "camera_rays",
    "crop_boxes",
    "project_points",
    "render_volume",
]


@dataclass(frozen=True)
class VoxelGrid:
    """An axis-aligned voxel grid in world coordinates.

    Attributes:
        shape: ``(X, Y, Z)`` number of voxels along world x, y, z.
        voxel_size: edge length of a (cubic) voxel, metres.
        center: world position of the grid's centre.
    """

    shape: tuple[int, int, int] = (96, 96, 16)
    voxel_size: float = 0.04
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            msg = f"VoxelGrid.shape must be three positive ints (X, Y, Z), got {self.shape!r}."
            raise ValueError(msg)
        if not self.voxel_size > 0:
            msg = f"VoxelGrid.voxel_size must be > 0, got {self.voxel_size!r}."
            raise ValueError(msg)
        if len(tuple(self.center)) != 3:
            msg = f"VoxelGrid.center must be (x, y, z), got {self.center!r}."
            raise ValueError(msg)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "center", tuple(float(c) for c in self.center))

    @property
    def extent(self) -> tuple[float, float, float]:
        """Side lengths ``(X, Y, Z) * voxel_size`` in metres."""
        return tuple(s * self.voxel_size for s in self.shape)  # type: ignore[return-value]

    @property
    def min_corner(self) -> tuple[float, float, float]:
        """World position of the grid's lowest corner."""
        return tuple(c - e / 2 for c, e in zip(self.center, self.extent, strict=True))  # type: ignore[return-value]

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        """``(D, H, W) = (Z, Y, X)``: the spatial shape of a volume tensor on this grid."""
        x, y, z = self.shape
        return (z, y, x)

    def voxel_centers(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """``(Z, Y, X, 3)`` world coordinates ``(x, y, z)`` of every voxel centre."""
        axes = [
            lo + (torch.arange(n, device=device, dtype=dtype) + 0.5) * self.voxel_size
            for lo, n in zip(self.min_corner, self.shape, strict=True)
        ]
        zz, yy, xx = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        return torch.stack([xx, yy, zz], dim=-1)

    def to_normalized(self, points: Tensor) -> Tensor:
        """World ``(..., 3)`` -> grid_sample coordinates in ``[-1, 1]`` (``align_corners=False``)."""
        lo = points.new_tensor(self.min_corner)
        ext = points.new_tensor(self.extent)
        return (points - lo) / ext * 2.0 - 1.0


def _check_cameras(intrinsics: Tensor, world_to_camera: Tensor) -> tuple[Tensor, Tensor]:
    """Accept ``(V, ...)`` or ``(B, V, ...)``; return ``(B, V, 3, 3)``, ``(B, V, 4, 4)``."""
    if intrinsics.ndim == 3:
        intrinsics = intrinsics.unsqueeze(0)
    if world_to_camera.ndim == 3:
        world_to_camera = world_to_camera.unsqueeze(0)
    if intrinsics.ndim != 4 or intrinsics.shape[-2:] != (3, 3):
        msg = f"intrinsics must be (B, V, 3, 3) or (V, 3, 3), got {tuple(intrinsics.shape)}."
        raise ValueError(msg)
    if world_to_camera.ndim != 4 or world_to_camera.shape[-2:] != (4, 4):
        msg = f"world_to_camera must be (B, V, 4, 4) or (V, 4, 4), got {tuple(world_to_camera.shape)}."
        raise ValueError(msg)
    if intrinsics.shape[:2] != world_to_camera.shape[:2]:
        msg = (f"intrinsics {tuple(intrinsics.shape[:2])} and world_to_camera {tuple(world_to_camera.shape[:2])} "
               "must agree on (B, V).")
        raise ValueError(msg)
    return intrinsics, world_to_camera


def project_points(points: Tensor, intrinsics: Tensor, world_to_camera: Tensor) -> tuple[Tensor, Tensor]:
    """Continuous pixel coordinates and camera depth of world points in every view.

    Args:
        points: ``(B, N, 3)`` world points.
        intrinsics: ``(B, V, 3, 3)``.
        world_to_camera: ``(B, V, 4, 4)``.

    Returns:
        ``xy (B, V, N, 2)`` continuous pixel coordinates (column, row) and ``z (B, V, N)`` depth
        along the optical axis (``<= 0`` behind the camera; ``xy`` is then meaningless).
    """
    rotation = world_to_camera[..., :3, :3]
    translation = world_to_camera[..., :3, 3]
    cam = torch.einsum("bvij,bnj->bvni", rotation, points) + translation.unsqueeze(2)
    z = cam[..., 2]
    safe_z = torch.where(z.abs() > 1e-12, z, torch.full_like(z, 1e-12))
    pix = torch.einsum("bvij,bvnj->bvni", intrinsics, cam)
    xy = pix[..., :2] / safe_z.unsqueeze(-1)
    return xy, z


def camera_rays(
    intrinsics: Tensor, world_to_camera: Tensor, image_size: Sequence[int]
) -> tuple[Tensor, Tensor, Tensor]:
    """One ray per pixel centre.

    Args:
        intrinsics: ``(B, V, 3, 3)`` or ``(V, 3, 3)``.
        world_to_camera: ``(B, V, 4, 4)`` or ``(V, 4, 4)``.
        image_size: ``(H, W)`` of the image ``K`` refers to.

    Returns:
        ``origins (B, V, 3)`` camera centres, ``directions (B, V, H, W, 3)`` unit world directions,
        ``z_per_metre (B, V, H, W)``: camera depth gained per metre along each ray (to turn ray
        distance into the depth a depth map stores).
    """
    intrinsics, world_to_camera = _check_cameras(intrinsics, world_to_camera)
    height, width = (int(s) for s in image_size)
    dtype, device = world_to_camera.dtype, world_to_camera.device
    rows = torch.arange(height, device=device, dtype=dtype) + 0.5
    cols = torch.arange(width, device=device, dtype=dtype) + 0.5
    yy, xx = torch.meshgrid(rows, cols, indexing="ij")
    pix = torch.stack([xx, yy, torch.ones_like(xx)], dim=-1)  # (H, W, 3)
    cam_dir = torch.einsum("bvij,hwj->bvhwi", torch.linalg.inv(intrinsics.to(dtype)), pix)
    rotation = world_to_camera[..., :3, :3]
    translation = world_to_camera[..., :3, 3]
    # Camera centre: R c + t = 0  =>  c = -R^T t.
    origins = -torch.einsum("bvji,bvj->bvi", rotation, translation)
    world_dir = torch.einsum("bvji,bvhwj->bvhwi", rotation, cam_dir)
    norm = world_dir.norm(dim=-1, keepdim=True)
    directions = world_dir / norm
    z_per_metre = cam_dir[..., 2] / norm[..., 0]
    return origins, directions, z_per_metre


def backproject_features(
    features: Tensor,
    intrinsics: Tensor,
    world_to_camera: Tensor,
    image_size: Sequence[int],
    grid: VoxelGrid | None = None,
    *,
    view_mask: Tensor | None = None,
    near: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    """Lift per-view 2D feature maps into a voxel grid.

    Each voxel centre is projected into every view; the view contributes the feature of the
    nearest pixel of its (possibly lower-resolution) feature map if the centre is in front of the
    camera (depth > ``near``) and inside the image. The voxel's feature is the mean over the
    contributing views; voxels seen by no view are 0.

    Args:
        features: ``(B, V, C, h, w)`` feature maps (any stride: ``K`` is rescaled by ``w / W``, ``h / H``).
        intrinsics: ``(B, V, 3, 3)`` of the full-resolution images.
        world_to_camera: ``(B, V, 4, 4)``.
        image_size: ``(H, W)`` of the full-resolution images ``K`` refers to.
        grid: the voxel grid (default: 96 x 96 x 16, 4 cm, centred at the origin).
        view_mask: optional ``(B, V)`` bool, False drops a view (e.g. padding views).
        near: minimal camera depth (metres) for a voxel to count as seen.

    Returns:
        ``volume (B, C, Z, Y, X)`` and ``count (B, 1, Z, Y, X)`` (number of views that saw each voxel,
        in ``features.dtype``).
    """
    grid = grid or VoxelGrid()
    if features.ndim != 5:
        msg = f"features must be (B, V, C, h, w), got {tuple(features.shape)}."
        raise ValueError(msg)
    intrinsics, world_to_camera = _check_cameras(intrinsics, world_to_camera)
    batch, views, channels, fh, fw = features.shape
    if intrinsics.shape[:2] != (batch, views):
        msg = f"cameras are {tuple(intrinsics.shape[:2])} for features of (B, V) = {(batch, views)}."
        raise ValueError(msg)
    height, width = (int(s) for s in image_size)
    dtype = features.dtype
    centers = grid.voxel_centers(features.device, dtype).reshape(1, -1, 3).expand(batch, -1, -1)
    xy, z = project_points(centers, intrinsics.to(dtype), world_to_camera.to(dtype))  # (B, V, N, 2), (B, V, N)
    col = torch.floor(xy[..., 0] * (fw / width))
    row = torch.floor(xy[..., 1] * (fh / height))
    seen = (z > near) & (col >= 0) & (col < fw) & (row >= 0) & (row < fh)
    if view_mask is not None:
        seen = seen & view_mask.to(torch.bool).view(batch, views, 1)
    flat = (row.clamp(0, fh - 1) * fw + col.clamp(0, fw - 1)).long()  # (B, V, N)
    num_voxels = centers.shape[1]
    total = features.new_zeros(batch, channels, num_voxels)
    count = features.new_zeros(batch, 1, num_voxels)
    # One view at a time keeps the peak at (B, C, N) instead of (B, V, C, N).
    for view in range(views):
        maps = features[:, view].reshape(batch, channels, fh * fw)
        gathered = maps.gather(2, flat[:, view].unsqueeze(1).expand(-1, channels, -1))
        weight = seen[:, view].unsqueeze(1).to(dtype)
        total = total + gathered * weight
        count = count + weight
    volume = total / count.clamp(min=1.0)
    shape = grid.volume_shape
    return volume.view(batch, channels, *shape), count.view(batch, 1, *shape)


def crop_boxes(
    volume: Tensor,
    boxes: Tensor,
    grid: VoxelGrid | None = None,
    box_batch: Tensor | None = None,
    size: Sequence[int] = (8, 8, 8),
    margin: float = 0.0,
    mode: Literal["trilinear", "nearest"] = "trilinear",
) -> Tensor:
    """Resample each box's region of its scene's volume to a fixed grid.

    Output cell ``(k, j, i)`` samples the world point ``centre + size_xyz * ((i, j, k) + 0.5) / size - size_xyz / 2``
    (cell centres spanning the box), so a crop of a box equal to the whole grid with ``size`` equal to
    the grid shape returns the volume itself. Outside the grid, values are 0.

    Args:
        volume: ``(B, C, Z, Y, X)`` on ``grid``.
        boxes: ``(K, 2, 3)`` world ``[centre, size (x, y, z)]``.
        grid: the volume's grid.
        box_batch: ``(K,)`` long scene of each box (default: all in scene 0).
        size: ``(X, Y, Z)`` cells of each crop.
        margin: enlarge every box by this fraction of its size on each side.
        mode: ``"trilinear"`` or ``"nearest"``.

    Returns:
        ``(K, C, size_z, size_y, size_x)``.
    """
    grid = grid or VoxelGrid()
    if volume.ndim != 5 or tuple(volume.shape[2:]) != grid.volume_shape:
        msg = f"volume must be (B, C, *{grid.volume_shape}), got {tuple(volume.shape)}."
        raise ValueError(msg)
    if boxes.ndim != 3 or boxes.shape[1:] != (2, 3):
        msg = f"boxes must be (K, 2, 3) [centre, size], got {tuple(boxes.shape)}."
        raise ValueError(msg)
    sx, sy, sz = (int(s) for s in size)
    channels = volume.shape[1]
    if boxes.shape[0] == 0:
        return volume.new_zeros(0, channels, sz, sy, sx)
    if box_batch is None:
        box_batch = torch.zeros(boxes.shape[0], dtype=torch.long, device=boxes.device)
    dtype, device = volume.dtype, volume.device
    steps = [(torch.arange(n, device=device, dtype=dtype) + 0.5) / n - 0.5 for n in (sx, sy, sz)]
    zz, yy, xx = torch.meshgrid(steps[2], steps[1], steps[0], indexing="ij")
    unit = torch.stack([xx, yy, zz], dim=-1)  # (sz, sy, sx, 3) in [-0.5, 0.5]
    centre = boxes[:, 0].to(dtype).view(-1, 1, 1, 1, 3)
    extent = (boxes[:, 1].to(dtype) * (1.0 + 2.0 * margin)).view(-1, 1, 1, 1, 3)
    points = centre + extent * unit  # (K, sz, sy, sx, 3)
    coords = grid.to_normalized(points)
    sampling = "bilinear" if mode == "trilinear" else "nearest"
    return F.grid_sample(volume[box_batch], coords, mode=sampling, padding_mode="zeros", align_corners=False)


@dataclass
class VolumeRender:
    """Output of :func:`render_volume` (``B`` scenes, ``V`` views, ``H x W`` pixels, ``C`` channels).

    Attributes:
        features: ``(B, V, C, H, W)`` accumulated features/colours (plus background where given).
        opacity: ``(B, V, H, W)`` ``sum_i w_i`` in ``[0, 1]`` (the rendered silhouette).
        depth: ``(B, V, H, W)`` expected camera depth ``sum_i w_i z_i`` (metres; not normalised by opacity).
        weights: ``(B, V, H, W, S)`` per-sample weights when ``return_weights`` was set, else ``None``.
    """

    features: Tensor
    opacity: Tensor
    depth: Tensor
    weights: Tensor | None = None


def _ray_box(origins: Tensor, directions: Tensor, grid: VoxelGrid) -> tuple[Tensor, Tensor]:
    """Slab-method entry/exit distances ``(t_near, t_far)`` of rays with the grid's box."""
    lo = directions.new_tensor(grid.min_corner)
    hi = lo + directions.new_tensor(grid.extent)
    # Axis-parallel rays: a tiny direction keeps the division finite and the slab test right.
    safe = torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    inv = 1.0 / safe
    t0 = (lo - origins) * inv
    t1 = (hi - origins) * inv
    t_near = torch.minimum(t0, t1).amax(dim=-1).clamp(min=0.0)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    return t_near, t_far


def render_volume(
    density: Tensor,
    features: Tensor,
    intrinsics: Tensor,
    world_to_camera: Tensor,
    image_size: Sequence[int],
    grid: VoxelGrid | None = None,
    *,
    num_samples: int = 128,
    near: float = 0.0,
    far: float | None = None,
    interpolation: Literal["trilinear", "nearest"] = "trilinear",
    stratified: bool = False,
    generator: torch.Generator | None = None,
    background: Tensor | float | None = None,
    return_weights: bool = False,
    min_weight: float = 0.0,
    stop_gradient_channels: int = 0,
) -> VolumeRender:
    """Emission-absorption rendering of a voxel grid of density and features.

    Samples are placed at the midpoints of ``num_samples`` equal intervals of each ray's segment
    inside the grid box (intersected with ``[near, far]``); with ``stratified=True`` each sample
    is jittered uniformly inside its interval (training). The last interval's ``delta`` is its
    own length (the segment ends at the box), so a ray crossing an empty box renders nothing.

    Args:
        density: ``(B, 1, Z, Y, X)`` or ``(B, Z, Y, X)`` non-negative density, 1/metre.
        features: ``(B, C, Z, Y, X)`` features or colours to accumulate.
        intrinsics: ``(B, V, 3, 3)``.
        world_to_camera: ``(B, V, 4, 4)``.
        image_size: ``(H, W)`` of the rendered images (and of the images ``K`` refers to).
        grid: the voxel grid the volumes live on.
        num_samples: samples per ray.
        near, far: ray-distance limits (metres from the camera centre); ``far=None`` is unbounded.
        interpolation: ``"trilinear"`` (smooth, the default) or ``"nearest"`` (piecewise constant).
        stratified: jitter samples inside their intervals.
        generator: random generator for the jitter.
        background: colour/feature added with weight ``1 - opacity`` (scalar or ``(C,)``), or ``None``.
        return_weights: also return the per-sample weights.
        min_weight: features are sampled only where a sample's weight exceeds this (``0``: everywhere,
            exact). Density is always sampled everywhere; the skipped samples' contributions are
            below ``min_weight * num_samples * max|feature|`` per pixel. With sparse learned
            densities this skips most of the (dominant) feature sampling.
        stop_gradient_channels: the last this-many feature channels are accumulated with the
            weights detached, so their loss reaches the features but not the density (Odd-One-Out
            renders distilled features this way: the teacher is not multi-view consistent and would
            otherwise bend the geometry). Values are unchanged.

    Returns:
        :class:`VolumeRender`.
    """
    grid = grid or VoxelGrid()
    if density.ndim == 4:
        density = density.unsqueeze(1)
    if density.ndim != 5 or density.shape[1] != 1:
        msg = f"density must be (B, 1, Z, Y, X) or (B, Z, Y, X), got {tuple(density.shape)}."
        raise ValueError(msg)
    if features.ndim != 5 or features.shape[0] != density.shape[0] or features.shape[2:] != density.shape[2:]:
        msg = f"features must be (B, C, Z, Y, X) matching density {tuple(density.shape)}, got {tuple(features.shape)}."
        raise ValueError(msg)
    if tuple(density.shape[2:]) != grid.volume_shape:
        msg = f"volumes have spatial shape {tuple(density.shape[2:])} but the grid expects (Z, Y, X) = {grid.volume_shape}."
        raise ValueError(msg)
    if num_samples < 1:
        msg = f"num_samples must be >= 1, got {num_samples}."
        raise ValueError(msg)
    intrinsics, world_to_camera = _check_cameras(intrinsics, world_to_camera)
    batch, views = intrinsics.shape[:2]
    if batch != density.shape[0]:
        msg = f"cameras are for {batch} scenes but the volumes hold {density.shape[0]}."
        raise ValueError(msg)
    height, width = (int(s) for s in image_size)
    dtype = density.dtype
    origins, directions, z_per_metre = camera_rays(intrinsics.to(dtype), world_to_camera.to(dtype), (height, width))

    t_near, t_far = _ray_box(origins.view(batch, views, 1, 1, 3), directions, grid)
    t_near = t_near.clamp(min=near)
    if far is not None:
        t_far = t_far.clamp(max=far)
    hit = t_far > t_near
    t_far = torch.where(hit, t_far, t_near)
    span = (t_far - t_near).unsqueeze(-1)  # (B, V, H, W, 1)
    steps = torch.arange(num_samples, device=density.device, dtype=dtype)
    if stratified:
        jitter = torch.rand((*span.shape[:-1], num_samples), generator=generator, device=density.device, dtype=dtype)
    else:
        jitter = torch.full((num_samples,), 0.5, device=density.device, dtype=dtype)
    t = t_near.unsqueeze(-1) + span * (steps + jitter) / num_samples  # (B, V, H, W, S)
    # Interval lengths: boundaries halfway between samples, clipped to the segment.
    mids = 0.5 * (t[..., 1:] + t[..., :-1])
    bounds = torch.cat([t_near.unsqueeze(-1), mids, t_far.unsqueeze(-1)], dim=-1)
    delta = bounds[..., 1:] - bounds[..., :-1]

    points = origins.view(batch, views, 1, 1, 1, 3) + directions.unsqueeze(-2) * t.unsqueeze(-1)
    coords = grid.to_normalized(points).view(batch, views * height, width, num_samples, 3)
    # grid_sample wants (N, D_out, H_out, W_out, 3); fold (V, H) into D_out, (W) into H_out.
    mode = "bilinear" if interpolation == "trilinear" else "nearest"
    sampled_density = F.grid_sample(density, coords, mode=mode, padding_mode="zeros", align_corners=False)
    sigma = sampled_density.view(batch, views, height, width, num_samples).clamp(min=0.0)
    channels = features.shape[1]

    optical = sigma * delta
    # T_i = exp(-sum_{j<i} sigma_j delta_j): exclusive cumulative sum, exact and stable.
    accumulated = torch.cumsum(optical, dim=-1) - optical
    weights = torch.exp(-accumulated) * (1.0 - torch.exp(-optical))
    weights = weights * hit.unsqueeze(-1).to(dtype)
    opacity = weights.sum(dim=-1)
    if not 0 <= stop_gradient_channels <= channels:
        msg = f"stop_gradient_channels must lie in [0, {channels}], got {stop_gradient_channels}."
        raise ValueError(msg)

    def accumulate(volume: Tensor, sample_weights: Tensor) -> Tensor:
        if min_weight > 0:
            return _accumulate_sparse(volume, coords, sample_weights, min_weight, mode)
        sampled_features = F.grid_sample(volume, coords, mode=mode, padding_mode="zeros", align_corners=False)
        feats = sampled_features.view(batch, volume.shape[1], views, height, width, num_samples)
        return torch.einsum("bvhws,bcvhws->bvchw", sample_weights, feats)

    split = channels - int(stop_gradient_channels)
    if split == channels:
        rendered = accumulate(features, weights)
    elif split == 0:
        rendered = accumulate(features, weights.detach())
    else:
        rendered = torch.cat([accumulate(features[:, :split], weights),
                              accumulate(features[:, split:], weights.detach())], dim=2)
    depth = (weights * t).sum(dim=-1) * z_per_metre
    if background is not None:
        bg = torch.as_tensor(background, dtype=dtype, device=density.device).reshape(-1)
        rendered = rendered + (1.0 - opacity).unsqueeze(2) * bg.view(1, 1, -1, 1, 1)
    return VolumeRender(
        features=rendered,
        opacity=opacity,
        depth=depth,
        weights=weights if return_weights else None,
    )


def _accumulate_sparse(features: Tensor, coords: Tensor, weights: Tensor, min_weight: float, mode: str) -> Tensor:
    """``sum_i w_i f_i`` over the samples with ``w_i > min_weight`` only: ``(B, V, C, H, W)``."""
    batch, views, height, width, num_samples = weights.shape
    channels = features.shape[1]
    coords = coords.view(batch, views, height, width, num_samples, 3)
    out = features.new_zeros(batch, views * height * width, channels)
    for b in range(batch):
        keep = weights[b] > min_weight  # (V, H, W, S)
        if not bool(keep.any()):
            continue
        points = coords[b][keep].view(1, 1, 1, -1, 3)
        sampled = F.grid_sample(features[b : b + 1], points, mode=mode, padding_mode="zeros", align_corners=False)
        contribution = sampled.view(channels, -1).T * weights[b][keep].unsqueeze(1)  # (M, C)
        ray = keep.nonzero()[:, :3]
        ray_index = (ray[:, 0] * height + ray[:, 1]) * width + ray[:, 2]
        out = _index_add_row(out, b, ray_index, contribution)
    return out.view(batch, views, height, width, channels).permute(0, 1, 4, 2, 3)


def _index_add_row(out: Tensor, row: int, index: Tensor, values: Tensor) -> Tensor:
    """Out-of-place ``out[row].index_add_(0, index, values)`` (keeps autograd happy)."""
    updated = out[row].index_add(0, index, values)
    return torch.cat([out[:row], updated.unsqueeze(0), out[row + 1 :]], dim=0)
