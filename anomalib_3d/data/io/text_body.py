"""Numeric text bodies (PCD ascii, PLY ascii, ``.xyz/.txt/.pts`` clouds, GT ``.txt``).

Bodies are parsed with numpy's C reader straight from the file, so the peak memory is a small
multiple of the returned array (not of Python lists of strings). A parse problem is re-located
line by line, on the error path only, so the message can name the line and the value.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from anomalib_3d.data.io.files import FIX_TRUNCATED, read_head
from anomalib_3d.errors import CorruptFileError

#: Comment prefixes of text clouds and GT files.
TEXT_COMMENTS = ("#", "//")
DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+([eE][+-]?\d+)?$")


def _line_number_at(path: Path, offset: int) -> int:
    """1-based line number of the byte at ``offset`` (only on error paths)."""
    with open(path, "rb") as handle:
        return handle.read(offset).count(b"\n") + 1


def line_of_data_row(path: Path, offset: int, row: int, comments: tuple[str, ...] | None) -> int:
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
                    if DECIMAL_COMMA.match(token):
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


def require_final_newline(path: Path, what: str) -> None:
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
            FIX_TRUNCATED + " (If the file is complete, add a newline at its end.)",
        )


def load_text_body(
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


def peek_text_layout(path: Path) -> tuple[int, str | None, int | None, list[str]]:
    """Look at the first data lines of a text table.

    Returns:
        ``(body offset, delimiter, declared count of a .pts count line, first row's tokens)``.

    Raises:
        CorruptFileError: the first data row uses decimal commas.
    """
    head = read_head(path, None)
    offset = 0
    rows: list[tuple[int, list[str], str]] = []
    for raw_line in head.splitlines(keepends=True):
        line = raw_line.decode("latin-1")
        if raw_line.endswith((b"\n", b"\r")) or len(head) < 4096:
            stripped = line.strip()
            if stripped and not stripped.startswith(TEXT_COMMENTS):
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
    if len(tokens) > 1 and any(DECIMAL_COMMA.match(t) for t in tokens):
        raise CorruptFileError(
            f"the first data row {text[:60]!r} uses decimal commas (e.g. {next(t for t in tokens if DECIMAL_COMMA.match(t))!r}).",
            path,
            "write numbers with a decimal point (e.g. 15.68) separated by spaces; reading '15,68' as "
            "two numbers would invent columns.",
        )
    delimiter = "," if "," in text else None
    tokens = [t.strip() for t in text.split(",")] if delimiter else tokens
    return body, delimiter, declared, tokens
