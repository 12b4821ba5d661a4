"""Readers and writers for the 3D anomaly-detection file formats.

Readers return numpy arrays (points always ``float32``) and raise the named errors of
:mod:`anomalib_3d.data.errors`; every message names the file, the problem and the fix.

Supported inputs:

* point clouds (:func:`read_point_cloud`): ``.pcd`` (ASCII, binary and binary_compressed),
  ``.ply`` (ASCII and binary, vertex element), ``.xyz`` / ``.txt`` / ``.pts`` (text columns),
  ``.npy`` ((N, 3) or (N, 6) arrays);
* MVTec 3D-AD organized clouds (:func:`read_organized_xyz`): float ``.tiff`` of shape (H, W, 3),
  zeros meaning "no point";
* Real3D-AD / Anomaly-ShapeNet point ground truth (:func:`read_gt_txt`): ``x y z label`` rows;
* masks and RGB images (:func:`read_mask_png`, :func:`read_rgb`).

The PCD and PLY parsers are our own rather than Open3D's: Open3D silently returns an empty cloud
for missing, truncated or corrupt files, whereas we must say which file is broken and how.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anomalib_3d.data.errors import (
    CorruptFileError,
    DatasetRootNotFoundError,
    EmptyPointCloudError,
    GroundTruthMismatchError,
    InvalidPointsError,
    UnsupportedFormatError,
)

POINT_CLOUD_EXTENSIONS = (".pcd", ".ply", ".xyz", ".txt", ".pts", ".npy")
TIFF_EXTENSIONS = (".tiff", ".tif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tiff", ".tif")
TEXT_COLUMN_LAYOUTS = ("xyz", "xyzrgb", "xyznormal", "xyzrgbnormal")


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


# ----------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------


def _require_file(path: str | Path) -> Path:
    """Return ``path`` as a Path, raising a named error when it is not an existing file."""
    path = Path(path)
    if not path.exists():
        # DatasetRootNotFoundError subclasses FileNotFoundError, so `except FileNotFoundError`
        # keeps working for callers that do not know our error family.
        raise DatasetRootNotFoundError(
            "file does not exist.",
            path,
            "check the path (and the dataset root it was built from), or re-download / "
            "re-generate the dataset.",
        )
    if path.is_dir():
        raise CorruptFileError(
            "is a directory, but a file was expected.",
            path,
            "pass the path of a single file inside it.",
        )
    return path


def validate_points(points: Any, path: str | Path | None = None) -> None:
    """Check that ``points`` is a non-empty ``(N, 3)`` array of finite coordinates.

    Args:
        points: ``(N, 3)`` numpy array or torch tensor (any device).
        path: the file the points came from, named in the error message.

    Raises:
        InvalidPointsError: wrong shape, or NaN/inf coordinates (the message says how many).
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
        bad_rows = ~np.isfinite(np.asarray(points)).all(axis=1)
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


def _finalize(
    points: np.ndarray,
    path: Path,
    colors: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    scalars: dict[str, np.ndarray] | None = None,
    drop_nonfinite: bool = False,
) -> PointCloudData:
    points = np.ascontiguousarray(points, dtype=np.float32)
    if drop_nonfinite and points.ndim == 2 and points.shape[1] == 3:
        keep = np.isfinite(points).all(axis=1)
        if not keep.all():
            points = points[keep]
            colors = colors[keep] if colors is not None else None
            normals = normals[keep] if normals is not None else None
            scalars = {k: v[keep] for k, v in (scalars or {}).items()}
    validate_points(points, path)
    if colors is not None:
        colors = np.ascontiguousarray(np.clip(colors, 0.0, 1.0), dtype=np.float32)
    if normals is not None:
        normals = np.ascontiguousarray(normals, dtype=np.float32)
    return PointCloudData(points=points, colors=colors, normals=normals, scalars=scalars or {})


# ----------------------------------------------------------------------------------------------
# PCD
# ----------------------------------------------------------------------------------------------

_PCD_TYPES = {
    ("F", 4): "f4",
    ("F", 8): "f8",
    ("I", 1): "i1",
    ("I", 2): "i2",
    ("I", 4): "i4",
    ("I", 8): "i8",
    ("U", 1): "u1",
    ("U", 2): "u2",
    ("U", 4): "u4",
    ("U", 8): "u8",
}
_PCD_HEADER_KEYS = ("VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS", "DATA")


@dataclass
class _PcdHeader:
    fields: list[str]
    sizes: list[int]
    types: list[str]
    counts: list[int]
    num_points: int
    data: str
    body_offset: int


