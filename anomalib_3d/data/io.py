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

Strictness (a header that disagrees with its body is an error, never a guess):

* PCD: ``WIDTH × HEIGHT`` must equal ``POINTS``; ``COUNT`` ≥ 1; x/y/z must be ``TYPE F``;
  a binary body must be exactly ``POINTS ×`` record size bytes (no trailing bytes); an ASCII
  body exactly ``POINTS`` rows of ``sum(COUNT)`` numbers; a ``binary_compressed`` header is
  refused before any allocation when its uncompressed size cannot come from its compressed
  block (LZF expands at most :data:`LZF_MAX_EXPANSION` times).
* PLY: the vertex count must be an integer; when the vertex element is the last one the body
  must end with it.
* Text (``.xyz/.txt/.pts``): a decimal comma (``15,68 21,31 11,08``) is refused rather than
  read as six columns.
* Clouds (:func:`check_cloud_values`): finite, within the float32 range, within
  :data:`MAX_ABS_COORDINATE`, and not all coincident (one point, or N copies of one point).

Text bodies are parsed with numpy's C reader straight from the file, so the peak memory is a
small multiple of the returned array (not of Python lists of strings).
"""

from __future__ import annotations

import re
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anomalib_3d.data.errors import (
    CorruptFileError,
    DatasetRootNotFoundError,
    DegeneratePointCloudError,
    EmptyPointCloudError,
    GroundTruthMismatchError,
    InvalidPointsError,
    UnsupportedFormatError,
)

POINT_CLOUD_EXTENSIONS = (".pcd", ".ply", ".xyz", ".txt", ".pts", ".npy")
TIFF_EXTENSIONS = (".tiff", ".tif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tiff", ".tif")
TEXT_COLUMN_LAYOUTS = ("xyz", "xyzrgb", "xyznormal", "xyzrgbnormal")
#: Coordinates beyond this magnitude are refused: no scanner measures 10^12 units, and float32
#: keeps only ~7 digits, so such a value is a corrupt number (or a lying header), not a point.
MAX_ABS_COORDINATE = 1e12
#: LZF's best case: a 3-byte back reference yields 264 bytes, so a block expands at most 88x.
LZF_MAX_EXPANSION = 88
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_HEADER_READ_LIMIT = 1 << 20  # headers are a few hundred bytes; 1 MiB of "header" is not one
_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+([eE][+-]?\d+)?$")


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


# ----------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------


def _require_file(path: str | Path) -> Path:
    """Return ``path`` as a Path, raising a named error when it is not an existing file."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        try:
            path.resolve(strict=True)
            reason = "is a dangling symbolic link"
        except RuntimeError:
            reason = "is a symbolic-link loop"
        except OSError as err:
            reason = "is a symbolic-link loop" if "loop" in str(err).lower() or getattr(err, "errno", 0) == 40 else "is a dangling symbolic link"
        raise DatasetRootNotFoundError(
            f"{reason} (points to {path.readlink() if hasattr(path, 'readlink') else '?'}).",
            path,
            "point the link at an existing file, or remove it.",
        )
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
            "pass the path of a single file inside it (or rename a folder whose name ends like a file).",
        )
    return path


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


def _finalize(
    points: np.ndarray,
    path: Path,
    colors: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    scalars: dict[str, np.ndarray] | None = None,
    drop_nonfinite: bool = False,
) -> PointCloudData:
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


# ----------------------------------------------------------------------------------------------
# Numeric text bodies (PCD ascii, PLY ascii, .xyz, GT .txt)
# ----------------------------------------------------------------------------------------------


def _line_number_at(path: Path, offset: int) -> int:
    """1-based line number of the byte at ``offset`` (only on error paths)."""
    with open(path, "rb") as handle:
        return handle.read(offset).count(b"\n") + 1


