"""PCD (Point Cloud Library) files: ``ascii``, ``binary`` and ``binary_compressed`` bodies,
read by our own parser and written as PCD v0.7.

Our own parser rather than Open3D's: Open3D silently returns an empty cloud for missing,
truncated or corrupt files, whereas we must say which file is broken and how.

Strictness (a header that disagrees with its body is an error, never a guess): ``WIDTH ×
HEIGHT`` must equal ``POINTS``; ``COUNT`` ≥ 1; x/y/z must be ``TYPE F``; a binary body must be
exactly ``POINTS ×`` record size bytes (no trailing bytes); an ASCII body exactly ``POINTS``
rows of ``sum(COUNT)`` numbers; a ``binary_compressed`` header is refused before any allocation
when its uncompressed size cannot come from its compressed block (LZF expands at most
:data:`~anomalib_3d.data.io.lzf.LZF_MAX_EXPANSION` times).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anomalib_3d.data.io.cloud import (
    PointCloudData,
    PointCloudHeader,
    as_colors_u8,
    as_normals,
    as_points,
    finalize_cloud,
)
from anomalib_3d.data.io.files import FIX_TRUNCATED, format_rows, read_head
from anomalib_3d.runtime.files import write_atomic
from anomalib_3d.data.io.lzf import LZF_MAX_EXPANSION, lzf_decompress
from anomalib_3d.data.io.text_body import load_text_body, require_final_newline
from anomalib_3d.errors import CorruptFileError, UnsupportedFormatError

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


def _pcd_int(entries: dict[str, list[str]], key: str, path: Path, index: int = 0) -> int:
    try:
        return int(entries[key][index])
    except (ValueError, IndexError) as err:
        raise CorruptFileError(
            f"PCD header line {key} {' '.join(entries[key])!r} is not an integer.",
            path,
            "re-export the cloud with a valid PCD header.",
        ) from err


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
    if "POINTS" not in entries and "WIDTH" not in entries:
        missing.append("POINTS (or WIDTH)")
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
    except ValueError as err:
        raise CorruptFileError(
            f"PCD header has a non-integer SIZE or COUNT value ({err}).",
            path,
            "re-export the cloud with a valid PCD header.",
        ) from err
    width = _pcd_int(entries, "WIDTH", path) if "WIDTH" in entries else None
    height = _pcd_int(entries, "HEIGHT", path) if "HEIGHT" in entries else 1
    num_points = _pcd_int(entries, "POINTS", path) if "POINTS" in entries else width * height
    if num_points < 0 or height < 0 or (width is not None and width < 0):
        raise CorruptFileError(
            f"PCD header declares a negative size (POINTS {num_points}, WIDTH {width}, HEIGHT {height}).",
            path,
            "re-export the cloud.",
        )
    if width is not None and width * height != num_points:
        raise CorruptFileError(
            f"PCD header says WIDTH {width} x HEIGHT {height} = {width * height} points but POINTS {num_points}.",
            path,
            "re-export the cloud (the header is inconsistent, so which count is right is unknown).",
        )
    types = [t.upper() for t in entries["TYPE"]]
    if not (len(fields) == len(sizes) == len(types) == len(counts)):
        raise CorruptFileError(
            f"PCD header lists {len(fields)} FIELDS but {len(sizes)} SIZE, {len(types)} TYPE and "
            f"{len(counts)} COUNT entries.",
            path,
            "re-export the cloud; these four header lines must have one entry per field.",
        )
    for name, size, kind, count in zip(fields, sizes, types, counts):
        if (kind, size) not in _PCD_TYPES:
            raise CorruptFileError(
                f"PCD field {name!r} has unsupported TYPE {kind} with SIZE {size}.",
                path,
                "use TYPE F (size 4/8), I or U (size 1/2/4/8).",
            )
        if count < 1:
            raise CorruptFileError(
                f"PCD field {name!r} has COUNT {count}; every field holds at least one value.",
                path,
                "re-export the cloud (COUNT 1 for x, y, z).",
            )
    if not {"x", "y", "z"} <= set(fields):
        raise CorruptFileError(
            f"PCD has no x/y/z fields (FIELDS {' '.join(fields)}).",
            path,
            "export the cloud with x y z fields.",
        )
    for axis in ("x", "y", "z"):
        i = fields.index(axis)
        if types[i] != "F" or counts[i] != 1:
            raise CorruptFileError(
                f"PCD field {axis!r} is declared TYPE {types[i]} SIZE {sizes[i]} COUNT {counts[i]}; "
                "coordinates must be floats (TYPE F, COUNT 1).",
                path,
                "re-export the cloud: a header declaring integer coordinates over float data reads "
                "as garbage, so it is refused rather than guessed.",
            )
    for key in ("rgb", "rgba"):
        if key in fields and sizes[fields.index(key)] != 4:
            raise CorruptFileError(
                f"PCD field {key!r} has SIZE {sizes[fields.index(key)]}; packed colours are 4 bytes.",
                path,
                "re-export the cloud with 'rgb' as SIZE 4 (TYPE U or F).",
            )
    data = entries["DATA"][0].lower() if entries["DATA"] else ""
    if data not in ("ascii", "binary", "binary_compressed"):
        raise UnsupportedFormatError(
            f"PCD DATA type {data!r} is not supported.",
            path,
            "use DATA ascii, binary or binary_compressed.",
        )
    return _PcdHeader(fields, sizes, types, counts, num_points, data, offset)


def _pcd_record_dtype(header: _PcdHeader) -> np.dtype:
    columns = []
    for name, size, kind, count in zip(header.fields, header.sizes, header.types, header.counts):
        base = "<" + _PCD_TYPES[(kind, size)]
        # '_' is PCL's padding field name and may repeat; make names unique for numpy.
        unique = f"{name}__{len(columns)}"
        columns.append((unique, base, (count,)) if count > 1 else (unique, base))
    return np.dtype(columns)


def _looks_like_text(body: bytes) -> bool:
    sample = body[:4096]
    return bool(sample) and all(c in b"0123456789+-.eEnaifNAIF \t\r\n" for c in sample)


def _check_pcd_body_size(header: _PcdHeader, dtype: np.dtype, body_size: int, size_words: tuple[int, int] | None, path: Path) -> None:
    """Header-vs-file-size checks of binary PCD bodies (no body read needed)."""
    n = header.num_points
    if header.data == "binary":
        needed = n * dtype.itemsize
        if body_size != needed:
            hint = ""
            if body_size > needed:
                hint = f" ({body_size - needed} bytes too many: trailing data, or a header that undercounts)"
            raise CorruptFileError(
                f"PCD header declares POINTS {n} x {dtype.itemsize}-byte records = {needed} bytes of "
                f"binary data but the body has {body_size} bytes{hint}.",
                path,
                FIX_TRUNCATED if body_size < needed else "re-export the cloud; the header does not describe the body.",
            )
    elif header.data == "binary_compressed":
        if body_size < 8 or size_words is None:
            raise CorruptFileError("PCD binary_compressed body is missing its size words.", path, FIX_TRUNCATED)
        compressed_size, raw_size = size_words
        if raw_size != n * dtype.itemsize:
            raise CorruptFileError(
                f"PCD header declares POINTS {n} ({n * dtype.itemsize} bytes) but the compressed "
                f"block holds {raw_size} bytes.",
                path,
                "fix the POINTS/WIDTH header values or re-export the cloud.",
            )
        if body_size - 8 < compressed_size:
            raise CorruptFileError(
                f"PCD compressed block declares {compressed_size} bytes but only {body_size - 8} remain.",
                path,
                FIX_TRUNCATED,
            )
        if body_size - 8 > compressed_size:
            raise CorruptFileError(
                f"PCD compressed block of {compressed_size} bytes is followed by {body_size - 8 - compressed_size} "
                "unexpected bytes.",
                path,
                "re-export the cloud; the file has trailing data after its body.",
            )
        if raw_size > LZF_MAX_EXPANSION * compressed_size + 2:
            raise CorruptFileError(
                f"PCD compressed block of {compressed_size} bytes claims {raw_size} uncompressed bytes, "
                f"more than LZF can expand to ({LZF_MAX_EXPANSION}x).",
                path,
                "the header or size words are corrupt: re-export the cloud.",
            )


def _pcd_header_of(path: Path) -> tuple[_PcdHeader, np.dtype]:
    head = read_head(path, b"DATA")
    header = _parse_pcd_header(head, path)
    dtype = _pcd_record_dtype(header)
    body_size = path.stat().st_size - header.body_offset
    words = None
    if header.data == "binary_compressed" and len(head) >= header.body_offset + 8:
        words = struct.unpack("<II", head[header.body_offset : header.body_offset + 8])
    elif header.data == "binary_compressed" and body_size >= 8:
        with open(path, "rb") as handle:
            handle.seek(header.body_offset)
            words = struct.unpack("<II", handle.read(8))
    if header.data == "binary" and body_size != header.num_points * dtype.itemsize:
        body = head[header.body_offset :]
        if _looks_like_text(body):
            raise CorruptFileError(
                f"PCD header says DATA binary but the body is ASCII text ({body_size} bytes for "
                f"POINTS {header.num_points} x {dtype.itemsize}-byte records).",
                path,
                "change the header's DATA line to 'DATA ascii' (if the rows are x y z ...) or re-export the cloud.",
            )
    _check_pcd_body_size(header, dtype, body_size, words, path)
    return header, dtype


def read_pcd_header(path: Path) -> PointCloudHeader:
    """Header of an existing ``.pcd`` file, checked against the file size (no body read)."""
    header, _ = _pcd_header_of(path)
    fields = tuple(header.fields)
    return PointCloudHeader(
        path, header.num_points, fields, bool({"rgb", "rgba"} & set(fields)),
        {"normal_x", "normal_y", "normal_z"} <= set(fields),
    )


def read_pcd(path: Path, drop_nonfinite: bool = False) -> PointCloudData:
    """Read an existing ``.pcd`` file (see :func:`anomalib_3d.data.io.read_point_cloud`).

    Packed ``rgb``/``rgba`` fields become colours in [0, 1], ``normal_x/y/z`` normals, and
    other one-value fields ``scalars``.
    """
    header, dtype = _pcd_header_of(path)
    n = header.num_points

    if header.data == "ascii":
        if n:
            require_final_newline(path, "PCD ASCII body")
        values_per_row = sum(header.counts)
        table = load_text_body(
            path, header.body_offset, width=values_per_row, what="PCD ASCII body",
            fix="re-export the cloud; each row must hold one number per FIELDS x COUNT entry "
                "(a binary body under a 'DATA ascii' header also ends here).",
        )
        if len(table) != n:
            raise CorruptFileError(
                f"PCD header declares POINTS {n} but the ASCII body has {len(table)} rows.",
                path,
                FIX_TRUNCATED if len(table) < n else
                "re-export the cloud; the body has more rows than the header declares (trailing data, "
                "or wrong POINTS/WIDTH).",
            )
        columns: dict[str, np.ndarray] = {}
        col = 0
        for name, kind, count in zip(header.fields, header.types, header.counts):
            values = table[:, col : col + count]
            col += count
            if name in ("rgb", "rgba") and kind == "F":
                # Packed colour as the float whose bits hold 0x00RRGGBB (PCL / Open3D). Such a
                # float is below 2.4e-38; a value >= 1 is an integer written under TYPE F, which
                # tools read differently, so it is refused rather than guessed.
                finite = values[np.isfinite(values)]
                if finite.size and float(np.abs(finite).max()) >= 1.0:
                    raise CorruptFileError(
                        f"PCD field {name!r} is TYPE F but holds values like {float(np.abs(finite).max()):.9g}, "
                        "not packed-colour floats; the colours are ambiguous.",
                        path,
                        f"declare {name!r} as TYPE U (packed integer 0xRRGGBB) or re-export the cloud.",
                    )
                values = values.astype(np.float32).view(np.uint32).astype(np.float64)
            columns.setdefault(name, values[:, 0] if count == 1 else values)
        xyz = None
        starts = [sum(header.counts[: header.fields.index(a)]) for a in ("x", "y", "z")]
        if starts[1] == starts[0] + 1 and starts[2] == starts[0] + 2:
            xyz = table[:, starts[0] : starts[0] + 3]  # a view: no second copy of the coordinates
        return _pcd_columns_to_data(columns, header, path, drop_nonfinite, xyz)

    raw = path.read_bytes()
    body = memoryview(raw)[header.body_offset :]
    if header.data == "binary":
        records = np.frombuffer(body, dtype=dtype, count=n)
    else:  # binary_compressed: two uint32 sizes, then the LZF stream of field-major arrays
        compressed_size, raw_size = struct.unpack("<II", body[:8])
        try:
            payload = lzf_decompress(bytes(body[8 : 8 + compressed_size]), raw_size)
        except ValueError as err:
            raise CorruptFileError(f"PCD compressed block is corrupt ({err}).", path, FIX_TRUNCATED) from err
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
    columns: dict[str, np.ndarray], header: _PcdHeader, path: Path, drop_nonfinite: bool,
    xyz: np.ndarray | None = None,
) -> PointCloudData:
    points = xyz if xyz is not None else np.stack([columns["x"], columns["y"], columns["z"]], axis=1)
    colors = None
    for key in ("rgb", "rgba"):
        if key in columns:
            values = np.asarray(columns[key])
            if values.dtype.kind == "f" and not (
                np.isfinite(values).all() and (values >= 0).all() and (values <= 0xFFFFFFFF).all()
                and (values == np.round(values)).all()
            ):
                raise CorruptFileError(
                    f"PCD field {key!r} holds values that are not packed colours (integers 0..2^32-1).",
                    path,
                    "re-export the cloud with a valid packed rgb field.",
                )
            packed = values.astype(np.uint64).astype(np.uint32)
            colors = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=1) / 255.0
            break
    normals = None
    if {"normal_x", "normal_y", "normal_z"} <= columns.keys():
        normals = np.stack([columns["normal_x"], columns["normal_y"], columns["normal_z"]], axis=1)
    skip = {"x", "y", "z", "rgb", "rgba", "normal_x", "normal_y", "normal_z", "_"}
    scalars = {k: np.asarray(v, dtype=np.float32) for k, v in columns.items() if k not in skip and np.ndim(v) == 1}
    return finalize_cloud(points, path, colors, normals, scalars, drop_nonfinite)


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
    pts = as_points(points, path)
    n = len(pts)
    fields, sizes, types = ["x", "y", "z"], ["4", "4", "4"], ["F", "F", "F"]
    formats = ["%.9g %.9g %.9g"]
    packed = None
    if colors is not None:
        rgb = as_colors_u8(colors, n, path).astype(np.uint32)
        packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
        fields.append("rgb"), sizes.append("4"), types.append("U")
        formats.append("%d")
    nrm = as_normals(normals, n, path) if normals is not None else None
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
        write_atomic(path, header.encode("ascii") + records.tobytes())
        return
    # Mixed float / integer columns: format as objects so %d gets ints and %.9g gets floats.
    parts: list[np.ndarray] = [pts.astype(np.float64)]
    if packed is not None:
        parts.append(packed.astype(np.float64)[:, None])
    if nrm is not None:
        parts.append(nrm.astype(np.float64))
    table = np.concatenate(parts, axis=1)
    body = format_rows(table, " ".join(formats) + "\n")
    write_atomic(path, header.encode("ascii") + body.encode("ascii"))

