"""Random scene augmentation of Odd-One-Out's training (the official code's, ``augment_scene_RT_bbox``).

The whole scene is moved by a random similarity ``x' = s A x + t`` (``A``: a turn about the vertical
axis, optionally followed by a mirror of x; ``s >= 1``; ``t`` horizontal). The views stay as they
are: the cameras move with the scene, so every pixel still shows the same surface point, and the
boxes follow. Camera poses stay rigid: a camera pose ``[R | c]`` becomes ``[R A^T | s c - R A^T t]``,
which maps ``x'`` to ``s`` times the original camera coordinates, i.e. the same pixel (depths scale
by ``s``).

The official settings: in the rendering stage a turn in ±150°, a mirror with probability 0.5, a
shift in ±0.2 m and a scale in ``[1, s_max]``, ``s_max`` the largest scale that keeps the scene in
the volume; in the classification stage the scale only. Here the shift is further limited so that
the scene's boxes stay inside the grid (the CPU presets' grids are barely larger than the scenes;
the official grid is 3.84 m wide).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from anomalib_3d.data.scenes import oriented_boxes_to_aabb
from anomalib_3d.render.volume import VoxelGrid

__all__ = ["apply_similarity", "augment_scene", "random_similarity"]

_CORNER_SIGNS = torch.tensor([[i, j, k] for i in (-0.5, 0.5) for j in (-0.5, 0.5) for k in (-0.5, 0.5)])


def apply_similarity(
    world_to_camera: Tensor,
    boxes: Tensor,
    object_batch: Tensor,
    rotation: Tensor,
    scale: Tensor,
    shift: Tensor,
    object_poses: Tensor | None = None,
    object_sizes: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Move every scene ``b`` by ``x' = scale[b] rotation[b] x + shift[b]``.

    Args:
        world_to_camera: ``(B, V, 4, 4)``.
        boxes: ``(ΣK, 2, 3)`` world axis-aligned ``[centre, size]``; object_batch: ``(ΣK,)``.
        rotation: ``(B, 3, 3)`` orthogonal (a mirror allowed); scale: ``(B,)``; shift: ``(B, 3)``.
        object_poses, object_sizes: ``(ΣK, 4, 4)``, ``(ΣK, 3)`` oriented boxes: when given, the new
            boxes enclose the moved oriented boxes exactly; otherwise they enclose the moved corners of
            the axis-aligned boxes (the official code's rule, which grows turned boxes).

    Returns:
        ``world_to_camera (B, V, 4, 4)`` and ``boxes (ΣK, 2, 3)`` of the moved scenes.
    """
    dtype, device = world_to_camera.dtype, world_to_camera.device
    rotation, scale, shift = (x.to(device=device, dtype=dtype) for x in (rotation, scale, shift))
    camera_rotation = world_to_camera[..., :3, :3] @ rotation.transpose(-1, -2).unsqueeze(1)
    camera_translation = scale.view(-1, 1, 1) * world_to_camera[..., :3, 3] - torch.einsum(
        "bvij,bj->bvi", camera_rotation, shift)
    moved = world_to_camera.clone()
    moved[..., :3, :3] = camera_rotation
    moved[..., :3, 3] = camera_translation
    if boxes.shape[0] == 0:
        return moved, boxes
    a, s, t = (x[object_batch].to(boxes) for x in (rotation, scale, shift))
    if object_poses is not None and object_sizes is not None:
        centres = s.view(-1, 1) * torch.einsum("kij,kj->ki", a, object_poses[:, :3, 3].to(boxes.dtype)) + t
        turned = a @ object_poses[:, :3, :3].to(boxes.dtype)
        return moved, oriented_boxes_to_aabb(centres, s.view(-1, 1) * object_sizes.to(boxes.dtype), turned)
    corners = boxes[:, 0:1] + _CORNER_SIGNS.to(boxes) * boxes[:, 1:2]  # (K, 8, 3)
    corners = s.view(-1, 1, 1) * torch.einsum("kij,knj->kni", a, corners) + t.unsqueeze(1)
    low, high = corners.amin(dim=1), corners.amax(dim=1)
    return moved, torch.stack([(low + high) / 2, high - low], dim=1)