def _parse_pcd_header(raw: bytes, path: Path) -> _PcdHeader:
    entries: dict[str, list[str]] = {}
    offset = 0
    while True:
        end = raw.find(b"\n", offset)
        if end < 0:
            raise CorruptFileError(
                "PCD header ends before its DATA line (file truncated or not a PCD file).",
                path,
                "re-export the cloud; a PCD header must end with a 'DATA ascii|binary|"
                "binary_compressed' line.",
            )
        line = raw[offset:end].decode("ascii", errors="replace").strip()
        offset = end + 1
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        key = key.upper()
        if key not in _PCD_HEADER_KEYS:
            raise CorruptFileError(
                f"unexpected PCD header line {line[:60]!r}.",
                path,
                "check the file is a PCD point cloud (header keys VERSION, FIELDS, SIZE, TYPE, "
                "COUNT, WIDTH, HEIGHT, VIEWPOINT, POINTS, DATA).",
            )
        entries[key] = values
        if key == "DATA":
            break

    missing = [k for k in ("FIELDS", "SIZE", "TYPE", "DATA") if k not in entries]
    if missing:
        raise CorruptFileError(
            f"PCD header lacks {', '.join(missing)}.",
            path,
            "re-export the cloud with a complete PCD v0.7 header.",
        )
    fields = entries["FIELDS"]
    try:
        sizes = [int(s) for s in entries["SIZE"]]
        counts = [int(c) for c in entries.get("COUNT", ["1"] * len(fields))]
        if "POINTS" in entries:
            num_points = int(entries["POINTS"][0])
        else:
            num_points = int(entries["WIDTH"][0]) * int(entries.get("HEIGHT", ["1"])[0])
    except (ValueError, IndexError, KeyError) as err:
        raise CorruptFileError(
            f"PCD header has a non-integer SIZE/COUNT/WIDTH/HEIGHT/POINTS value ({err}).",
            path,
            "re-export the cloud with a valid PCD header.",
        ) from err
    types = [t.upper() for t in entries["TYPE"]]
    if not (len(fields) == len(sizes) == len(types) == len(counts)):
        raise CorruptFileError(
            f"PCD header lists {len(fields)} FIELDS but {len(sizes)} SIZE, {len(types)} TYPE and "
            f"{len(counts)} COUNT entries.",
            path,
            "re-export the cloud; these four header lines must have one entry per field.",
        )
    for name, size, kind in zip(fields, sizes, types):
        if (kind, size) not in _PCD_TYPES:
            raise CorruptFileError(
                f"PCD field {name!r} has unsupported TYPE {kind} with SIZE {size}.",
                path,
                "use TYPE F (size 4/8), I or U (size 1/2/4/8).",
            )
    if not {"x", "y", "z"} <= set(fields):
        raise CorruptFileError(
            f"PCD has no x/y/z fields (FIELDS {' '.join(fields)}).",
            path,
            "export the cloud with x y z fields.",
        )
    data = entries["DATA"][0].lower() if entries["DATA"] else ""
    if data not in ("ascii", "binary", "binary_compressed"):
        raise UnsupportedFormatError(
            f"PCD DATA type {data!r} is not supported.",
            path,
            "use DATA ascii, binary or binary_compressed.",
        )
    if num_points < 0:
        raise CorruptFileError(f"PCD header declares {num_points} points.", path, "re-export the cloud.")
    return _PcdHeader(fields, sizes, types, counts, num_points, data, offset)


def _pcd_record_dtype(header: _PcdHeader) -> np.dtype:
    columns = []
    for name, size, kind, count in zip(header.fields, header.sizes, header.types, header.counts):
        base = "<" + _PCD_TYPES[(kind, size)]
        # '_' is PCL's padding field name and may repeat; make names unique for numpy.
        unique = f"{name}__{len(columns)}"
        columns.append((unique, base, (count,)) if count > 1 else (unique, base))
    return np.dtype(columns)


def lzf_decompress(data: bytes, expected_size: int) -> bytes:
    """Decompress an LZF block (the codec of PCD ``binary_compressed``).

    Args:
        data: compressed bytes.
        expected_size: size of the decompressed payload, as stored in the PCD body.

    Raises:
        ValueError: the stream is malformed or does not decompress to ``expected_size`` bytes.
    """
    out = bytearray(expected_size)
    in_pos = 0
    out_pos = 0
    n = len(data)
    while in_pos < n:
        ctrl = data[in_pos]
        in_pos += 1
        if ctrl < 32:  # literal run of ctrl + 1 bytes
            run = ctrl + 1
            if in_pos + run > n or out_pos + run > expected_size:
                raise ValueError("literal run past the end of the LZF stream")
            out[out_pos : out_pos + run] = data[in_pos : in_pos + run]
            in_pos += run
            out_pos += run
        else:  # back reference
            length = ctrl >> 5
            if length == 7:
                if in_pos >= n:
                    raise ValueError("truncated LZF back reference")
                length += data[in_pos]
                in_pos += 1
            if in_pos >= n:
                raise ValueError("truncated LZF back reference")
            ref = out_pos - ((ctrl & 0x1F) << 8) - data[in_pos] - 1
            in_pos += 1
            length += 2
            if ref < 0 or out_pos + length > expected_size:
                raise ValueError("LZF back reference outside the output")
            # Byte-wise copy: the source and destination may overlap (run-length repeats).
            for k in range(length):
                out[out_pos + k] = out[ref + k]
            out_pos += length
    if out_pos != expected_size:
        raise ValueError(f"LZF stream decompressed to {out_pos} bytes, expected {expected_size}")
    return bytes(out)


