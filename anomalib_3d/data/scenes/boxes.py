"""Object boxes of multi-view scenes: the released metadata's convention and conversions.

The released ToysAD-8K / PartsAD-15K metadata stores an object's box as ``bbox = [location, sizes]``
with the sizes along the object's **own** x, y, z axes, turned by the object's ``rotation_matrix``
(object-to-world, translation = location); the objects rebuilt from the release's depth maps and
segmentations agree. :func:`boxes_from_metadata` with ``rotations`` returns the world axis-aligned
box that encloses such an oriented box (what the voxel-grid models crop). Metadata without
``rotation_matrix`` is read as world-aligned ``[[cx, cy, cz], [h, w, d]]`` with ``h`` along **y** and
``w`` along **x** (the reading of the official visualiser). Inside anomalib-3d sizes are always
``(x, y, z)`` and boxes ``(K, 2, 3)`` = ``[centre, size]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from anomalib_3d.data.scenes.errors import InvalidBoxError

__all__ = ["boxes_from_metadata", "boxes_to_corners", "boxes_to_metadata", "oriented_boxes_to_aabb"]


def boxes_from_metadata(bbox: object, path: str | None = None, rotations: Tensor | None = None) -> Tensor:
    """World axis-aligned boxes ``(K, 2, 3)`` ``[centre, size (x, y, z)]`` from metadata boxes.

    Args:
        bbox: ``K`` boxes ``[[cx, cy, cz], [s1, s2, s3]]``.
        path: file named in errors.
        rotations: ``(K, 3, 3)`` object rotations (the released ``rotation_matrix``): the sizes are
            then the object's local x, y, z extents and the result is the world box enclosing the
            oriented box. ``None``: world-aligned sizes ``[h, w, d]`` with ``h`` along y, ``w`` along x.

    Raises:
        InvalidBoxError: a box is not 2 x 3, not finite, or has a size <= 0.
    """
    try:
        boxes = torch.as_tensor(bbox, dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidBoxError(f"object boxes {bbox!r} are not numeric.", path=path,
                              fix="write each bbox as [[cx, cy, cz], [h, w, d]] in metres") from exc
    if boxes.numel() == 0:
        return torch.zeros(0, 2, 3)
    if boxes.ndim == 2:
        boxes = boxes.unsqueeze(0)
    if boxes.ndim != 3 or boxes.shape[1:] != (2, 3):
        raise InvalidBoxError(f"object boxes have shape {tuple(boxes.shape)[1:]}, expected (2, 3).", path=path,
                              fix="write each bbox as [[cx, cy, cz], [h, w, d]] in metres")
    if not bool(torch.isfinite(boxes).all()):
        raise InvalidBoxError("an object box contains NaN/inf.", path=path, fix="repair the bbox values")
    if bool((boxes[:, 1] <= 0).any()):
        raise InvalidBoxError(f"an object box has a size <= 0: {boxes[:, 1].tolist()}.", path=path,
                              fix="sizes [h, w, d] must be positive extents in metres")
    if rotations is not None:
        return oriented_boxes_to_aabb(boxes[:, 0], boxes[:, 1], torch.as_tensor(rotations, dtype=torch.float64)).float()
    h, w, d = boxes[:, 1].unbind(-1)
    return torch.stack([boxes[:, 0], torch.stack([w, h, d], dim=-1)], dim=1).float()


def oriented_boxes_to_aabb(centres: Tensor, sizes: Tensor, rotations: Tensor) -> Tensor:
    """The world axis-aligned boxes enclosing oriented boxes.

    Args:
        centres: ``(K, 3)`` world centres; sizes: ``(K, 3)`` extents along each box's own axes;
        rotations: ``(K, 3, 3)`` box-to-world rotations (columns = the box axes in the world).

    Returns:
        ``(K, 2, 3)`` ``[centre, size (x, y, z)]``: the half-extent along world axis ``i`` is
        ``sum_j |R_ij| size_j / 2`` (the farthest corner).
    """
    half = torch.einsum("kij,kj->ki", rotations.abs().to(sizes.dtype), sizes / 2)
    return torch.stack([centres, 2 * half], dim=1)


def boxes_to_metadata(boxes: Tensor) -> list[list[list[float]]]:
    """Inverse of :func:`boxes_from_metadata`: ``(K, 2, 3)`` -> ``[[[cx, cy, cz], [h, w, d]], ...]``."""
    out = []
    for centre, size in boxes.tolist():
        out.append([list(centre), [size[1], size[0], size[2]]])
    return out


def boxes_to_corners(boxes: Tensor) -> Tensor:
    """``(K, 2, 3)`` centre/size -> ``(K, 2, 3)`` ``[min corner, max corner]``."""
    return torch.stack([boxes[:, 0] - boxes[:, 1] / 2, boxes[:, 0] + boxes[:, 1] / 2], dim=1)
