"""Organized clouds: MVTec 3D-AD ``xyz/*.tiff`` grids of ``(H, W, 3)`` float coordinates in the
camera frame, where an all-zero pixel means "no point"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from anomalib_3d.data.io.cloud import MAX_ABS_COORDINATE, as_array
from anomalib_3d.data.io.files import require_file
from anomalib_3d.errors import CorruptFileError, DegeneratePointCloudError, InvalidPointsError, UnsupportedFormatError
from anomalib_3d.runtime.files import atomic_write

TIFF_EXTENSIONS = (".tiff", ".tif")


def read_organized_xyz_header(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an organized xyz TIFF, from its header only; checks shape and dtype.

    Raises:
        the same named errors as :func:`read_organized_xyz` for header problems.
    """
    import tifffile

    path = Path(path)
    if path.suffix.lower() not in TIFF_EXTENSIONS:
        raise UnsupportedFormatError(
            f"extension {path.suffix or '(none)'!r} is not an organized-xyz format.",
            path,
            "organized clouds are float TIFF files (.tiff/.tif) as in MVTec 3D-AD.",
        )
    path = require_file(path)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, dtype = tuple(series.shape), np.dtype(series.dtype)
    except Exception as err:  # tifffile raises several unrelated types for broken files
        raise CorruptFileError(f"cannot be decoded as TIFF ({err}).", path, "copy or re-export the file again.") from err
    _check_organized_shape(shape, dtype, path)
    declared = int(np.prod(shape)) * dtype.itemsize
    if declared > 4096 * path.stat().st_size + (1 << 20):
        raise CorruptFileError(
            f"TIFF header declares a {shape} {dtype} image ({declared} bytes), far more than the "
            f"{path.stat().st_size}-byte file can hold.",
            path,
            "copy or re-export the file again (its header is corrupt).",
        )
    return shape[0], shape[1]


def _check_organized_shape(shape: tuple[int, ...], dtype: np.dtype, path: Path) -> None:
    if len(shape) != 3 or shape[2] != 3 or 0 in shape:
        raise CorruptFileError(
            f"holds an image of shape {shape}; an organized cloud must be (H, W, 3).",
            path,
            "pass the xyz/*.tiff file, not an RGB or depth-only image.",
        )
    if dtype.kind != "f":
        raise CorruptFileError(
            f"holds {dtype} values; organized xyz must be floating point coordinates.",
            path,
            "pass the float32 xyz TIFF (MVTec 3D-AD xyz/ folder).",
        )


def read_organized_xyz(path: str | Path) -> np.ndarray:
    """Read an MVTec 3D-AD organized point cloud.

    Args:
        path: float ``.tiff`` holding ``(H, W, 3)`` camera-frame coordinates; all-zero pixels mean
            "no point" and are kept as zeros.

    Returns:
        ``(H, W, 3) float32``.

    Raises:
        DatasetRootNotFoundError, UnsupportedFormatError, CorruptFileError (unreadable, wrong
        shape or non-float dtype), InvalidPointsError (NaN/inf values),
        DegeneratePointCloudError (coordinates beyond :data:`MAX_ABS_COORDINATE`).
    """
    import tifffile

    read_organized_xyz_header(path)  # shape/dtype from the header before decoding the pixels
    path = Path(path)
    try:
        xyz = tifffile.imread(path)
    except Exception as err:  # tifffile raises several unrelated types for broken files
        raise CorruptFileError(f"cannot be decoded as TIFF ({err}).", path, "copy or re-export the file again.") from err
    if xyz.size == 0:  # tifffile logs a warning and returns nothing for a broken page table
        raise CorruptFileError("cannot be decoded as TIFF (no image data found).", path, "copy or re-export the file again.")
    _check_organized_shape(tuple(xyz.shape), xyz.dtype, path)
    xyz = np.ascontiguousarray(xyz, dtype=np.float32)
    num_bad = int((~np.isfinite(xyz)).any(axis=2).sum())
    if num_bad:
        raise InvalidPointsError(
            f"{num_bad} of {xyz.shape[0] * xyz.shape[1]} pixels have NaN or infinite coordinates.",
            path,
            "replace invalid pixels with zeros (the MVTec convention for 'no point').",
        )
    huge = (np.abs(xyz) > MAX_ABS_COORDINATE).any(axis=2)
    if huge.any():
        raise DegeneratePointCloudError(
            f"{int(huge.sum())} pixels have a coordinate beyond {MAX_ABS_COORDINATE:.0e} in magnitude.",
            path,
            "replace those pixels with zeros ('no point') or re-export the scan.",
        )
    return xyz


def write_organized_xyz(path: str | Path, xyz: Any) -> None:
    """Write an ``(H, W, 3)`` organized cloud as a float32 TIFF (MVTec 3D-AD ``xyz/*.tiff``).

    Zeros mean "no point"; NaN/inf are rejected.
    """
    import tifffile

    path = Path(path)
    xyz = as_array(xyz)
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise InvalidPointsError(f"organized xyz must have shape (H, W, 3), got {xyz.shape}.", path, "reshape the array.")
    if not np.isfinite(xyz).all():
        raise InvalidPointsError(
            "organized xyz has NaN/inf values.", path, "write zeros for pixels without a point (MVTec convention)."
        )
    with atomic_write(path) as handle:
        tifffile.imwrite(handle, np.ascontiguousarray(xyz, dtype=np.float32), photometric="rgb")