def _read_pcd_records(path: Path, drop_nonfinite: bool) -> PointCloudData:
    raw = path.read_bytes()
    header = _parse_pcd_header(raw, path)
    dtype = _pcd_record_dtype(header)
    n = header.num_points
    body = raw[header.body_offset :]
    fix_truncated = "the file was cut short (interrupted copy or download): copy or re-export it again."

    if header.data == "ascii":
        values_per_row = sum(header.counts)
        rows = [line.split() for line in body.decode("ascii", errors="replace").splitlines()]
        rows = [r for r in rows if r]
        if len(rows) != n:
            raise CorruptFileError(
                f"PCD header declares POINTS {n} but the ASCII body has {len(rows)} rows.",
                path,
                fix_truncated if len(rows) < n else "fix the POINTS/WIDTH header values.",
            )
        bad = next((i for i, r in enumerate(rows) if len(r) != values_per_row), None)
        if bad is not None:
            raise CorruptFileError(
                f"PCD ASCII row {bad} has {len(rows[bad])} values, expected {values_per_row}.",
                path,
                fix_truncated,
            )
        try:
            flat = np.array([v for r in rows for v in r], dtype=np.float64).reshape(n, values_per_row)
        except ValueError as err:
            raise CorruptFileError(f"PCD ASCII body has a non-numeric value ({err}).", path, fix_truncated) from err
        columns: dict[str, np.ndarray] = {}
        col = 0
        for name, kind, count in zip(header.fields, header.types, header.counts):
            values = flat[:, col : col + count]
            col += count
            if name in ("rgb", "rgba"):
                # Packed colour: integer text, or the float whose bits hold 0x00RRGGBB.
                if kind == "F":
                    values = values.astype(np.float32).view(np.uint32).astype(np.float64)
            columns.setdefault(name, values[:, 0] if count == 1 else values)
        return _pcd_columns_to_data(columns, header, path, drop_nonfinite)

    if header.data == "binary":
        needed = n * dtype.itemsize
        if len(body) < needed:
            raise CorruptFileError(
                f"PCD header declares POINTS {n} ({needed} bytes of binary data) but the body has "
                f"only {len(body)} bytes.",
                path,
                fix_truncated,
            )
        records = np.frombuffer(body, dtype=dtype, count=n)
    else:  # binary_compressed: two uint32 sizes, then the LZF stream of field-major arrays
        if len(body) < 8:
            raise CorruptFileError("PCD binary_compressed body is missing its size words.", path, fix_truncated)
        compressed_size, raw_size = struct.unpack("<II", body[:8])
        if raw_size != n * dtype.itemsize:
            raise CorruptFileError(
                f"PCD header declares POINTS {n} ({n * dtype.itemsize} bytes) but the compressed "
                f"block holds {raw_size} bytes.",
                path,
                "fix the POINTS/WIDTH header values or re-export the cloud.",
            )
        if len(body) < 8 + compressed_size:
            raise CorruptFileError(
                f"PCD compressed block declares {compressed_size} bytes but only {len(body) - 8} remain.",
                path,
                fix_truncated,
            )
        try:
            payload = lzf_decompress(body[8 : 8 + compressed_size], raw_size)
        except ValueError as err:
            raise CorruptFileError(f"PCD compressed block is corrupt ({err}).", path, fix_truncated) from err
        records = np.empty(n, dtype=dtype)
        offset = 0
        for name in dtype.names:
            sub = dtype.fields[name][0]
            nbytes = sub.itemsize * n
            count = n * max(1, int(np.prod(sub.shape)))
            column = np.frombuffer(payload, dtype=sub.base, count=count, offset=offset)
            records[name] = column.reshape((n, *sub.shape))
            offset += nbytes

    columns = {}
    for unique in dtype.names:
        name = unique.rsplit("__", 1)[0]
        values = records[unique]
        if name in ("rgb", "rgba") and values.dtype.kind == "f":
            values = values.view(np.uint32)
        columns.setdefault(name, values)
    return _pcd_columns_to_data(columns, header, path, drop_nonfinite)


def _pcd_columns_to_data(
    columns: dict[str, np.ndarray], header: _PcdHeader, path: Path, drop_nonfinite: bool
) -> PointCloudData:
    points = np.stack([columns["x"], columns["y"], columns["z"]], axis=1)
    colors = None
    for key in ("rgb", "rgba"):
        if key in columns:
            packed = columns[key].astype(np.uint64).astype(np.uint32)
            colors = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=1) / 255.0
            break
    normals = None
    if {"normal_x", "normal_y", "normal_z"} <= columns.keys():
        normals = np.stack([columns["normal_x"], columns["normal_y"], columns["normal_z"]], axis=1)
    skip = {"x", "y", "z", "rgb", "rgba", "normal_x", "normal_y", "normal_z", "_"}
    scalars = {k: np.asarray(v, dtype=np.float32) for k, v in columns.items() if k not in skip and np.ndim(v) == 1}
    return _finalize(points, path, colors, normals, scalars, drop_nonfinite)