def _line_of_data_row(path: Path, offset: int, row: int, comments: tuple[str, ...] | None) -> int:
    """1-based file line of the ``row``-th (0-based) data row of a text body (error paths only)."""
    line_number = _line_number_at(path, offset)
    with open(path, "rb") as handle:
        handle.seek(offset)
        seen = -1
        for k, raw_line in enumerate(handle):
            text = raw_line.decode("latin-1").strip()
            if not text or (comments and text.startswith(comments)):
                continue
            seen += 1
            if seen == row:
                return line_number + k
    return line_number


def _diagnose_text_body(
    path: Path,
    offset: int,
    width: int | None,
    delimiter: str | None,
    what: str,
    fix: str,
    comments: tuple[str, ...] | None,
) -> CorruptFileError:
    """Find the first bad line of a numeric text body, streaming (error path only)."""
    first_line = _line_number_at(path, offset)
    with open(path, "rb") as handle:
        handle.seek(offset)
        row = -1
        for k, raw_line in enumerate(handle):
            line = raw_line.decode("latin-1")
            if comments and line.lstrip().startswith(comments):
                continue
            tokens = line.split(delimiter) if delimiter else line.split()
            tokens = [t.strip() for t in tokens]
            if not line.strip():
                continue
            row += 1
            for token in tokens:
                try:
                    float(token)
                except ValueError:
                    shown = token if len(token) <= 30 else token[:27] + "..."
                    if _DECIMAL_COMMA.match(token):
                        return CorruptFileError(
                            f"line {first_line + k}: {shown!r} uses a decimal comma.",
                            path,
                            "write numbers with a decimal point (e.g. 15.68), separated by spaces.",
                        )
                    return CorruptFileError(
                        f"{what} line {first_line + k} holds {shown!r}, which is not a number.",
                        path,
                        fix,
                    )
            if width is not None and len(tokens) != width:
                return CorruptFileError(
                    f"{what}: line {first_line + k} has {len(tokens)} columns, expected {width} "
                    f"(row {row} has {len(tokens)} values).",
                    path,
                    fix,
                )
            width = len(tokens) if width is None else width
    return CorruptFileError(f"{what} cannot be parsed as numbers.", path, fix)