def random_similarity(
    boxes: Tensor,
    object_batch: Tensor,
    batch_size: int,
    grid: VoxelGrid,
    *,
    max_rotation_deg: float = 150.0,
    flip_probability: float = 0.5,
    max_shift: float = 0.2,
    scale: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw one similarity per scene (see the module docstring).

    Args:
        boxes, object_batch: the scenes' boxes ``(ΣK, 2, 3)`` and scene vector.
        batch_size: ``B``.
        grid: the volume the scenes must stay in (scale and shift limits).
        max_rotation_deg: turn uniformly in ``±max_rotation_deg`` about the world z axis (0: none).
        flip_probability: chance of mirroring x after the turn.
        max_shift: horizontal shift uniformly in ``±max_shift`` metres per axis, narrowed to keep the
            scene's boxes inside the grid (0: none).
        scale: draw ``s`` uniformly in ``[1, s_max]`` (``s_max``: the scene's boxes, turned, still fit
            the grid); ``False``: ``s = 1``.
        generator: random source (default: torch's global one).

    Returns:
        ``rotation (B, 3, 3)``, ``scale (B,)``, ``shift (B, 3)``.
    """
    dtype = torch.float64

    def uniform(low: Tensor | float, high: Tensor | float, size: tuple[int, ...] = (batch_size,)) -> Tensor:
        return torch.as_tensor(low, dtype=dtype) + torch.rand(size, generator=generator, dtype=dtype) * (
            torch.as_tensor(high, dtype=dtype) - torch.as_tensor(low, dtype=dtype))

    angle = uniform(-math.radians(max_rotation_deg), math.radians(max_rotation_deg))
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(batch_size, 3, 3, dtype=dtype)
    rotation[:, 0, 0], rotation[:, 0, 1], rotation[:, 1, 0], rotation[:, 1, 1] = cos, -sin, sin, cos
    rotation[:, 2, 2] = 1.0
    flips = torch.rand(batch_size, generator=generator, dtype=dtype) < flip_probability
    rotation[flips, 0, :] *= -1.0

    low_bound = torch.tensor(grid.min_corner, dtype=dtype)
    high_bound = low_bound + torch.tensor(grid.extent, dtype=dtype)
    scales = torch.ones(batch_size, dtype=dtype)
    shifts = torch.zeros(batch_size, 3, dtype=dtype)
    for scene in range(batch_size):
        mine = boxes[object_batch == scene].detach().cpu().to(dtype)
        if mine.shape[0] == 0:
            continue
        points = (mine[:, 0:1] + _CORNER_SIGNS.to(dtype) * mine[:, 1:2]).reshape(-1, 3) @ rotation[scene].T
        if scale:
            # The largest s with s * points inside [low_bound, high_bound] on every axis.
            limits = torch.where(points > 0, high_bound / points.clamp(min=1e-9),
                                 torch.where(points < 0, low_bound / points.clamp(max=-1e-9), torch.full_like(points, math.inf)))
            limit = float(limits.clamp(min=0).min())
            if limit > 1.0 and math.isfinite(limit):
                scales[scene] = uniform(1.0, limit, (1,))[0]
        if max_shift > 0:
            moved = scales[scene] * points
            room_low = (low_bound - moved.amin(0)).clamp(max=0).clamp(min=-max_shift)
            room_high = (high_bound - moved.amax(0)).clamp(min=0).clamp(max=max_shift)
            shift = uniform(room_low, room_high, (3,))
            shift[2] = 0.0
            shifts[scene] = shift
    return rotation, scales, shifts


def augment_scene(
    world_to_camera: Tensor,
    boxes: Tensor,
    object_batch: Tensor,
    grid: VoxelGrid,
    *,
    rendering_stage: bool,
    object_poses: Tensor | None = None,
    object_sizes: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """The official stage-wise augmentation: turn, mirror, shift and scale in the rendering stage; the
    scale alone in the classification stage. Returns the moved ``world_to_camera`` and ``boxes``."""
    batch_size = world_to_camera.shape[0]
    rotation, scale, shift = random_similarity(
        boxes, object_batch, batch_size, grid,
        max_rotation_deg=150.0 if rendering_stage else 0.0,
        flip_probability=0.5 if rendering_stage else 0.0,
        max_shift=0.2 if rendering_stage else 0.0,
        scale=True, generator=generator,
    )
    return apply_similarity(world_to_camera, boxes, object_batch, rotation, scale, shift, object_poses, object_sizes)
