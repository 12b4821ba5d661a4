"""Point-wise ground truth of Real3D-AD / Anomaly-ShapeNet: ``x y z label`` text rows, one per
point of the cloud, ``label`` 0 (normal) or 1 (anomalous)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from anomalib_3d.data.io.cloud import MAX_ABS_COORDINATE, as_array, as_points, validate_points
from anomalib_3d.data.io.files import format_rows, require_file
from anomalib_3d.runtime.files import write_atomic
from anomalib_3d.data.io.text_body import TEXT_COMMENTS, line_of_data_row, load_text_body, peek_text_layout
from anomalib_3d.errors import CorruptFileError, DegeneratePointCloudError, EmptyPointCloudError, GroundTruthMismatchError


def read_gt_txt(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read Real3D-AD / Anomaly-ShapeNet point-wise ground truth.

    Args:
        path: text file with one ``x y z label`` row per point (space- or comma-separated);
            ``label`` is 0 (normal) or 1 (anomalous), written as an integer or a float.

    Returns:
        ``(points (N, 3) float32, labels (N,) uint8)``.

    Raises:
        CorruptFileError: a row does not have 4 values, a value is not numeric, or a label is
            not 0/1 (the message names the line and the values found).
        EmptyPointCloudError / InvalidPointsError: no rows, NaN/inf or float32-overflowing
            coordinates; DegeneratePointCloudError: coordinates beyond :data:`MAX_ABS_COORDINATE`.
    """
    path = Path(path)
    path = require_file(path)
    body, delimiter, _, tokens = peek_text_layout(path)
    if not tokens:
        raise EmptyPointCloudError("ground-truth file has no rows.", path, "re-generate or re-download the ground truth.")
    if len(tokens) != 4:
        raise CorruptFileError(
            f"the first row has {len(tokens)} columns; ground truth needs exactly 4 (x y z label).",
            path,
            "pass the gt/*.txt file of the sample (not the point cloud), or re-export it as "
            "'x y z label' rows.",
        )
    table = load_text_body(
        path, body, width=4, what="ground truth", delimiter=delimiter, comments=TEXT_COMMENTS,
        fix="re-export the ground truth as 'x y z label' rows of plain numbers.",
    )
    if len(table) == 0:
        raise EmptyPointCloudError("ground-truth file has no rows.", path, "re-generate or re-download the ground truth.")
    labels = table[:, 3]
    invalid = (labels != 0) & (labels != 1)
    if invalid.any():
        first = int(np.flatnonzero(invalid)[0])
        found = np.unique(labels[invalid])[:5]
        raise CorruptFileError(
            f"labels must be 0 or 1 but {int(invalid.sum())} rows have other values "
            f"(e.g. {found.tolist()}, first on line {line_of_data_row(path, body, first, TEXT_COMMENTS)}).",
            path,
            "binarize the labels (anomalous -> 1, normal -> 0).",
        )
    points = table[:, :3]
    validate_points(points, path)
    magnitude = np.abs(points)
    if float(magnitude.max()) > MAX_ABS_COORDINATE:
        raise DegeneratePointCloudError(
            f"{int((magnitude > MAX_ABS_COORDINATE).any(axis=1).sum())} rows have a coordinate beyond "
            f"{MAX_ABS_COORDINATE:.0e} in magnitude.",
            path,
            "re-export the ground truth (and its cloud) in their real unit.",
        )
    return np.ascontiguousarray(points, dtype=np.float32), labels.astype(np.uint8)


def write_gt_txt(path: str | Path, points: Any, labels: Any) -> None:
    """Write Real3D-AD style point ground truth: one ``x y z label`` row per point.

    Args:
        path: destination ``.txt``.
        points: ``(N, 3)`` coordinates (float32, 9 significant digits: exact round trip).
        labels: ``(N,)`` 0/1 (bool or integer).
    """
    path = Path(path)
    pts = as_points(points, path)
    labels = as_array(labels).reshape(-1)
    if labels.shape[0] != pts.shape[0]:
        raise GroundTruthMismatchError(
            f"{labels.shape[0]} labels for {pts.shape[0]} points.", path, "pass one label per point."
        )
    if not np.isin(labels, (0, 1)).all():
        raise GroundTruthMismatchError(
            f"labels must be 0 or 1, got values {np.unique(labels)[:5].tolist()}.", path, "binarize the labels."
        )
    table = np.concatenate([pts.astype(np.float64), labels.astype(np.float64)[:, None]], axis=1)
    write_atomic(path, format_rows(table, "%.9g %.9g %.9g %d\n").encode("ascii"))


