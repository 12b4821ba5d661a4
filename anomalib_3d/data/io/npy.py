"""``.npy`` clouds: ``(N, 3)``, ``(N, 6)`` or ``(N, 9)`` numeric arrays saved with ``numpy.save``.

The header's shape and dtype are checked against the file size before numpy allocates what the
header claims, so a corrupt header cannot ask for gigabytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anomalib_3d.data.io.cloud import PointCloudData, PointCloudHeader, finalize_cloud, validate_points
from anomalib_3d.data.io.files import FIX_TRUNCATED
from anomalib_3d.data.io.text import split_columns
from anomalib_3d.errors import CorruptFileError, InvalidPointsError


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a .npy file, read without its data."""
    fix = "re-save it with numpy.save."
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            offset = handle.tell()
    except Exception as err:  # numpy raises ValueError/SyntaxError/TypeError/... for bad headers
        raise CorruptFileError(f"cannot be read as a .npy array ({type(err).__name__}: {err}).", path, fix) from err
    if dtype.hasobject or dtype.kind not in "fiub":
        raise CorruptFileError(f"holds a {dtype} array; expected numbers.", path, fix)
    if len(shape) != 2:
        raise InvalidPointsError(
            f"holds an array of shape {shape}; expected (N, 3), (N, 6) or (N, 9).",
            path,
            "save one row per point.",
        )
    needed = int(np.prod(shape)) * dtype.itemsize
    available = path.stat().st_size - offset
    if available != needed:
        raise CorruptFileError(
            f".npy header declares shape {shape} ({needed} bytes) but {available} bytes of data follow.",
            path,
            FIX_TRUNCATED if available < needed else "re-save it with numpy.save (trailing data).",
        )
    return tuple(shape), dtype, offset


def read_npy_cloud(path: Path, columns: str | None = None, drop_nonfinite: bool = False) -> PointCloudData:
    """Read an existing ``.npy`` cloud (see :func:`anomalib_3d.data.io.read_point_cloud`)."""
    _npy_header(path)  # sizes checked before numpy allocates what the header claims
    try:
        table = np.load(path, allow_pickle=False)
    except Exception as err:  # numpy raises several types for a corrupt array file
        raise CorruptFileError(f"cannot be loaded as a .npy array ({err}).", path, "re-save it with numpy.save.") from err
    if table.shape[0] == 0 and table.shape[1] == 3:
        validate_points(table, path)
    pts, colors, normals = split_columns(table.astype(np.float64), columns, path)
    return finalize_cloud(pts, path, colors, normals, None, drop_nonfinite)


def read_npy_header(path: Path) -> PointCloudHeader:
    """Shape of an existing ``.npy`` cloud from its header, checked against the file size."""
    shape, _, _ = _npy_header(path)
    names = tuple(f"col{i}" for i in range(shape[1]))
    return PointCloudHeader(path, shape[0], names, shape[1] >= 6, shape[1] >= 6)
