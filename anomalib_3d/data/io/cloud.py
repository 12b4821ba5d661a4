"""What the cloud readers return and the writers accept: :class:`PointCloudData`, the header
view :class:`PointCloudHeader`, and the value rules every cloud passes (shape, finite, within
the float32 range and :data:`MAX_ABS_COORDINATE`, not all coincident)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anomalib_3d.errors import DegeneratePointCloudError, EmptyPointCloudError, InvalidPointsError

#: Coordinates beyond this magnitude are refused: no scanner measures 10^12 units, and float32
#: keeps only ~7 digits, so such a value is a corrupt number (or a lying header), not a point.
MAX_ABS_COORDINATE = 1e12
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class PointCloudData:
    """A point cloud as read from disk.

    Attributes:
        points: ``(N, 3) float32`` coordinates.
        colors: ``(N, 3) float32`` RGB in ``[0, 1]``, or ``None``.
        normals: ``(N, 3) float32`` normals, or ``None``.
        scalars: extra per-point fields, name -> ``(N,)`` array (e.g. PLY ``scalar_score``,
            PCD ``intensity``).
    """

    points: np.ndarray
    colors: np.ndarray | None = None
    normals: np.ndarray | None = None
    scalars: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.points.shape[0])


@dataclass
class PointCloudHeader:
    """What a file's header says, read without its body (the pre-flight check's view).

    Attributes:
        path: the file.
        num_points: declared point count (``None`` for formats without one, e.g. ``.xyz``).
        fields: field / property / column names (text files: ``col0, col1, ...``).
        has_colors: the header declares colours.
        has_normals: the header declares normals.
    """

    path: Path
    num_points: int | None
    fields: tuple[str, ...]
    has_colors: bool
    has_normals: bool


def validate_points(points: Any, path: str | Path | None = None) -> None:
    """Check that ``points`` is a non-empty ``(N, 3)`` array of finite coordinates.

    Args:
        points: ``(N, 3)`` numpy array or torch tensor (any device).
        path: the file the points came from, named in the error message.

    Raises:
        InvalidPointsError: wrong shape, NaN/inf coordinates (the message says how many), or
            float64 values beyond the float32 range (they would become inf).
        EmptyPointCloudError: ``N == 0``.
    """
    shape = tuple(points.shape)
    if len(shape) != 2 or shape[1] != 3:
        raise InvalidPointsError(
            f"points must have shape (N, 3) but have shape {shape}.",
            path,
            "pass an array with one row per point and the three columns x, y, z.",
        )
    if shape[0] == 0:
        raise EmptyPointCloudError(
            "the point cloud has no points.",
            path,
            "check the file was written completely; an empty scan cannot be scored.",
        )
    if hasattr(points, "detach"):  # torch tensor: stay on its device until the final count
        import torch

        bad_rows = (~torch.isfinite(points)).any(dim=1)
        num_bad = int(bad_rows.sum().item())
        first_bad = int(torch.nonzero(bad_rows)[0, 0].item()) if num_bad else -1
    else:
        points = np.asarray(points)
        bad_rows = ~np.isfinite(points).all(axis=1)
        num_bad = int(bad_rows.sum())
        first_bad = int(np.flatnonzero(bad_rows)[0]) if num_bad else -1
    if num_bad:
        raise InvalidPointsError(
            f"{num_bad} of {shape[0]} points have NaN or infinite coordinates (first at row "
            f"{first_bad}).",
            path,
            "remove those points (e.g. points[np.isfinite(points).all(1)]) or re-export the "
            "cloud without invalid returns; organized scans should use zeros for 'no point'.",
        )
    if not hasattr(points, "detach") and points.dtype.itemsize > 4 and points.dtype.kind == "f":
        _check_float32_range(points, path)


def _check_float32_range(points: np.ndarray, path: str | Path | None) -> None:
    over = np.abs(points) > _FLOAT32_MAX
    if over.any():
        row = int(np.flatnonzero(over.any(axis=1))[0])
        value = float(points.reshape(-1)[np.flatnonzero(over.reshape(-1))[0]])
        raise InvalidPointsError(
            f"{int(over.any(axis=1).sum())} of {len(points)} points have coordinates beyond the float32 range "
            f"(e.g. {value:.3g} at row {row}); they would overflow to infinity.",
            path,
            "re-export the cloud in its real unit; a value this large is a corrupt number.",
        )


def check_cloud_values(points: np.ndarray, path: str | Path | None = None) -> None:
    """The reader's plausibility rules for a cloud read from a file (after :func:`validate_points`).

    Args:
        points: ``(N, 3)`` finite float array.
        path: the file, for the message.

    Raises:
        DegeneratePointCloudError: a coordinate beyond :data:`MAX_ABS_COORDINATE`, or every
            point at the same position (a single point, or N copies of one point): neither is
            a scan that can be scored, and both are typical of a wrong header or a failed export.
    """
    points = np.asarray(points)
    # max/min rather than abs(): no temporary copy of a large cloud
    if points.size and max(float(points.max()), -float(points.min())) > MAX_ABS_COORDINATE:
        huge = (np.abs(points) > MAX_ABS_COORDINATE).any(axis=1)
        row = int(np.flatnonzero(huge)[0])
        raise DegeneratePointCloudError(
            f"{int(huge.sum())} of {len(points)} points have a coordinate beyond "
            f"{MAX_ABS_COORDINATE:.0e} in magnitude (first at row {row}: {points[row].tolist()}).",
            path,
            "remove the outliers or re-export the cloud; values this large come from a corrupt "
            "number or a header that does not describe the body (e.g. TYPE I over float data).",
        )
    if len(points) and bool((points == points[0]).all()):
        raise DegeneratePointCloudError(
            f"all {len(points)} points are at the same position {points[0].tolist()} "
            f"({'a single point' if len(points) == 1 else 'no extent'}).",
            path,
            "check the export (a cloud needs at least two distinct points to be scored).",
        )


def finalize_cloud(
    points: np.ndarray,
    path: Path,
    colors: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    scalars: dict[str, np.ndarray] | None = None,
    drop_nonfinite: bool = False,
) -> PointCloudData:
    """Check parsed columns and return them as :class:`PointCloudData` (float32, colours clipped
    to [0, 1]).

    Args:
        points: ``(N, 3)`` coordinates at their parsed precision.
        path: the file, for messages.
        colors, normals: ``(N, 3)`` or ``None``.
        scalars: extra per-point fields, name -> ``(N,)``.
        drop_nonfinite: drop rows with NaN/inf coordinates (and their colours, normals and
            scalars) instead of raising.
    """
    points = np.asarray(points)
    if drop_nonfinite and points.ndim == 2 and points.shape[1] == 3:
        keep = np.isfinite(points).all(axis=1)
        if not keep.all():
            points = points[keep]
            colors = colors[keep] if colors is not None else None
            normals = normals[keep] if normals is not None else None
            scalars = {k: v[keep] for k, v in (scalars or {}).items()}
    validate_points(points, path)  # on the parsed precision, so 1e39 is "overflow", not "inf"
    check_cloud_values(points, path)
    points = np.ascontiguousarray(points, dtype=np.float32)
    if colors is not None:
        colors = np.ascontiguousarray(np.clip(colors, 0.0, 1.0), dtype=np.float32)
    if normals is not None:
        normals = np.ascontiguousarray(normals, dtype=np.float32)
    return PointCloudData(points=points, colors=colors, normals=normals, scalars=scalars or {})


# Writer inputs: numpy arrays or torch tensors on any device.


def as_array(values: Any, dtype: Any = None) -> np.ndarray:
    """A numpy array of ``values`` (a numpy array, a torch tensor on any device, or a sequence)."""
    return np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=dtype)


def as_points(points: Any, path: Path) -> np.ndarray:
    """``(N, 3)`` float32 points to write, checked by :func:`validate_points`."""
    points = as_array(points)
    validate_points(points, path)
    return np.ascontiguousarray(points, dtype=np.float32)


def as_colors_u8(colors: Any, n: int, path: Path) -> np.ndarray:
    """``(n, 3)`` uint8 colours to write, from uint8 or float in [0, 1]."""
    colors = as_array(colors)
    if colors.shape != (n, 3):
        raise InvalidPointsError(
            f"colors have shape {colors.shape} but there are {n} points.", path, "pass one RGB row per point."
        )
    if colors.dtype == np.uint8:
        return colors
    # Float colours are taken in [0, 1]; rounding (not truncation) keeps k/255 values exact.
    return np.clip(np.round(colors.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def as_normals(normals: Any, n: int, path: Path) -> np.ndarray:
    """``(n, 3)`` float32 normals to write."""
    normals = as_array(normals, dtype=np.float32)
    if normals.shape != (n, 3):
        raise InvalidPointsError(f"normals have shape {normals.shape} but there are {n} points.", path, "pass one normal per point.")
    return normals