# ----------------------------------------------------------------------------------------------
# PLY
# ----------------------------------------------------------------------------------------------

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


def _read_ply(path: Path, drop_nonfinite: bool) -> PointCloudData:
    raw = path.read_bytes()
    if not raw.startswith(b"ply"):
        raise CorruptFileError("does not start with the 'ply' magic line.", path, "check the file is a PLY point cloud.")
    end = raw.find(b"end_header")
    if end < 0:
        raise CorruptFileError("PLY header has no 'end_header' line (truncated?).", path, "re-export the cloud.")
    body_start = raw.find(b"\n", end) + 1
    header_lines = raw[:end].decode("ascii", errors="replace").splitlines()
    fmt = None
    elements: list[tuple[str, int, list[tuple[str, str, str | None]]]] = []
    for line in header_lines[1:]:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "element":
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property" and elements:
            if parts[1] == "list":
                elements[-1][2].append((parts[4], _PLY_TYPES.get(parts[3], "?"), _PLY_TYPES.get(parts[2], "?")))
            else:
                elements[-1][2].append((parts[2], _PLY_TYPES.get(parts[1], "?"), None))
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise UnsupportedFormatError(
            f"PLY format {fmt!r} is not supported.", path, "use ascii, binary_little_endian or binary_big_endian."
        )
    names = [e[0] for e in elements]
    if "vertex" not in names:
        raise CorruptFileError("PLY has no 'vertex' element.", path, "export the point cloud's vertices.")
    vertex_index = names.index("vertex")
    _, n, props = elements[vertex_index]
    if any(p[2] is not None for p in props) or any(p[1] == "?" for p in props):
        raise UnsupportedFormatError(
            "PLY vertex element has list or unknown-type properties.", path, "export vertices with scalar properties only."
        )
    prop_names = [p[0] for p in props]
    if not {"x", "y", "z"} <= set(prop_names):
        raise CorruptFileError(f"PLY vertex element has no x/y/z (has {prop_names}).", path, "export vertex positions.")

    if fmt == "ascii":
        lines = raw[body_start:].decode("ascii", errors="replace").splitlines()
        skip_lines = sum(e[1] for e in elements[:vertex_index])
        rows = [line.split() for line in lines[skip_lines : skip_lines + n]]
        if len(rows) < n or any(len(r) != len(props) for r in rows):
            raise CorruptFileError(
                f"PLY header declares {n} vertices with {len(props)} properties but the ASCII body "
                "has fewer or malformed rows.",
                path,
                "the file was cut short: re-export it.",
            )
        table = np.array(rows, dtype=np.float64) if n else np.zeros((0, len(props)))
        columns = {name: table[:, i] for i, name in enumerate(prop_names)}
    else:
        endian = "<" if fmt == "binary_little_endian" else ">"
        offset = body_start
        for _, count, eprops in elements[:vertex_index]:
            if any(p[2] is not None for p in eprops):
                raise UnsupportedFormatError(
                    "binary PLY has a list-property element before its vertices.",
                    path,
                    "re-export with the vertex element first.",
                )
            offset += count * sum(np.dtype(p[1]).itemsize for p in eprops)
        dtype = np.dtype([(name, endian + kind) for name, kind, _ in props])
        if len(raw) - offset < n * dtype.itemsize:
            raise CorruptFileError(
                f"PLY header declares {n} vertices ({n * dtype.itemsize} bytes) but only "
                f"{max(0, len(raw) - offset)} bytes follow the header.",
                path,
                "the file was cut short: copy or re-export it again.",
            )
        records = np.frombuffer(raw, dtype=dtype, count=n, offset=offset)
        columns = {name: records[name].astype(np.float64) for name in prop_names}

    points = np.stack([columns["x"], columns["y"], columns["z"]], axis=1)
    colors = None
    if {"red", "green", "blue"} <= columns.keys():
        colors = np.stack([columns["red"], columns["green"], columns["blue"]], axis=1)
        red_kind = dict((p[0], p[1]) for p in props)["red"]
        if red_kind[0] in "iu":
            colors = colors / float(np.iinfo(np.dtype(red_kind)).max)
    normals = None
    if {"nx", "ny", "nz"} <= columns.keys():
        normals = np.stack([columns["nx"], columns["ny"], columns["nz"]], axis=1)
    skip = {"x", "y", "z", "red", "green", "blue", "alpha", "nx", "ny", "nz"}
    scalars = {k: v.astype(np.float32) for k, v in columns.items() if k not in skip}
    return _finalize(points, path, colors, normals, scalars, drop_nonfinite)


