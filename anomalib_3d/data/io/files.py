"""File-level helpers shared by every reader and writer: the existence check that names the
problem and bounded header reads (atomic writes: ``anomalib_3d.runtime.files``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anomalib_3d.errors import CorruptFileError, DatasetRootNotFoundError

#: The fix of every "body shorter than its header says" error.
FIX_TRUNCATED = "the file was cut short (interrupted copy or download): copy or re-export it again."
HEADER_READ_LIMIT = 1 << 20  # headers are a few hundred bytes; 1 MiB of "header" is not one


def require_file(path: str | Path) -> Path:
    """Return ``path`` as a Path, raising a named error when it is not an existing file.

    Raises:
        DatasetRootNotFoundError: missing file, dangling symbolic link or link loop (a
            ``FileNotFoundError``).
        CorruptFileError: the path is a directory.
    """
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


def read_head(path: Path, marker: bytes | None) -> bytes:
    """The first bytes of a file, up to (and a line past) ``marker``; never the whole body.

    Args:
        path: the file.
        marker: the header's last keyword (``b"DATA"``, ``b"end_header"``); ``None`` reads
            the first 4 KiB only.
    """
    chunk = 4096
    with open(path, "rb") as handle:
        head = handle.read(chunk)
        while marker is not None and marker not in head and len(head) < HEADER_READ_LIMIT:
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


def format_rows(table: np.ndarray, row_format: str) -> str:
    """Format a ``(N, K)`` table with one %-template per row in a single C-level call (fast)."""
    if len(table) == 0:
        return ""
    return (row_format * len(table)) % tuple(table.ravel().tolist())
