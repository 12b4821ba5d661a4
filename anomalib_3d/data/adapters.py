"""Organized grids ↔ point clouds, and anomalib's ``DepthBatch`` ↔ :class:`PointCloudBatch`.

Organized sources (MVTec 3D-AD ``xyz`` tiffs, anomalib's ``MVTec3D`` ``depth_map``) are (H, W)
grids of xyz where an all-zero (or non-finite) pixel means "no point". A cloud keeps only the
valid pixels and remembers their flat index (``grid_index = row * W + col``), so per-point scores
go back to exactly the pixels they came from.

Resizing an organized grid uses *nearest* sampling of whole pixels and of the validity mask:
bilinear interpolation would blend background zeros into the surface and invent points that
lie between the object and the camera origin.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F  # noqa: N812
from lightning.pytorch import Callback

from anomalib_3d.data.dataclasses import PointCloudBatch, PointCloudItem
from anomalib_3d.data.errors import EmptyPointCloudError, InvalidPointsError

logger = logging.getLogger(__name__)


def valid_pixel_mask(xyz: torch.Tensor) -> torch.Tensor:
    """Pixels that carry a point.

    Args:
        xyz: (..., H, W, 3) float organized coordinates.

    Returns:
        (..., H, W) bool — finite and not all-zero.
    """
    return torch.isfinite(xyz).all(dim=-1) & (xyz != 0).any(dim=-1)


def channels_last(xyz: torch.Tensor) -> torch.Tensor:
    """Accept (3, H, W) or (H, W, 3) (and batched forms); return channels-last (…, H, W, 3)."""
    if xyz.shape[-1] == 3:
        return xyz
    if xyz.ndim >= 3 and xyz.shape[-3] == 3:
        return xyz.movedim(-3, -1)
    raise InvalidPointsError(f"organized xyz must be (H, W, 3) or (3, H, W), got {tuple(xyz.shape)}.")


def resize_organized(xyz: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of an organized grid that never invents points.

    Args:
        xyz: (H, W, 3) float, zeros = no point.
        size: target (H', W').

    Returns:
        (H', W', 3): every output pixel is a copy of one input pixel (or zero).
    """
    xyz = channels_last(xyz)
    if tuple(xyz.shape[:2]) == tuple(size):
        return xyz
    out = F.interpolate(xyz.permute(2, 0, 1)[None], size=size, mode="nearest-exact")[0]
    return out.permute(1, 2, 0).contiguous()


