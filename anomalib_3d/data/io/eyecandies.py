"""Files of an Eyecandies sample (Bonfiglioli et al., ACCV 2022) and the camera that made them.

Items of a sample ``<idx>`` (the layout and splits are in :mod:`anomalib_3d.data.eyecandies`):

=====================  ===================================================================
item                   meaning
=====================  ===================================================================
``image_0`` … ``_5``   RGB under six lightings (0 all spots, 1 bottom, 2 right, 3 top,
                       4 left, 5 global light box)
``depth.png``          16-bit grey PNG, depth normalised to 0 … 65535
``info_depth.yaml``    ``normalization: {min, max}``: metres = png / 65535 · (max − min) + min
``normals.png``        RGB normal map, n = png / 127.5 − 1, Y and Z flipped w.r.t. the camera
``pose.txt``           4 × 4 camera pose relative to the world (camera → world)
``metadata.yaml``      ``anomalous: 0 | 1`` (not in ``test_private``)
``mask.png``           GT: union of the per-type masks (not in ``test_private``)
``{bumps,dents,colors,normals}_mask.png``  GT per anomaly type (not in ``test_private``)
=====================  ===================================================================

Geometry. A pixel ``(u, v)`` (column, row) with metric depth ``d`` is, in the camera frame,
``d · ((u − W/2) / f, (v − H/2) / f, 1)`` with the published focal length ``f = 711.11`` px and
the principal point at the image centre. In the world frame it is ``pose · (that, 1)``.

*Pose direction.* The two official snippets disagree: the website's ``depth_to_pointcloud``
applies ``inv(K · pose)`` (pose = world → camera) while the shipped ``depth2pc`` stage and the
website's normal-map snippet apply ``pose`` (camera → world, which is also what the format table
says: "camera pose relative to the world"). We use camera → world. The decision is a geometric
one: the conveyor belt is fixed in the world while the camera pose changes from sample to
sample, so only the right direction maps the belt of *every* sample onto the *same* world plane;
:func:`anomalib_3d.data.diagnostics.pose_convention_report` measures exactly that on any
downloaded category (and the tests check it on a hand-written scene whose belt is the plane
z = 0). M3DM's preprocessing, which uses the other direction, has to rotate each cloud
afterwards to level the belt — a symptom of the same thing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from anomalib_3d.data.io.images import read_mask_png
from anomalib_3d.errors import CorruptFileError, DatasetRootNotFoundError, GroundTruthMismatchError, UnsupportedFormatError

FOCAL_LENGTH = 711.11
"""Focal length in pixels of the released 512 × 512 Eyecandies images."""


def require_sample_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else a :class:`DatasetRootNotFoundError` naming the sample's ``what``."""
    if not path.is_file():
        raise DatasetRootNotFoundError(
            f"the sample's {what} is missing.",
            path=path,
            fix="restore it from the Eyecandies archive (every sample has it in this split)",
        )
    return path


