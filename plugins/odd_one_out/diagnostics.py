"""How good are Eq. 5's correspondences? Top-k of β against the ground truth.

Instances of a scene share one mesh and their object poses are known, so a crop cell of object
``n`` has a true counterpart in object ``m``: ``p_m = T_m T_n^{-1} p_n``. For every cell of ``n``
that lies inside ``n``'s oriented box, Eq. 5 picks the ``k`` cells of ``m``'s crop with the largest
``β_n[i] . β_m[j]``; a pick is right when its cell centre lies within ``tolerance`` cells of
``p_m``. Pairs of normal instances only (an odd one's counterpart may not exist). Rotationally
symmetric parts have many right answers that this measure counts wrong, so compare rows with each
other and with chance, not with 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from anomalib_3d.data.scenes import SceneBatch

from .torch_model import OddOneOutModel

__all__ = ["correspondence_accuracy", "crop_cell_centres"]


def crop_cell_centres(boxes: Tensor, crop_size: int, margin: float) -> Tensor:
    """World centres ``(K, T, 3)`` of the crop cells (``T = crop_size ** 3``, x fastest), as sampled by
    :func:`~anomalib_3d.render.volume.crop_boxes`."""
    steps = (torch.arange(crop_size, dtype=boxes.dtype, device=boxes.device) + 0.5) / crop_size - 0.5
    zz, yy, xx = torch.meshgrid(steps, steps, steps, indexing="ij")
    unit = torch.stack([xx, yy, zz], dim=-1).reshape(-1, 3)
    return boxes[:, None, 0] + boxes[:, None, 1] * (1.0 + 2.0 * margin) * unit


@torch.no_grad()
def correspondence_accuracy(model: OddOneOutModel, batch: SceneBatch, topk: int = 8, tolerance: float = 1.0) -> dict[str, float]:
    """Counts for the top-1 accuracy and the top-k hit rate of Eq. 5 on one batch.

    Args:
        model: the network (eval mode is the caller's business).
        batch: scenes with ``object_poses`` / ``object_sizes``.
        topk: ``k`` of Eq. 5.
        tolerance: a pick is right within this many crop cells (of ``m``'s crop, largest axis).

    Returns:
        ``{"cells", "top1", "hit_k", "chance"}``: judged cells, right top-1 picks, cells with a right
        pick among the top k, and the expected right top-1 picks of a uniformly random choice.
    """
    if batch.object_poses is None or batch.object_sizes is None:
        msg = "correspondence accuracy needs object_poses and object_sizes (scenes with rotation_matrix)."
        raise ValueError(msg)
    features, density, _, projection = model.build_volume(batch.image, batch.intrinsics, batch.world_to_camera)
    _, beta = model.crop_tokens(features, density, projection, batch.boxes, batch.object_batch)
    centres = crop_cell_centres(batch.boxes.to(beta.dtype), model.crop_size, model.crop_margin)
    poses = batch.object_poses.to(beta.dtype)
    cell = batch.boxes[:, 1].to(beta.dtype).amax(dim=1) * (1.0 + 2.0 * model.crop_margin) / model.crop_size
    totals = {"cells": 0.0, "top1": 0.0, "hit_k": 0.0, "chance": 0.0}
    k = min(int(topk), beta.shape[1])
    for scene in range(batch.batch_size):
        normal = torch.nonzero((batch.object_batch == scene) & ~batch.object_labels)[:, 0].tolist()
        for n in normal:
            local = (centres[n] - poses[n, :3, 3]) @ poses[n, :3, :3]
            inside = (local.abs() <= batch.object_sizes[n].to(beta.dtype) / 2).all(dim=1)
            if not bool(inside.any()):
                continue
            for m in normal:
                if m == n:
                    continue
                target = local[inside] @ poses[m, :3, :3].T + poses[m, :3, 3]  # (I, 3)
                picks = (beta[n][inside] @ beta[m].T).topk(k, dim=1).indices  # (I, k)
                distance = (centres[m][picks] - target[:, None]).norm(dim=-1)  # (I, k)
                right = distance <= tolerance * cell[m]
                everywhere = (centres[m][None] - target[:, None]).norm(dim=-1) <= tolerance * cell[m]  # (I, T)
                totals["cells"] += float(inside.sum())
                totals["top1"] += float(right[:, 0].sum())
                totals["hit_k"] += float(right.any(dim=1).sum())
                totals["chance"] += float(everywhere.float().mean(dim=1).sum())
    return totals
