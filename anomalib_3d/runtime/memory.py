"""The cloud-size budget: a cloud far larger than a model is built for stops with a named error.

A 10⁷-point scan handed to a model sized for 10⁴–10⁶ points would otherwise run until the kernel's
OOM killer ends the process (or for hours). Every model has a budget of points per cloud
(``max_cloud_points``, class attribute; :data:`DEFAULT_MAX_CLOUD_POINTS` unless the model states
another); a batch holding a larger cloud raises :class:`~anomalib_3d.errors.CloudTooLargeError`
before the model sees it, naming the file and how to subsample. ``ANOMALIB3D_MAX_CLOUD_POINTS``
overrides every budget (for a machine with the memory to spare; ``0`` switches the check off).
"""

from __future__ import annotations

import os
from typing import Any

from anomalib_3d.errors import CloudTooLargeError

__all__ = ["DEFAULT_MAX_CLOUD_POINTS", "check_cloud_sizes", "cloud_budget", "cloud_sizes"]

#: Points per cloud accepted by default: twice the largest public benchmark clouds (Real3D-AD's
#: densest scans have under 1M points).
DEFAULT_MAX_CLOUD_POINTS = 2_000_000
_ENVIRONMENT = "ANOMALIB3D_MAX_CLOUD_POINTS"


def cloud_budget(module: object) -> int:
    """Points per cloud ``module`` accepts (``0``: no limit).

    The environment variable ``ANOMALIB3D_MAX_CLOUD_POINTS`` wins over the model's
    ``max_cloud_points``, which wins over :data:`DEFAULT_MAX_CLOUD_POINTS`.
    """
    text = os.environ.get(_ENVIRONMENT, "").strip()
    if text:
        try:
            return max(0, int(float(text)))
        except ValueError:
            msg = f"{_ENVIRONMENT} must be a whole number of points (0 = no limit), got {text!r}."
            raise ValueError(msg) from None
    return int(getattr(module, "max_cloud_points", DEFAULT_MAX_CLOUD_POINTS) or 0)


def cloud_sizes(batch: Any) -> tuple[list[int], list[str]]:  # noqa: ANN401
    """``(points per cloud, file of each cloud)`` of a point batch or an anomalib ``DepthBatch``.

    Other batches (multi-view scenes, images) give two empty lists: their size is set by their
    image resolution, not by a point count.
    """
    num_points = getattr(batch, "num_points", None)
    points = getattr(batch, "points", None)
    if num_points is not None and points is not None and hasattr(num_points, "tolist"):
        sizes = [int(n) for n in num_points.tolist()]
        names = list(getattr(batch, "point_path", None) or [])
    else:
        depth = getattr(batch, "depth_map", None)
        if depth is None or getattr(depth, "ndim", 0) != 4:
            return [], []
        grid = depth.shape[-2] * depth.shape[-1] if depth.shape[1] == 3 else depth.shape[1] * depth.shape[2]
        sizes = [int(grid)] * int(depth.shape[0])
        names = list(getattr(batch, "depth_path", None) or getattr(batch, "image_path", None) or [])
    names = [str(n) for n in names] + [f"cloud {i} of the batch" for i in range(len(names), len(sizes))]
    return sizes, names


def check_cloud_sizes(batch: Any, module: object) -> None:  # noqa: ANN401
    """Raise :class:`CloudTooLargeError` if a cloud in ``batch`` exceeds ``module``'s budget."""
    budget = cloud_budget(module)
    if budget <= 0:
        return
    sizes, names = cloud_sizes(batch)
    for size, name in zip(sizes, names, strict=False):
        if size > budget:
            model = type(module).__name__
            raise CloudTooLargeError(
                f"cloud has {size:,} points; {model} is budgeted for at most {budget:,} points per cloud "
                f"({size / budget:.0f}x over), so it was stopped before running out of memory.",
                name if not name.startswith("cloud ") else None,
                f"subsample the scans to at most {budget:,} points (e.g. voxel down-sampling: "
                "open3d's `pcd.voxel_down_sample(voxel_size)`, or farthest-point sampling: "
                "`anomalib_3d.ops.farthest_point_sample`), or, with the memory to spare, raise the budget with "
                f"{_ENVIRONMENT}=<points> (0 = no limit).",
            )
