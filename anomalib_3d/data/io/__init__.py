"""Readers and writers for the 3D anomaly-detection file formats, one module per format.

Readers return numpy arrays (points always ``float32``) and raise the named errors of
:mod:`anomalib_3d.errors`; every message names the file, the problem and the fix.

==========================  ============================================================  ==================
inputs                      readers / writers                                              module
==========================  ============================================================  ==================
point clouds                :func:`read_point_cloud` / :func:`read_point_cloud_header`    (this package)
``.pcd``                    ASCII, binary, binary_compressed; :func:`write_pcd`           :mod:`.pcd`
``.ply``                    ASCII and binary vertex element; :func:`write_ply`             :mod:`.ply`
``.xyz`` ``.txt`` ``.pts``  text columns                                                   :mod:`.text`
``.npy``                    ``(N, 3)``, ``(N, 6)``, ``(N, 9)`` arrays                      :mod:`.npy`
MVTec ``xyz/*.tiff``        :func:`read_organized_xyz`, :func:`write_organized_xyz`        :mod:`.organized`
GT ``x y z label`` text     :func:`read_gt_txt`, :func:`write_gt_txt`                      :mod:`.ground_truth`
masks and RGB images        :func:`read_mask_png`, :func:`read_rgb`, writers               :mod:`.images`
Eyecandies sample files     depth PNG + YAML, pose, normal map                             :mod:`.eyecandies`
==========================  ============================================================  ==================

Every cloud passes the same value rules (:func:`validate_points`, :func:`check_cloud_values`:
finite, within the float32 range and :data:`MAX_ABS_COORDINATE`, not all coincident), and a
header that disagrees with its body is an error, never a guess (each format module lists its
rules). The PCD and PLY parsers are our own rather than Open3D's: Open3D silently returns an
empty cloud for missing, truncated or corrupt files, whereas we must say which file is broken
and how.
"""

from __future__ import annotations

from pathlib import Path

from anomalib_3d.data.io.cloud import (
    MAX_ABS_COORDINATE,
    PointCloudData,
    PointCloudHeader,
    check_cloud_values,
    validate_points,
)
from anomalib_3d.data.io.files import require_file
from anomalib_3d.data.io.ground_truth import read_gt_txt, write_gt_txt
from anomalib_3d.data.io.images import (
    IMAGE_EXTENSIONS,
    read_image_size,
    read_mask_png,
    read_rgb,
    write_mask_png,
    write_rgb_png,
)
from anomalib_3d.data.io.lzf import LZF_MAX_EXPANSION, lzf_decompress
from anomalib_3d.data.io.npy import read_npy_cloud, read_npy_header
from anomalib_3d.data.io.organized import (
    TIFF_EXTENSIONS,
    read_organized_xyz,
    read_organized_xyz_header,
    write_organized_xyz,
)
from anomalib_3d.data.io.pcd import read_pcd, read_pcd_header, write_pcd
from anomalib_3d.data.io.ply import read_ply, read_ply_header, write_ply
from anomalib_3d.data.io.text import TEXT_COLUMN_LAYOUTS, read_text_cloud, read_text_header
from anomalib_3d.errors import UnsupportedFormatError

POINT_CLOUD_EXTENSIONS = (".pcd", ".ply", ".xyz", ".txt", ".pts", ".npy")


def _existing_cloud_file(path: str | Path, fix_suffix: str = "") -> Path:
    """``path`` when its extension is a cloud format and it is an existing file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in POINT_CLOUD_EXTENSIONS:
        raise UnsupportedFormatError(
            f"extension {suffix or '(none)'!r} is not a supported point-cloud format.",
            path,
            f"convert the cloud to one of {', '.join(POINT_CLOUD_EXTENSIONS)}{fix_suffix}.",
        )
    return require_file(path)


def read_point_cloud(path: str | Path, columns: str | None = None, drop_nonfinite: bool = False) -> PointCloudData:
    """Read an unorganized point cloud.

    Args:
        path: ``.pcd`` | ``.ply`` | ``.xyz`` | ``.txt`` | ``.pts`` | ``.npy`` file.
        columns: for text/``.npy`` files, the column layout, one of ``"xyz"``, ``"xyzrgb"``
            (colours in [0, 1] or 0-255), ``"xyznormal"``, ``"xyzrgbnormal"``. ``None`` infers it
            from the column count (3, 6 or 9) and raises when 6 columns are ambiguous.
        drop_nonfinite: drop rows with NaN/inf coordinates instead of raising (organized PCD
            exports mark missing returns with NaN). Off by default: nothing is dropped silently.

    Returns:
        :class:`PointCloudData` with ``points (N, 3) float32``.

    Raises:
        DatasetRootNotFoundError: the file does not exist (a ``FileNotFoundError``).
        UnsupportedFormatError: unknown extension or encoding.
        CorruptFileError: header/body mismatch, truncated body, unparsable values.
        InvalidPointsError / EmptyPointCloudError: NaN/inf coordinates or no points.
        DegeneratePointCloudError: all points coincide, or absurd coordinates
            (see :func:`check_cloud_values`).
    """
    path = _existing_cloud_file(path, " (organized MVTec .tiff files are read with read_organized_xyz)")
    suffix = path.suffix.lower()
    if suffix == ".pcd":
        return read_pcd(path, drop_nonfinite)
    if suffix == ".ply":
        return read_ply(path, drop_nonfinite)
    if suffix == ".npy":
        return read_npy_cloud(path, columns, drop_nonfinite)
    return read_text_cloud(path, columns, drop_nonfinite)


def read_point_cloud_header(path: str | Path) -> PointCloudHeader:
    """Read and check only a cloud file's header (the pre-flight check's fast path).

    Binary bodies are checked against the header by file size (no body read); text bodies are
    not read. What this accepts can still fail in :func:`read_point_cloud` (values, row count
    of text bodies), never the other way round.

    Raises:
        the same named errors as :func:`read_point_cloud` for header problems.
    """
    path = _existing_cloud_file(path)
    suffix = path.suffix.lower()
    if suffix == ".pcd":
        return read_pcd_header(path)
    if suffix == ".ply":
        return read_ply_header(path)
    if suffix == ".npy":
        return read_npy_header(path)
    return read_text_header(path)


__all__ = [
    "IMAGE_EXTENSIONS",
    "LZF_MAX_EXPANSION",
    "MAX_ABS_COORDINATE",
    "POINT_CLOUD_EXTENSIONS",
    "TEXT_COLUMN_LAYOUTS",
    "TIFF_EXTENSIONS",
    "PointCloudData",
    "PointCloudHeader",
    "check_cloud_values",
    "lzf_decompress",
    "read_image_size",
    "read_organized_xyz_header",
    "read_point_cloud_header",
    "read_gt_txt",
    "read_mask_png",
    "read_organized_xyz",
    "read_point_cloud",
    "read_rgb",
    "validate_points",
    "write_gt_txt",
    "write_mask_png",
    "write_organized_xyz",
    "write_pcd",
    "write_ply",
    "write_rgb_png",
]
