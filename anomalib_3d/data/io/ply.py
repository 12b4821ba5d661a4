"""PLY files: the ``vertex`` element of ASCII and binary (little / big endian) files, read by
our own parser and written vertex-only (CloudCompare and MeshLab open them).

Strictness: the vertex count must be an integer; when the vertex element is the last one the
body must end with it (no trailing rows or bytes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anomalib_3d.data.io.cloud import (
    PointCloudData,
    PointCloudHeader,
    as_array,
    as_colors_u8,
    as_normals,
    as_points,
    finalize_cloud,
)
from anomalib_3d.data.io.files import FIX_TRUNCATED, format_rows, read_head
from anomalib_3d.runtime.files import write_atomic
from anomalib_3d.data.io.text_body import load_text_body, require_final_newline
from anomalib_3d.errors import CorruptFileError, InvalidPointsError, UnsupportedFormatError

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


@dataclass
class _PlyHeader:
    fmt: str
    elements: list[tuple[str, int, list[tuple[str, str, str | None]]]]
    vertex_index: int
    body_offset: int

    @property
    def vertex(self) -> tuple[str, int, list[tuple[str, str, str | None]]]:
        return self.elements[self.vertex_index]


def _parse_ply_header(raw: bytes, path: Path) -> _PlyHeader:
    if not raw.startswith(b"ply"):
        raise CorruptFileError("does not start with the 'ply' magic line.", path, "check the file is a PLY point cloud.")
    end = raw.find(b"end_header")
    if end < 0:
        raise CorruptFileError("PLY header has no 'end_header' line (truncated?).", path, "re-export the cloud.")
    newline = raw.find(b"\n", end)
    if newline < 0:
        raise CorruptFileError("PLY header's 'end_header' line is not terminated (truncated?).", path, "re-export the cloud.")
    header_lines = raw[:end].decode("ascii", errors="replace").splitlines()
    fmt = None
    elements: list[tuple[str, int, list[tuple[str, str, str | None]]]] = []
    fix = "re-export the cloud with a valid PLY header ('element vertex <count>', 'property <type> <name>')."
    for number, line in enumerate(header_lines[1:], start=2):
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        try:
            if parts[0] == "format":
                fmt = parts[1]
            elif parts[0] == "element":
                name = parts[1]
                if len(parts) < 3:
                    raise CorruptFileError(f"PLY header line {number} {line.strip()!r} has no element count.", path, fix)
                try:
                    count = int(parts[2])
                except ValueError:
                    raise CorruptFileError(
                        f"PLY header line {number} {line.strip()!r}: the element count {parts[2]!r} is not an integer.",
                        path,
                        fix,
                    ) from None
                if count < 0:
                    raise CorruptFileError(f"PLY header line {number} declares {count} elements.", path, fix)
                elements.append((name, count, []))
            elif parts[0] == "property":
                if not elements:
                    raise CorruptFileError(f"PLY header line {number} declares a property before any element.", path, fix)
                if parts[1] == "list":
                    elements[-1][2].append((parts[4], _PLY_TYPES.get(parts[3], "?"), _PLY_TYPES.get(parts[2], "?")))
                else:
                    elements[-1][2].append((parts[2], _PLY_TYPES.get(parts[1], "?"), None))
            else:
                raise CorruptFileError(f"PLY header line {number} {line.strip()[:60]!r} is not a PLY header line.", path, fix)
        except IndexError:
            raise CorruptFileError(f"PLY header line {number} {line.strip()!r} is incomplete.", path, fix) from None
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise UnsupportedFormatError(
            f"PLY format {fmt!r} is not supported.", path, "use ascii, binary_little_endian or binary_big_endian."
        )
    names = [e[0] for e in elements]
    if "vertex" not in names:
        raise CorruptFileError("PLY has no 'vertex' element.", path, "export the point cloud's vertices.")
    vertex_index = names.index("vertex")
    props = elements[vertex_index][2]
    if any(p[2] is not None for p in props) or any(p[1] == "?" for p in props):
        raise UnsupportedFormatError(
            "PLY vertex element has list or unknown-type properties.", path, "export vertices with scalar properties only."
        )
    prop_names = [p[0] for p in props]
    if not {"x", "y", "z"} <= set(prop_names):
        raise CorruptFileError(f"PLY vertex element has no x/y/z (has {prop_names}).", path, "export vertex positions.")
    if len(set(prop_names)) != len(prop_names):
        raise CorruptFileError(f"PLY vertex element repeats a property name ({prop_names}).", path, "re-export the cloud.")
    return _PlyHeader(fmt, elements, vertex_index, newline + 1)


def _ply_binary_layout(header: _PlyHeader, path: Path) -> tuple[int, np.dtype]:
    endian = "<" if header.fmt == "binary_little_endian" else ">"
    offset = header.body_offset
    for _, count, eprops in header.elements[: header.vertex_index]:
        if any(p[2] is not None for p in eprops) or any(p[1] == "?" for p in eprops):
            raise UnsupportedFormatError(
                "binary PLY has a list-property element before its vertices.",
                path,
                "re-export with the vertex element first.",
            )
        offset += count * sum(np.dtype(p[1]).itemsize for p in eprops)
    dtype = np.dtype([(name, endian + kind) for name, kind, _ in header.vertex[2]])
    return offset, dtype


def _check_ply_binary_size(header: _PlyHeader, path: Path, file_size: int) -> tuple[int, np.dtype]:
    offset, dtype = _ply_binary_layout(header, path)
    n = header.vertex[1]
    available = file_size - offset
    if available < n * dtype.itemsize:
        raise CorruptFileError(
            f"PLY header declares {n} vertices ({n * dtype.itemsize} bytes) but only "
            f"{max(0, available)} bytes follow the header.",
            path,
            FIX_TRUNCATED,
        )
    if header.vertex_index == len(header.elements) - 1 and available > n * dtype.itemsize:
        raise CorruptFileError(
            f"PLY header declares {n} vertices ({n * dtype.itemsize} bytes) but {available} bytes follow "
            "the header (trailing data, or a vertex count that is too small).",
            path,
            "re-export the cloud; the header does not describe the body.",
        )
    return offset, dtype


def read_ply_header(path: Path) -> PointCloudHeader:
    """Header of an existing ``.ply`` file; a binary body is checked against the file size."""
    header = _parse_ply_header(read_head(path, b"end_header"), path)
    if header.fmt != "ascii":
        _check_ply_binary_size(header, path, path.stat().st_size)
    fields = tuple(p[0] for p in header.vertex[2])
    return PointCloudHeader(
        path, header.vertex[1], fields, {"red", "green", "blue"} <= set(fields), {"nx", "ny", "nz"} <= set(fields)
    )


def read_ply(path: Path, drop_nonfinite: bool = False) -> PointCloudData:
    """Read the vertices of an existing ``.ply`` file (see :func:`anomalib_3d.data.io.read_point_cloud`).

    ``red/green/blue`` become colours in [0, 1] (integer types scaled by their maximum),
    ``nx/ny/nz`` normals, other properties ``scalars`` (e.g. ``scalar_score``).
    """
    header = _parse_ply_header(read_head(path, b"end_header"), path)
    _, n, props = header.vertex
    prop_names = [p[0] for p in props]

    if header.fmt == "ascii":
        skip_lines = sum(e[1] for e in header.elements[: header.vertex_index])
        offset = header.body_offset
        if skip_lines:
            with open(path, "rb") as handle:
                handle.seek(offset)
                for _ in range(skip_lines):
                    offset += len(handle.readline())
        is_last = header.vertex_index == len(header.elements) - 1
        if n:
            require_final_newline(path, "PLY ASCII body")
        fix = "re-export the cloud; each vertex row must hold one number per vertex property."
        table = load_text_body(
            path, offset, width=len(props), what="PLY ASCII body", fix=fix,
            max_rows=None if is_last else n,
        )
        if n == 0 and table.shape[1] == 0:
            table = np.zeros((0, len(props)))
        if len(table) < n:
            raise CorruptFileError(
                f"PLY header declares {n} vertices but the ASCII body has only {len(table)} rows.",
                path,
                FIX_TRUNCATED,
            )
        if len(table) > n:
            raise CorruptFileError(
                f"PLY header declares {n} vertices but the ASCII body has {len(table)} rows "
                "(trailing data, or a vertex count that is too small).",
                path,
                "re-export the cloud; the header does not describe the body.",
            )
        columns = {name: table[:, i] for i, name in enumerate(prop_names)}
    else:
        offset, dtype = _check_ply_binary_size(header, path, path.stat().st_size)
        raw = path.read_bytes()
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
    return finalize_cloud(points, path, colors, normals, scalars, drop_nonfinite)


_PLY_SCALAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def write_ply(
    path: str | Path,
    points: Any,
    colors: Any | None = None,
    scalars: dict[str, Any] | None = None,
    binary: bool = False,
    normals: Any | None = None,
    scalar_prefix: str = "scalar_",
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
        scalar_prefix: prefix of the scalar property names; ``""`` writes ``{"anomaly_score": s}``
            as the property ``anomaly_score`` (Open3D's tensor reader then names the attribute so).
    """
    path = Path(path)
    pts = as_points(points, path)
    n = len(pts)
    fields: list[tuple[str, str, np.ndarray]] = [
        ("x", "f4", pts[:, 0]), ("y", "f4", pts[:, 1]), ("z", "f4", pts[:, 2])
    ]  # fmt: skip
    if normals is not None:
        nrm = as_normals(normals, n, path)
        fields += [("nx", "f4", nrm[:, 0]), ("ny", "f4", nrm[:, 1]), ("nz", "f4", nrm[:, 2])]
    if colors is not None:
        rgb = as_colors_u8(colors, n, path)
        fields += [("red", "u1", rgb[:, 0]), ("green", "u1", rgb[:, 1]), ("blue", "u1", rgb[:, 2])]
    for name, values in (scalars or {}).items():
        values = as_array(values, dtype=np.float32).reshape(-1)
        if values.shape[0] != n:
            raise InvalidPointsError(f"scalar {name!r} has {values.shape[0]} values for {n} points.", path, "pass one value per point.")
        prop = name if name.startswith(scalar_prefix) else f"{scalar_prefix}{name}"
        if not _PLY_SCALAR_NAME.match(prop):
            raise ValueError(f"scalar name {name!r} must be an identifier (letters, digits, underscore)")
        if prop in {field_name for field_name, _, _ in fields}:
            raise ValueError(f"scalar name {prop!r} is already a property of the vertex (coordinates, normals, colours)")
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
        write_atomic(path, header.encode("ascii") + records.tobytes())
        return
    table = np.stack([values.astype(np.float64) for _, _, values in fields], axis=1)
    row_format = " ".join("%.9g" if kind == "f4" else "%d" for _, kind, _ in fields) + "\n"
    write_atomic(path, header.encode("ascii") + format_rows(table, row_format).encode("ascii"))