def resize_nearest(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest resize of a (C, H, W) or (H, W) map onto ``size`` (same sampling as
    :func:`resize_organized`, so masks and RGB stay aligned with the xyz pixels)."""
    squeeze = image.ndim == 2
    x = image[None, None] if squeeze else image[None]
    dtype = x.dtype
    out = F.interpolate(x.float(), size=size, mode="nearest-exact")[0]
    out = out[0] if squeeze else out
    return out.to(dtype)


def organized_to_item(
    xyz: torch.Tensor,
    *,
    rgb: torch.Tensor | None = None,
    pixel_gt_mask: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    **fields: object,
) -> PointCloudItem:
    """Turn one organized grid into a :class:`PointCloudItem` (invalid pixels dropped, indexed).

    Args:
        xyz: (H, W, 3) or (3, H, W) float.
        rgb: optional (3, H', W') image; resampled (nearest) onto the xyz grid for per-point colours,
            kept at its own resolution as ``image``.
        pixel_gt_mask: optional (H', W') mask; per-point labels read through the same mapping.
        valid: optional (H, W) bool to further restrict the points (e.g. background removed).
        **fields: other :class:`PointCloudItem` fields (gt_label, category, paths, ...).
    """
    xyz = channels_last(xyz).float()
    height, width = xyz.shape[:2]
    mask = valid_pixel_mask(xyz)
    if valid is not None:
        mask &= valid.bool()
    flat = mask.reshape(-1).nonzero().squeeze(1)
    if flat.numel() == 0:
        raise EmptyPointCloudError(
            "the organized grid has no valid (non-zero, finite) pixel.",
            path=fields.get("point_path") if isinstance(fields.get("point_path"), str) else None,
            fix="check the xyz file; background removal may be too aggressive",
        )
    points = xyz.reshape(-1, 3)[flat]
    colors = gt = None
    if rgb is not None:
        colors = resize_nearest(rgb.float(), (height, width)).reshape(3, -1)[:, flat].T
    if pixel_gt_mask is not None:
        gt = resize_nearest(pixel_gt_mask.bool(), (height, width)).reshape(-1)[flat]
    return PointCloudItem(
        points=points,
        colors=colors,
        gt_mask=gt,
        image=rgb,
        pixel_gt_mask=pixel_gt_mask,
        grid_shape=torch.tensor([height, width]),
        grid_index=flat,
        **fields,
    )


def points_to_pixel_map(
    values: torch.Tensor,
    grid_index: torch.Tensor,
    grid_shape: torch.Tensor | tuple[int, int],
    batch_index: torch.Tensor | None = None,
    *,
    batch_size: int | None = None,
    fill: float | str = "min",
) -> torch.Tensor:
    """Scatter per-point values back onto their organized grids.

    Args:
        values: (ΣN,) float per-point values.
        grid_index: (ΣN,) long flat pixel of each point.
        grid_shape: (H, W), or (B, 2) with one shape per cloud (all equal).
        batch_index: (ΣN,) long cloud of each point; ``None`` = one cloud.
        batch_size: number of clouds (default ``batch_index.max() + 1``).
        fill: value of pixels without a point: a number, or ``"min"`` = the smallest value of
            that cloud (a pixel with no surface is the least anomalous thing there is).

    Returns:
        (B, H, W) float.
    """
    grid_shape = torch.as_tensor(grid_shape)
    if grid_shape.ndim == 2:
        if not bool((grid_shape == grid_shape[0]).all()):
            msg = "points_to_pixel_map needs one grid shape per batch; got several."
            raise ValueError(msg)
        grid_shape = grid_shape[0]
    height, width = int(grid_shape[0]), int(grid_shape[1])
    if batch_index is None:
        batch_index = torch.zeros_like(grid_index)
    if batch_size is None:
        batch_size = int(batch_index.max().item()) + 1 if batch_index.numel() else 1
    if fill == "min":
        mins = torch.full((batch_size,), float("inf"), device=values.device, dtype=values.dtype)
        mins = mins.scatter_reduce(0, batch_index, values, reduce="amin")
        mins = torch.where(torch.isfinite(mins), mins, torch.zeros_like(mins))
        out = mins[:, None].expand(batch_size, height * width).clone()
    else:
        out = values.new_full((batch_size, height * width), float(fill))
    out[batch_index, grid_index] = values
    return out.view(batch_size, height, width)


def depth_batch_to_point_batch(batch: object) -> PointCloudBatch:
    """Convert anomalib's ``DepthBatch`` (``MVTec3D``) into a :class:`PointCloudBatch`.

    ``depth_map`` is the organized xyz (B, 3, H, W) (or (B, H, W, 3)); zero pixels are dropped
    and indexed; ``image`` (B, 3, H', W') gives per-point colours; the 2D ``gt_mask`` gives per-point
    labels (nearest pixel when resolutions differ) and is kept as ``pixel_gt_mask``.
    """
    depth = getattr(batch, "depth_map", None)
    if depth is None:
        msg = "this batch has no depth_map: it is not an MVTec3D DepthBatch."
        raise ValueError(msg)
    depth = torch.as_tensor(depth)
    if depth.ndim != 4:
        raise InvalidPointsError(
            f"depth_map must be organized xyz (B, 3, H, W); got {tuple(depth.shape)}.",
            fix="use anomalib's MVTec3D (xyz tiffs), not a single-channel depth image",
        )
    image = getattr(batch, "image", None)
    gt_mask = getattr(batch, "gt_mask", None)
    labels = getattr(batch, "gt_label", None)
    depth_paths = getattr(batch, "depth_path", None)
    image_paths = getattr(batch, "image_path", None)
    items = []
    for b in range(depth.shape[0]):
        items.append(
            organized_to_item(
                depth[b].as_subclass(torch.Tensor),
                rgb=None if image is None else image[b].as_subclass(torch.Tensor),
                pixel_gt_mask=None if gt_mask is None else gt_mask[b].as_subclass(torch.Tensor),
                gt_label=None if labels is None else labels[b],
                point_path=None if depth_paths is None else depth_paths[b],
                image_path=None if image_paths is None else image_paths[b],
            ),
        )
    return PointCloudBatch.collate(items)


# --------------------------------------------------------------------------------------------
# anomalib's depth datasets (MVTec3D, ADAM3D, Folder3D): sample tables the readers accept
# --------------------------------------------------------------------------------------------


def repair_depth_samples(samples: object) -> int:
    """Make an anomalib depth samples table readable: missing ``mask_path`` of normal samples → ``""``.

    anomalib 2.7's ``MVTec3D`` / ``ADAM3D`` tables leave the mask path of training samples
    missing; with pandas ≥ 3 ``astype(str)`` keeps it as NaN, and ``DepthItem``'s path validator
    then refuses the float, so every model that reads the train split fails on its first item.
    A normal sample has no mask (anomalib builds an empty one), so ``""`` is the right value.
    A missing path of an *anomalous* sample, or a missing depth / image path, is a real problem
    and is left for the reader to report.

    Args:
        samples: a pandas ``DataFrame`` (modified in place).

    Returns:
        the number of entries repaired.
    """
    import pandas as pd

    if not isinstance(samples, pd.DataFrame) or "mask_path" not in samples or "depth_path" not in samples:
        return 0
    missing = samples["mask_path"].isna()
    if "label_index" in samples:
        missing &= samples["label_index"].fillna(0).astype(int) == 0
    count = int(missing.sum())
    if count:
        samples["mask_path"] = samples["mask_path"].astype(object).where(~missing, "")
    return count


def repair_depth_datamodule(datamodule: object) -> int:
    """:func:`repair_depth_samples` on every split of an anomalib depth datamodule (no-op otherwise).

    Returns:
        the number of entries repaired.
    """
    count = 0
    for name in ("train_data", "val_data", "test_data"):
        dataset = getattr(datamodule, name, None)
        while dataset is not None and hasattr(dataset, "dataset") and not hasattr(dataset, "_samples"):
            dataset = dataset.dataset  # torch Subset and friends
        samples = getattr(dataset, "_samples", None)
        count += repair_depth_samples(samples)
    return count


class DepthDataRepair(Callback):
    """Repairs anomalib depth datamodules (see :func:`repair_depth_samples`) after their ``setup``.

    Lightning calls a callback's ``setup`` after the datamodule's and before any dataloader is
    iterated, so every split is readable by the time the first item is loaded.
    """

    def setup(self, trainer: object, pl_module: object, stage: str) -> None:  # noqa: ARG002
        repaired = repair_depth_datamodule(getattr(trainer, "datamodule", None))
        if repaired:
            logger.info("anomalib depth datamodule: %d missing mask paths of normal samples set to ''.", repaired)


__all__ = [
    "DepthDataRepair",
    "channels_last",
    "depth_batch_to_point_batch",
    "organized_to_item",
    "repair_depth_datamodule",
    "repair_depth_samples",
    "points_to_pixel_map",
    "resize_nearest",
    "resize_organized",
    "valid_pixel_mask",
]