def _load_yaml(path: str | Path) -> dict:
    import yaml

    path = require_sample_file(Path(path), "YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise CorruptFileError(f"is not valid YAML ({err}).", path=path, fix="re-extract it from the archive") from err
    if not isinstance(data, dict):
        raise CorruptFileError("holds no YAML mapping.", path=path, fix="re-extract it from the archive")
    return data


def read_depth_info(path: str | Path) -> tuple[float, float]:
    """``(min, max)`` depth in metres of ``<idx>_info_depth.yaml`` (``normalization.min/max``)."""
    data = _load_yaml(path)
    norm = data.get("normalization")
    try:
        lo, hi = float(norm["min"]), float(norm["max"])
    except (TypeError, KeyError, ValueError) as err:
        raise CorruptFileError(
            "has no numeric normalization.min / normalization.max.",
            path=path,
            fix="re-extract the info_depth.yaml of this sample from the archive",
        ) from err
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        raise CorruptFileError(f"normalization bounds ({lo}, {hi}) are not an interval.", path=path,
                               fix="re-extract the info_depth.yaml of this sample from the archive")
    return lo, hi


def read_metadata_label(path: str | Path) -> bool:
    """``anomalous`` of ``<idx>_metadata.yaml`` as a bool."""
    data = _load_yaml(path)
    if "anomalous" not in data:
        raise CorruptFileError("has no 'anomalous' key.", path=path, fix="re-extract it from the archive")
    value = data["anomalous"]
    if isinstance(value, str):
        value = value.strip().lower() in {"1", "true", "yes"}
    return bool(value)


def read_png_header(path: Path) -> tuple[int, int]:
    """``(bit depth, colour type)`` from the PNG IHDR chunk (Pillow hides the bit depth)."""
    with path.open("rb") as handle:
        head = handle.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise CorruptFileError("is not a PNG file.", path=path, fix="re-extract the depth PNG from the archive")
    return head[24], head[25]


def read_png_size(path: Path) -> tuple[int, int]:
    """(H, W) from the PNG header, without decoding."""
    with path.open("rb") as handle:
        head = handle.read(24)
    return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")


def depth_png_format_error(path: Path, fix: str) -> UnsupportedFormatError | None:
    """The error for a depth PNG that is not 16-bit greyscale (``fix`` says what to do), else ``None``.

    Raises:
        CorruptFileError: the file is not a PNG.
    """
    bit_depth, colour_type = read_png_header(path)
    if bit_depth != 16 or colour_type != 0:
        return UnsupportedFormatError(
            f"depth PNG has bit depth {bit_depth} and colour type {colour_type}; Eyecandies depth is 16-bit greyscale.",
            path=path,
            fix=fix,
        )
    return None


def read_depth_png(path: str | Path, info_path: str | Path) -> np.ndarray:
    """Metric depth of ``<idx>_depth.png``.

    Args:
        path: the 16-bit grey PNG.
        info_path: its ``<idx>_info_depth.yaml``.

    Returns:
        (H, W) float64 metres: ``png / 65535 · (max − min) + min``.

    Raises:
        UnsupportedFormatError: the PNG is not 16-bit greyscale (an 8-bit export has lost the
            depth resolution and would be scaled 257× wrong).
    """
    from PIL import Image

    path = require_sample_file(Path(path), "depth PNG")
    problem = depth_png_format_error(path, "use the original <idx>_depth.png of the archive, not a converted / 8-bit preview")
    if problem is not None:
        raise problem
    with Image.open(path) as image:
        raw = np.asarray(image).astype(np.float64)
    lo, hi = read_depth_info(info_path)
    return raw / 65535.0 * (hi - lo) + lo


def read_pose(path: str | Path) -> np.ndarray:
    """(4, 4) float64 camera → world pose of ``<idx>_pose.txt``."""
    path = require_sample_file(Path(path), "pose")
    try:
        pose = np.loadtxt(path, dtype=np.float64)
    except ValueError as err:
        raise CorruptFileError(f"cannot be read as a matrix ({err}).", path=path, fix="re-extract it") from err
    if pose.shape != (4, 4) or not np.isfinite(pose).all():
        raise CorruptFileError(f"holds a {pose.shape} matrix; a pose is a finite 4 × 4 matrix.", path=path,
                               fix="re-extract it from the archive")
    return pose


def depth_to_xyz(
    depth: np.ndarray,
    focal_length: float = FOCAL_LENGTH,
    pose: np.ndarray | None = None,
) -> np.ndarray:
    """Back-project a metric depth map with the Eyecandies camera.

    Args:
        depth: (H, W) metres (z along the optical axis); ``<= 0`` = no point.
        focal_length: pixels (711.11 for the released 512 × 512 images).
        pose: (4, 4) camera → world; ``None`` keeps camera coordinates.

    Returns:
        (H, W, 3) float64; pixels without depth are all-zero (the "no point" convention of the
        organized grids, see :mod:`anomalib_3d.data.adapters`).
    """
    height, width = depth.shape
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    xyz = np.stack([(cols - width / 2) / focal_length * depth, (rows - height / 2) / focal_length * depth, depth], -1)
    if pose is not None:
        xyz = xyz @ pose[:3, :3].T + pose[:3, 3]
    xyz[depth <= 0] = 0.0
    return xyz


def decode_normals(normals_png: np.ndarray, pose: np.ndarray | None = None) -> np.ndarray:
    """Normal map → unit normals in the camera (OpenCV) or world frame.

    Args:
        normals_png: (H, W, 3) uint8, n = png / 127.5 − 1 with Y and Z flipped w.r.t. the camera.
        pose: (4, 4) camera → world; ``None`` keeps camera coordinates.

    Returns:
        (H, W, 3) float64 unit vectors.
    """
    normals = normals_png.astype(np.float64) / 127.5 - 1.0
    normals /= np.clip(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12, None)
    normals = normals * np.array([1.0, -1.0, -1.0])
    if pose is not None:
        normals = normals @ pose[:3, :3].T
    return normals


def read_mask_of_size(path: str | Path, shape: tuple[int, int], what: str) -> np.ndarray:
    """A GT mask (``(H, W) bool``, see :func:`~anomalib_3d.data.io.read_mask_png`) that must have
    the depth map's ``shape``; ``what`` names it in the message."""
    mask = read_mask_png(path)
    if mask.shape != shape:
        raise GroundTruthMismatchError(
            f"{what} is {mask.shape[1]}x{mask.shape[0]} but the depth map is {shape[1]}x{shape[0]}.",
            path=path,
            fix="masks must have the depth map's size; re-extract the sample from the archive",
        )
    return mask