# ----------------------------------------------------------------------------------------------
# Text columns and .npy
# ----------------------------------------------------------------------------------------------


def _split_columns(
    table: np.ndarray, layout: str | None, path: Path
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    num_cols = table.shape[1]
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
                    "pass columns='xyzrgb' or columns='xyznormal' to read_point_cloud.",
                )
        elif num_cols == 9:
            layout = "xyzrgbnormal"
        else:
            raise CorruptFileError(
                f"has {num_cols} columns; only 3 (x y z), 6 (x y z r g b | x y z nx ny nz) and 9 "
                "(x y z r g b nx ny nz) are understood without a hint.",
                path,
                f"pass columns= one of {TEXT_COLUMN_LAYOUTS} (extra trailing columns are then "
                "ignored), or use read_gt_txt for 'x y z label' ground truth files.",
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
        if colors.max(initial=0.0) > 1.0:
            colors = colors / 255.0
    if layout == "xyznormal":
        normals = table[:, 3:6]
    if layout == "xyzrgbnormal":
        normals = table[:, 6:9]
    return table[:, :3], colors, normals


def _read_text_table(path: Path) -> np.ndarray:
    """Read whitespace- or comma-separated numeric rows; all rows must have the same width."""
    text = path.read_text(errors="replace")
    rows = [line.replace(",", " ").split() for line in text.splitlines()]
    rows = [r for r in rows if r and not r[0].startswith(("#", "//"))]
    # Leica .pts files start with a line holding only the point count.
    if rows and len(rows[0]) == 1 and len(rows) > 1 and len(rows[1]) > 1 and rows[0][0].isdigit():
        declared = int(rows[0][0])
        rows = rows[1:]
        if declared != len(rows):
            raise CorruptFileError(
                f"first line declares {declared} points but {len(rows)} rows follow.",
                path,
                "the file was cut short or the count line is wrong: re-export it.",
            )
    if not rows:
        raise EmptyPointCloudError("has no data rows.", path, "check the file was written completely.")
    width = len(rows[0])
    bad = next((i for i, r in enumerate(rows) if len(r) != width), None)
    if bad is not None:
        raise CorruptFileError(
            f"row {bad} has {len(rows[bad])} values but the first row has {width}.",
            path,
            "the file is truncated or mixes formats: re-export it.",
        )
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError as err:
        raise CorruptFileError(f"contains a non-numeric value ({err}).", path, "re-export the file as plain numbers.") from err


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
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in POINT_CLOUD_EXTENSIONS:
        raise UnsupportedFormatError(
            f"extension {suffix or '(none)'!r} is not a supported point-cloud format.",
            path,
            f"convert the cloud to one of {', '.join(POINT_CLOUD_EXTENSIONS)} "
            "(organized MVTec .tiff files are read with read_organized_xyz).",
        )
    path = _require_file(path)
    if suffix == ".pcd":
        return _read_pcd_records(path, drop_nonfinite)
    if suffix == ".ply":
        return _read_ply(path, drop_nonfinite)
    if suffix == ".npy":
        try:
            table = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise CorruptFileError(f"cannot be loaded as a .npy array ({err}).", path, "re-save it with numpy.save.") from err
        if table.ndim != 2:
            raise InvalidPointsError(
                f"holds an array of shape {table.shape}; expected (N, 3), (N, 6) or (N, 9).",
                path,
                "save one row per point.",
            )
        if table.shape[0] == 0 and table.shape[1] == 3:
            validate_points(table, path)
        pts, colors, normals = _split_columns(table.astype(np.float64), columns, path)
        return _finalize(pts, path, colors, normals, None, drop_nonfinite)
    table = _read_text_table(path)
    pts, colors, normals = _split_columns(table, columns, path)
    return _finalize(pts, path, colors, normals, None, drop_nonfinite)


# ----------------------------------------------------------------------------------------------
# Organized xyz, ground truth, images
# ----------------------------------------------------------------------------------------------


def read_organized_xyz(path: str | Path) -> np.ndarray:
    """Read an MVTec 3D-AD organized point cloud.

    Args:
        path: float ``.tiff`` holding ``(H, W, 3)`` camera-frame coordinates; all-zero pixels mean
            "no point" and are kept as zeros.

    Returns:
        ``(H, W, 3) float32``.

    Raises:
        DatasetRootNotFoundError, UnsupportedFormatError, CorruptFileError (unreadable, wrong
        shape or non-float dtype), InvalidPointsError (NaN/inf values).
    """
    import tifffile

    path = Path(path)
    if path.suffix.lower() not in TIFF_EXTENSIONS:
        raise UnsupportedFormatError(
            f"extension {path.suffix or '(none)'!r} is not an organized-xyz format.",
            path,
            "organized clouds are float TIFF files (.tiff/.tif) as in MVTec 3D-AD.",
        )
    path = _require_file(path)
    try:
        xyz = tifffile.imread(path)
    except Exception as err:  # tifffile raises several unrelated types for broken files
        raise CorruptFileError(f"cannot be decoded as TIFF ({err}).", path, "copy or re-export the file again.") from err
    if xyz.size == 0:  # tifffile logs a warning and returns nothing for a broken page table
        raise CorruptFileError("cannot be decoded as TIFF (no image data found).", path, "copy or re-export the file again.")
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise CorruptFileError(
            f"holds an image of shape {xyz.shape}; an organized cloud must be (H, W, 3).",
            path,
            "pass the xyz/*.tiff file, not an RGB or depth-only image.",
        )
    if xyz.dtype.kind != "f":
        raise CorruptFileError(
            f"holds {xyz.dtype} values; organized xyz must be floating point coordinates.",
            path,
            "pass the float32 xyz TIFF (MVTec 3D-AD xyz/ folder).",
        )
    xyz = np.ascontiguousarray(xyz, dtype=np.float32)
    num_bad = int((~np.isfinite(xyz)).any(axis=2).sum())
    if num_bad:
        raise InvalidPointsError(
            f"{num_bad} of {xyz.shape[0] * xyz.shape[1]} pixels have NaN or infinite coordinates.",
            path,
            "replace invalid pixels with zeros (the MVTec convention for 'no point').",
        )
    return xyz


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
        EmptyPointCloudError / InvalidPointsError: no rows, or NaN/inf coordinates.
    """
    path = Path(path)
    path = _require_file(path)
    text = path.read_text(errors="replace")
    rows = [line.replace(",", " ").split() for line in text.splitlines()]
    line_numbers = [i + 1 for i, r in enumerate(rows) if r]
    rows = [r for r in rows if r]
    if not rows:
        raise EmptyPointCloudError("ground-truth file has no rows.", path, "re-generate or re-download the ground truth.")
    bad = next((i for i, r in enumerate(rows) if len(r) != 4), None)
    if bad is not None:
        raise CorruptFileError(
            f"line {line_numbers[bad]} has {len(rows[bad])} columns; ground truth needs exactly 4 "
            "(x y z label).",
            path,
            "pass the gt/*.txt file of the sample (not the point cloud), or re-export it as "
            "'x y z label' rows.",
        )
    try:
        table = np.array(rows, dtype=np.float64)
    except ValueError as err:
        raise CorruptFileError(f"ground truth has a non-numeric value ({err}).", path, "re-export the file.") from err
    labels = table[:, 3]
    invalid = (labels != 0) & (labels != 1)
    if invalid.any():
        first = int(np.flatnonzero(invalid)[0])
        found = np.unique(labels[invalid])[:5]
        raise CorruptFileError(
            f"labels must be 0 or 1 but {int(invalid.sum())} rows have other values "
            f"(e.g. {found.tolist()}, first on line {line_numbers[first]}).",
            path,
            "binarize the labels (anomalous -> 1, normal -> 0).",
        )
    points = np.ascontiguousarray(table[:, :3], dtype=np.float32)
    validate_points(points, path)
    return points, labels.astype(np.uint8)


def _open_image(path: str | Path):
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise UnsupportedFormatError(
            f"extension {path.suffix or '(none)'!r} is not a supported image format.",
            path,
            f"use one of {', '.join(IMAGE_EXTENSIONS)}.",
        )
    path = _require_file(path)
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise CorruptFileError(f"cannot be decoded as an image ({err}).", path, "copy or re-export the file again.") from err
    return image, path


def read_mask_png(path: str | Path) -> np.ndarray:
    """Read a ground-truth mask; any nonzero value (in any channel) is anomalous.

    Returns:
        ``(H, W) bool``.
    """
    image, _ = _open_image(path)
    array = np.asarray(image)
    if array.ndim == 3:
        array = array.any(axis=2)
    return array != 0


def read_rgb(path: str | Path) -> np.ndarray:
    """Read a colour image; grayscale / palette / RGBA images are converted to RGB.

    Returns:
        ``(H, W, 3) uint8``.
    """
    image, _ = _open_image(path)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


# ----------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------


def _as_points(points: Any, path: Path) -> np.ndarray:
    points = np.asarray(points.detach().cpu() if hasattr(points, "detach") else points)
    validate_points(points, path)
    return np.ascontiguousarray(points, dtype=np.float32)


def _as_colors_u8(colors: Any, n: int, path: Path) -> np.ndarray:
    colors = np.asarray(colors.detach().cpu() if hasattr(colors, "detach") else colors)
    if colors.shape != (n, 3):
        raise InvalidPointsError(
            f"colors have shape {colors.shape} but there are {n} points.", path, "pass one RGB row per point."
        )
    if colors.dtype == np.uint8:
        return colors
    # Float colours are taken in [0, 1]; rounding (not truncation) keeps k/255 values exact.
    return np.clip(np.round(colors.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def _as_normals(normals: Any, n: int, path: Path) -> np.ndarray:
    normals = np.asarray(normals.detach().cpu() if hasattr(normals, "detach") else normals, dtype=np.float32)
    if normals.shape != (n, 3):
        raise InvalidPointsError(f"normals have shape {normals.shape} but there are {n} points.", path, "pass one normal per point.")
    return normals


def _format_rows(table: np.ndarray, row_format: str) -> str:
    """Format a (N, K) table with one %-template per row in a single C-level call (fast)."""
    if len(table) == 0:
        return ""
    return (row_format * len(table)) % tuple(table.ravel().tolist())


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_pcd(
    path: str | Path,
    points: Any,
    colors: Any | None = None,
    binary: bool = False,
    normals: Any | None = None,
) -> None:
    """Write a PCD v0.7 file that PCL, Open3D and CloudCompare read.

    Args:
        path: destination ``.pcd``.
        points: ``(N, 3)`` coordinates, written as float32 (ASCII uses 9 significant digits,
            enough to round-trip float32 exactly).
        colors: optional ``(N, 3)`` uint8, or float in [0, 1]; stored as PCL's packed ``rgb``.
        binary: write ``DATA binary`` instead of ``DATA ascii``.
        normals: optional ``(N, 3)`` normals (``normal_x normal_y normal_z`` fields).
    """
    path = Path(path)
    pts = _as_points(points, path)
    n = len(pts)
    fields, sizes, types = ["x", "y", "z"], ["4", "4", "4"], ["F", "F", "F"]
    columns: list[np.ndarray] = [pts]
    formats = ["%.9g %.9g %.9g"]
    packed = None
    if colors is not None:
        rgb = _as_colors_u8(colors, n, path).astype(np.uint32)
        packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
        fields.append("rgb"), sizes.append("4"), types.append("U")
        formats.append("%d")
    nrm = _as_normals(normals, n, path) if normals is not None else None
    if nrm is not None:
        fields += ["normal_x", "normal_y", "normal_z"]
        sizes += ["4"] * 3
        types += ["F"] * 3
        formats.append("%.9g %.9g %.9g")
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\n"
        f"FIELDS {' '.join(fields)}\nSIZE {' '.join(sizes)}\nTYPE {' '.join(types)}\n"
        f"COUNT {' '.join(['1'] * len(fields))}\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\n"
        f"POINTS {n}\nDATA {'binary' if binary else 'ascii'}\n"
    )
    if binary:
        dtype = [("xyz", "<f4", (3,))]
        if packed is not None:
            dtype.append(("rgb", "<u4"))
        if nrm is not None:
            dtype.append(("normal", "<f4", (3,)))
        records = np.empty(n, dtype=dtype)
        records["xyz"] = pts
        if packed is not None:
            records["rgb"] = packed
        if nrm is not None:
            records["normal"] = nrm
        _write_atomic(path, header.encode("ascii") + records.tobytes())
        return
    # Mixed float / integer columns: format as objects so %d gets ints and %.9g gets floats.
    parts: list[np.ndarray] = [pts.astype(np.float64)]
    if packed is not None:
        parts.append(packed.astype(np.float64)[:, None])
    if nrm is not None:
        parts.append(nrm.astype(np.float64))
    table = np.concatenate(parts, axis=1)
    body = _format_rows(table, " ".join(formats) + "\n")
    _write_atomic(path, header.encode("ascii") + body.encode("ascii"))


def write_gt_txt(path: str | Path, points: Any, labels: Any) -> None:
    """Write Real3D-AD style point ground truth: one ``x y z label`` row per point.

    Args:
        path: destination ``.txt``.
        points: ``(N, 3)`` coordinates (float32, 9 significant digits: exact round trip).
        labels: ``(N,)`` 0/1 (bool or integer).
    """
    path = Path(path)
    pts = _as_points(points, path)
    labels = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels).reshape(-1)
    if labels.shape[0] != pts.shape[0]:
        raise GroundTruthMismatchError(
            f"{labels.shape[0]} labels for {pts.shape[0]} points.", path, "pass one label per point."
        )
    if not np.isin(labels, (0, 1)).all():
        raise GroundTruthMismatchError(
            f"labels must be 0 or 1, got values {np.unique(labels)[:5].tolist()}.", path, "binarize the labels."
        )
    table = np.concatenate([pts.astype(np.float64), labels.astype(np.float64)[:, None]], axis=1)
    _write_atomic(path, _format_rows(table, "%.9g %.9g %.9g %d\n").encode("ascii"))


def write_organized_xyz(path: str | Path, xyz: Any) -> None:
    """Write an ``(H, W, 3)`` organized cloud as a float32 TIFF (MVTec 3D-AD ``xyz/*.tiff``).

    Zeros mean "no point"; NaN/inf are rejected.
    """
    import tifffile

    path = Path(path)
    xyz = np.asarray(xyz.detach().cpu() if hasattr(xyz, "detach") else xyz)
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise InvalidPointsError(f"organized xyz must have shape (H, W, 3), got {xyz.shape}.", path, "reshape the array.")
    if not np.isfinite(xyz).all():
        raise InvalidPointsError(
            "organized xyz has NaN/inf values.", path, "write zeros for pixels without a point (MVTec convention)."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.ascontiguousarray(xyz, dtype=np.float32), photometric="rgb")


def write_mask_png(path: str | Path, mask: Any) -> None:
    """Write an ``(H, W)`` mask as an 8-bit PNG: 255 where ``mask`` is nonzero, else 0."""
    from PIL import Image

    path = Path(path)
    mask = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)
    if mask.ndim != 2:
        raise InvalidPointsError(f"mask must have shape (H, W), got {mask.shape}.", path, "pass a 2D mask.")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask != 0, 255, 0).astype(np.uint8), mode="L").save(path, format="PNG")


def write_rgb_png(path: str | Path, rgb: Any) -> None:
    """Write an ``(H, W, 3)`` image (uint8, or float in [0, 1]) as a PNG."""
    from PIL import Image

    path = Path(path)
    rgb = np.asarray(rgb.detach().cpu() if hasattr(rgb, "detach") else rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InvalidPointsError(f"rgb must have shape (H, W, 3), got {rgb.shape}.", path, "pass an RGB image.")
    if rgb.dtype != np.uint8:
        rgb = np.clip(np.round(rgb.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, mode="RGB").save(path, format="PNG")


_PLY_SCALAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def write_ply(
    path: str | Path,
    points: Any,
    colors: Any | None = None,
    scalars: dict[str, Any] | None = None,
    binary: bool = False,
    normals: Any | None = None,
) -> None:
    """Write a vertex-only PLY that CloudCompare and MeshLab open.

    Args:
        path: destination ``.ply``.
        points: ``(N, 3)`` coordinates (float32).
        colors: optional ``(N, 3)`` uint8 or float [0, 1] colours (e.g. a score colour map),
            written as ``uchar red green blue``.
        scalars: optional name -> ``(N,)`` per-point values, written as ``float scalar_<name>``
            properties (CloudCompare shows them as scalar fields named ``<name>``; a name that
            already starts with ``scalar_`` is kept as is). E.g. ``{"score": scores}`` gives the
            ``scalar_score`` property.
        binary: ``binary_little_endian`` instead of ASCII.
        normals: optional ``(N, 3)`` normals (``nx ny nz``).
    """
    path = Path(path)
    pts = _as_points(points, path)
    n = len(pts)
    fields: list[tuple[str, str, np.ndarray]] = [
        ("x", "f4", pts[:, 0]), ("y", "f4", pts[:, 1]), ("z", "f4", pts[:, 2])
    ]  # fmt: skip
    if normals is not None:
        nrm = _as_normals(normals, n, path)
        fields += [("nx", "f4", nrm[:, 0]), ("ny", "f4", nrm[:, 1]), ("nz", "f4", nrm[:, 2])]
    if colors is not None:
        rgb = _as_colors_u8(colors, n, path)
        fields += [("red", "u1", rgb[:, 0]), ("green", "u1", rgb[:, 1]), ("blue", "u1", rgb[:, 2])]
    for name, values in (scalars or {}).items():
        values = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float32).reshape(-1)
        if values.shape[0] != n:
            raise InvalidPointsError(f"scalar {name!r} has {values.shape[0]} values for {n} points.", path, "pass one value per point.")
        prop = name if name.startswith("scalar_") else f"scalar_{name}"
        if not _PLY_SCALAR_NAME.match(prop):
            raise ValueError(f"scalar name {name!r} must be an identifier (letters, digits, underscore)")
        fields.append((prop, "f4", values))
    ply_type = {"f4": "float", "u1": "uchar"}
    header = (
        "ply\n"
        f"format {'binary_little_endian' if binary else 'ascii'} 1.0\n"
        "comment written by anomalib_3d\n"
        f"element vertex {n}\n"
        + "".join(f"property {ply_type[kind]} {name}\n" for name, kind, _ in fields)
        + "end_header\n"
    )
    if binary:
        records = np.empty(n, dtype=[(name, "<" + kind) for name, kind, _ in fields])
        for name, _, values in fields:
            records[name] = values
        _write_atomic(path, header.encode("ascii") + records.tobytes())
        return
    table = np.stack([values.astype(np.float64) for _, _, values in fields], axis=1)
    row_format = " ".join("%.9g" if kind == "f4" else "%d" for _, kind, _ in fields) + "\n"
    _write_atomic(path, header.encode("ascii") + _format_rows(table, row_format).encode("ascii"))


__all__ = [
    "IMAGE_EXTENSIONS",
    "POINT_CLOUD_EXTENSIONS",
    "PointCloudData",
    "lzf_decompress",
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
