"""Text-column clouds: ``.xyz`` / ``.txt`` / ``.pts`` files of one point per row.

Rows are whitespace- or comma-separated numbers, ``#`` / ``//`` comment lines are skipped, and
a Leica ``.pts`` count line is checked against the rows that follow. A decimal comma
(``15,68 21,31 11,08``) is refused rather than read as six columns. The column layout
(:data:`TEXT_COLUMN_LAYOUTS`) is given or inferred from the column count (3, 6 or 9), and six
ambiguous columns are refused rather than guessed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anomalib_3d.data.io.cloud import PointCloudData, PointCloudHeader, finalize_cloud
from anomalib_3d.data.io.text_body import TEXT_COMMENTS, load_text_body, peek_text_layout
from anomalib_3d.errors import CorruptFileError, EmptyPointCloudError

TEXT_COLUMN_LAYOUTS = ("xyz", "xyzrgb", "xyznormal", "xyzrgbnormal")


def split_columns(
    table: np.ndarray, layout: str | None, path: Path
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Split a ``(N, K)`` table into ``points (N, 3)``, colours and normals by column layout.

    Args:
        table: the parsed rows (text or ``.npy``).
        layout: one of :data:`TEXT_COLUMN_LAYOUTS`, or ``None`` to infer it from ``K``.
        path: the file, for messages.

    Returns:
        ``(points, colors or None, normals or None)``; 0-255 colours are scaled to [0, 1].
    """
    num_cols = table.shape[1]
    columns_fix = (
        "pass columns='xyzrgb' or columns='xyznormal' (read_point_cloud, or the datamodule's "
        "columns= option), or convert the cloud to .ply/.pcd, whose fields are named."
    )
    if layout is None:
        if num_cols == 3:
            layout = "xyz"
        elif num_cols == 6:
            extra = table[:, 3:6]
            looks_unit_rgb = extra.min() >= 0.0 and extra.max() <= 1.0
            looks_byte_rgb = extra.min() >= 0.0 and extra.max() <= 255.0 and np.all(extra == np.round(extra))
            looks_normals = np.allclose(np.linalg.norm(extra, axis=1), 1.0, atol=1e-2)
            if (looks_unit_rgb or looks_byte_rgb) and not looks_normals:
                layout = "xyzrgb"
            elif looks_normals and not (looks_unit_rgb or looks_byte_rgb):
                layout = "xyznormal"
            else:
                raise CorruptFileError(
                    "has 6 columns and it is ambiguous whether columns 4-6 are colours or normals.",
                    path,
                    columns_fix,
                )
        elif num_cols == 9:
            layout = "xyzrgbnormal"
        else:
            raise CorruptFileError(
                f"has {num_cols} columns; only 3 (x y z), 6 (x y z r g b | x y z nx ny nz) and 9 "
                "(x y z r g b nx ny nz) are understood without a hint.",
                path,
                f"pass columns= one of {TEXT_COLUMN_LAYOUTS} (read_point_cloud, or the datamodule's "
                "columns= option; extra trailing columns are then ignored), or use read_gt_txt for "
                "'x y z label' ground truth files.",
            )
    if layout not in TEXT_COLUMN_LAYOUTS:
        raise ValueError(f"columns must be one of {TEXT_COLUMN_LAYOUTS}, got {layout!r}")
    needed = {"xyz": 3, "xyzrgb": 6, "xyznormal": 6, "xyzrgbnormal": 9}[layout]
    if num_cols < needed:
        raise CorruptFileError(
            f"has {num_cols} columns but columns={layout!r} needs {needed}.",
            path,
            "pass the columns layout that matches the file.",
        )
    colors = normals = None
    if layout in ("xyzrgb", "xyzrgbnormal"):
        colors = table[:, 3:6]
        if colors.size and colors.max(initial=0.0) > 1.0:
            colors = colors / 255.0
    if layout == "xyznormal":
        normals = table[:, 3:6]
    if layout == "xyzrgbnormal":
        normals = table[:, 6:9]
    return table[:, :3], colors, normals


def _read_text_table(path: Path) -> np.ndarray:
    """Read whitespace- or comma-separated numeric rows; all rows must have the same width."""
    body, delimiter, declared, tokens = peek_text_layout(path)
    fix = "re-export the file as plain numbers, one point per row, the same number of columns on every row."
    table = load_text_body(
        path, body, width=len(tokens) or None, what="text cloud", fix=fix, delimiter=delimiter,
        comments=TEXT_COMMENTS,
    )
    if table.shape[0] == 0:
        raise EmptyPointCloudError("has no data rows.", path, "check the file was written completely.")
    if declared is not None and declared != len(table):
        raise CorruptFileError(
            f"first line declares {declared} points but {len(table)} rows follow.",
            path,
            "the file was cut short or the count line is wrong: re-export it.",
        )
    return table


def read_text_cloud(path: Path, columns: str | None = None, drop_nonfinite: bool = False) -> PointCloudData:
    """Read an existing text-column cloud (see :func:`anomalib_3d.data.io.read_point_cloud`)."""
    table = _read_text_table(path)
    pts, colors, normals = split_columns(table, columns, path)
    return finalize_cloud(pts, path, colors, normals, None, drop_nonfinite)


def read_text_header(path: Path) -> PointCloudHeader:
    """What the first data row of an existing text-column cloud says (the body is not read)."""
    _, _, declared, tokens = peek_text_layout(path)
    if not tokens:
        raise EmptyPointCloudError("has no data rows.", path, "check the file was written completely.")
    names = tuple(f"col{i}" for i in range(len(tokens)))
    return PointCloudHeader(path, declared, names, len(tokens) >= 6, len(tokens) >= 6)