def _require_final_newline(path: Path, what: str) -> None:
    """Machine-written ASCII bodies end every row with a newline; a last row without one is
    the mark of a file cut inside its last number (which would otherwise load a wrong value)."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - 256))
        tail = handle.read().rstrip(b" \t\x00")
    if tail and not tail.endswith((b"\n", b"\r")):
        raise CorruptFileError(
            f"{what} does not end with a newline: the file was probably cut inside its last row.",
            path,
            _FIX_TRUNCATED + " (If the file is complete, add a newline at its end.)",
        )


def _load_text_body(
    path: Path,
    offset: int,
    *,
    width: int | None,
    what: str,
    fix: str,
    delimiter: str | None = None,
    comments: tuple[str, ...] | None = None,
    max_rows: int | None = None,
) -> np.ndarray:
    """Parse the numeric rows from byte ``offset`` on into a ``(rows, width) float64`` array.

    numpy's C reader streams the file, so the peak memory is about the output array (float64),
    not Python strings. Any parse problem is re-located line by line for the message.
    """
    try:
        with open(path, "rb") as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": handled by the callers
            handle.seek(offset)
            table = np.loadtxt(
                handle, dtype=np.float64, ndmin=2, delimiter=delimiter, comments=comments,
                max_rows=max_rows, encoding="latin-1",
            )
    except ValueError:
        raise _diagnose_text_body(path, offset, width, delimiter, what, fix, comments) from None
    if table.size == 0:
        return np.zeros((0, width or 0))
    if width is not None and table.shape[1] != width:
        raise CorruptFileError(
            f"{what} has rows of {table.shape[1]} values, expected {width}.",
            path,
            fix,
        )
    return table


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


def _read_head(path: Path, marker: bytes | None) -> bytes:
    """The first bytes of a file, up to (and a line past) ``marker``; never the whole body."""
    chunk = 4096
    with open(path, "rb") as handle:
        head = handle.read(chunk)
        while marker is not None and marker not in head and len(head) < _HEADER_READ_LIMIT:
            more = handle.read(chunk)
            if not more:
                break
            head += more
            chunk *= 2
        # the marker's line must be complete
        while marker is not None and marker in head and b"\n" not in head[head.find(marker):]:
            more = handle.read(4096)
            if not more:
                break
            head += more
    return head


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


def lzf_decompress(data: bytes, expected_size: int) -> bytes:
    """Decompress an LZF block (the codec of PCD ``binary_compressed``).

    Args:
        data: compressed bytes.
        expected_size: size of the decompressed payload, as stored in the PCD body.

    Raises:
        ValueError: the stream is malformed, does not decompress to ``expected_size`` bytes, or
            ``expected_size`` is more than ``data`` can expand to (refused before allocating).
    """
    if expected_size > LZF_MAX_EXPANSION * len(data) + 2:
        raise ValueError(
            f"{len(data)} compressed bytes cannot expand to {expected_size} bytes (LZF expands at "
            f"most {LZF_MAX_EXPANSION}x)"
        )
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
            if ref + length <= out_pos:  # no overlap: one slice copy
                out[out_pos : out_pos + length] = out[ref : ref + length]
            else:  # overlapping run-length repeat: byte by byte
                for k in range(length):
                    out[out_pos + k] = out[ref + k]
            out_pos += length
    if out_pos != expected_size:
        raise ValueError(f"LZF stream decompressed to {out_pos} bytes, expected {expected_size}")
    return bytes(out)


_FIX_TRUNCATED = "the file was cut short (interrupted copy or download): copy or re-export it again."


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
                _FIX_TRUNCATED if body_size < needed else "re-export the cloud; the header does not describe the body.",
            )
    elif header.data == "binary_compressed":
        if body_size < 8 or size_words is None:
            raise CorruptFileError("PCD binary_compressed body is missing its size words.", path, _FIX_TRUNCATED)
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
                _FIX_TRUNCATED,
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
    head = _read_head(path, b"DATA")
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


def _read_pcd_records(path: Path, drop_nonfinite: bool) -> PointCloudData:
    header, dtype = _pcd_header_of(path)
    n = header.num_points

    if header.data == "ascii":
        if n:
            _require_final_newline(path, "PCD ASCII body")
        values_per_row = sum(header.counts)
        table = _load_text_body(
            path, header.body_offset, width=values_per_row, what="PCD ASCII body",
            fix="re-export the cloud; each row must hold one number per FIELDS x COUNT entry "
                "(a binary body under a 'DATA ascii' header also ends here).",
        )
        if len(table) != n:
            raise CorruptFileError(
                f"PCD header declares POINTS {n} but the ASCII body has {len(table)} rows.",
                path,
                _FIX_TRUNCATED if len(table) < n else
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
            raise CorruptFileError(f"PCD compressed block is corrupt ({err}).", path, _FIX_TRUNCATED) from err
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
            _FIX_TRUNCATED,
        )
    if header.vertex_index == len(header.elements) - 1 and available > n * dtype.itemsize:
        raise CorruptFileError(
            f"PLY header declares {n} vertices ({n * dtype.itemsize} bytes) but {available} bytes follow "
            "the header (trailing data, or a vertex count that is too small).",
            path,
            "re-export the cloud; the header does not describe the body.",
        )
    return offset, dtype


def _read_ply(path: Path, drop_nonfinite: bool) -> PointCloudData:
    header = _parse_ply_header(_read_head(path, b"end_header"), path)
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
            _require_final_newline(path, "PLY ASCII body")
        fix = "re-export the cloud; each vertex row must hold one number per vertex property."
        table = _load_text_body(
            path, offset, width=len(props), what="PLY ASCII body", fix=fix,
            max_rows=None if is_last else n,
        )
        if n == 0 and table.shape[1] == 0:
            table = np.zeros((0, len(props)))
        if len(table) < n:
            raise CorruptFileError(
                f"PLY header declares {n} vertices but the ASCII body has only {len(table)} rows.",
                path,
                _FIX_TRUNCATED,
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
    return _finalize(points, path, colors, normals, scalars, drop_nonfinite)


# ----------------------------------------------------------------------------------------------
# Text columns and .npy
# ----------------------------------------------------------------------------------------------


def _split_columns(
    table: np.ndarray, layout: str | None, path: Path
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
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


_TEXT_COMMENTS = ("#", "//")


def _peek_text_layout(path: Path) -> tuple[int, str | None, int | None, list[str]]:
    """Look at the first data lines: (body offset, delimiter, declared count of a .pts count line,
    first row's tokens). Refuses decimal commas."""
    head = _read_head(path, None)
    offset = 0
    rows: list[tuple[int, list[str], str]] = []
    for raw_line in head.splitlines(keepends=True):
        line = raw_line.decode("latin-1")
        if raw_line.endswith((b"\n", b"\r")) or len(head) < 4096:
            stripped = line.strip()
            if stripped and not stripped.startswith(_TEXT_COMMENTS):
                rows.append((offset, stripped.split(), stripped))
                if len(rows) == 2:
                    break
        offset += len(raw_line)
    if not rows:
        return 0, None, None, []
    first_offset, tokens, text = rows[0]
    declared = None
    body = 0
    if len(tokens) == 1 and "," not in text and len(rows) > 1 and len(rows[1][1]) > 1 and tokens[0].isdigit():
        declared = int(tokens[0])  # Leica .pts: the first line holds only the point count
        body = rows[1][0]
        tokens, text = rows[1][1], rows[1][2]
    if len(tokens) > 1 and any(_DECIMAL_COMMA.match(t) for t in tokens):
        raise CorruptFileError(
            f"the first data row {text[:60]!r} uses decimal commas (e.g. {next(t for t in tokens if _DECIMAL_COMMA.match(t))!r}).",
            path,
            "write numbers with a decimal point (e.g. 15.68) separated by spaces; reading '15,68' as "
            "two numbers would invent columns.",
        )
    delimiter = "," if "," in text else None
    tokens = [t.strip() for t in text.split(",")] if delimiter else tokens
    return body, delimiter, declared, tokens


def _read_text_table(path: Path) -> np.ndarray:
    """Read whitespace- or comma-separated numeric rows; all rows must have the same width."""
    body, delimiter, declared, tokens = _peek_text_layout(path)
    fix = "re-export the file as plain numbers, one point per row, the same number of columns on every row."
    table = _load_text_body(
        path, body, width=len(tokens) or None, what="text cloud", fix=fix, delimiter=delimiter,
        comments=_TEXT_COMMENTS,
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
            _FIX_TRUNCATED if available < needed else "re-save it with numpy.save (trailing data).",
        )
    return tuple(shape), dtype, offset


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
        _npy_header(path)  # sizes checked before numpy allocates what the header claims
        try:
            table = np.load(path, allow_pickle=False)
        except Exception as err:  # numpy raises several types for a corrupt array file
            raise CorruptFileError(f"cannot be loaded as a .npy array ({err}).", path, "re-save it with numpy.save.") from err
        if table.shape[0] == 0 and table.shape[1] == 3:
            validate_points(table, path)
        pts, colors, normals = _split_columns(table.astype(np.float64), columns, path)
        return _finalize(pts, path, colors, normals, None, drop_nonfinite)
    table = _read_text_table(path)
    pts, colors, normals = _split_columns(table, columns, path)
    return _finalize(pts, path, colors, normals, None, drop_nonfinite)


def read_point_cloud_header(path: str | Path) -> PointCloudHeader:
    """Read and check only a cloud file's header (the pre-flight check's fast path).

    Binary bodies are checked against the header by file size (no body read); text bodies are
    not read. What this accepts can still fail in :func:`read_point_cloud` (values, row count
    of text bodies), never the other way round.

    Raises:
        the same named errors as :func:`read_point_cloud` for header problems.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in POINT_CLOUD_EXTENSIONS:
        raise UnsupportedFormatError(
            f"extension {suffix or '(none)'!r} is not a supported point-cloud format.",
            path,
            f"convert the cloud to one of {', '.join(POINT_CLOUD_EXTENSIONS)}.",
        )
    path = _require_file(path)
    if suffix == ".pcd":
        header, _ = _pcd_header_of(path)
        fields = tuple(header.fields)
        return PointCloudHeader(
            path, header.num_points, fields, bool({"rgb", "rgba"} & set(fields)),
            {"normal_x", "normal_y", "normal_z"} <= set(fields),
        )
    if suffix == ".ply":
        header = _parse_ply_header(_read_head(path, b"end_header"), path)
        if header.fmt != "ascii":
            _check_ply_binary_size(header, path, path.stat().st_size)
        fields = tuple(p[0] for p in header.vertex[2])
        return PointCloudHeader(
            path, header.vertex[1], fields, {"red", "green", "blue"} <= set(fields), {"nx", "ny", "nz"} <= set(fields)
        )
    if suffix == ".npy":
        shape, _, _ = _npy_header(path)
        names = tuple(f"col{i}" for i in range(shape[1]))
        return PointCloudHeader(path, shape[0], names, shape[1] >= 6, shape[1] >= 6)
    _, _, declared, tokens = _peek_text_layout(path)
    if not tokens:
        raise EmptyPointCloudError("has no data rows.", path, "check the file was written completely.")
    names = tuple(f"col{i}" for i in range(len(tokens)))
    return PointCloudHeader(path, declared, names, len(tokens) >= 6, len(tokens) >= 6)


# ----------------------------------------------------------------------------------------------
# Organized xyz, ground truth, images
# ----------------------------------------------------------------------------------------------


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
    path = _require_file(path)
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
    path = _require_file(path)
    body, delimiter, _, tokens = _peek_text_layout(path)
    if not tokens:
        raise EmptyPointCloudError("ground-truth file has no rows.", path, "re-generate or re-download the ground truth.")
    if len(tokens) != 4:
        raise CorruptFileError(
            f"the first row has {len(tokens)} columns; ground truth needs exactly 4 (x y z label).",
            path,
            "pass the gt/*.txt file of the sample (not the point cloud), or re-export it as "
            "'x y z label' rows.",
        )
    table = _load_text_body(
        path, body, width=4, what="ground truth", delimiter=delimiter, comments=_TEXT_COMMENTS,
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
            f"(e.g. {found.tolist()}, first on line {_line_of_data_row(path, body, first, _TEXT_COMMENTS)}).",
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


def _open_image(path: str | Path, load: bool = True):
    from PIL import Image

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
        if load:
            image.load()
    except Exception as err:  # PIL: UnidentifiedImageError, OSError, SyntaxError, DecompressionBombError...
        raise CorruptFileError(f"cannot be decoded as an image ({err}).", path, "copy or re-export the file again.") from err
    return image, path


def read_image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image (mask or RGB) from its header only."""
    image, _ = _open_image(path, load=False)
    width, height = image.size
    image.close()
    return height, width


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
    image, path = _open_image(path)
    try:
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    except Exception as err:
        raise CorruptFileError(f"cannot be decoded as an RGB image ({err}).", path, "copy or re-export the file again.") from err


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
    "LZF_MAX_EXPANSION",
    "MAX_ABS_COORDINATE",
    "POINT_CLOUD_EXTENSIONS",
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
