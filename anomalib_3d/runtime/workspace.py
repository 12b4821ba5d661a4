"""The results folder is checked before any work starts: writable, with room to spare.

:func:`check_results_folder` creates the folder, writes and removes a probe file and compares the
free space with what the run will write; any failure is a
:class:`~anomalib_3d.errors.ResultsFolderError` naming the folder — raised before data generation,
fitting or testing, not after an hour of training when the checkpoint cannot be saved.

anomalib's ``Engine`` creates the run's version folder (``results/<model>/<data>/<category>/vN``)
itself, before any of our code runs, with the operating system's raw error when that fails, and
without guarding against a second run choosing the same ``vN`` at the same moment.
:func:`guard_engine_workspace` wraps the function it calls (``anomalib.engine.engine.
create_versioned_dir``; no file of anomalib changes) so that, for runs of anomalib-3d models
(the folder's path names one), the check runs first and concurrent runs take the next version in
turn under a :class:`~anomalib_3d.runtime.files.FileLock`; other models keep anomalib's behaviour. It is
installed when ``anomalib.engine`` is imported (``anomalib_3d._hook``); set
``ANOMALIB3D_GUARD_WORKSPACE=0`` to leave anomalib's function as it is.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
from pathlib import Path

from anomalib_3d.errors import OutputWriteError, ResultsFolderError
from anomalib_3d.runtime.files import FileLock, atomic_write

__all__ = ["MIN_FREE_BYTES", "check_results_folder", "guard_engine_workspace"]

#: Free space required at least (logs, metric tables, heatmap pictures of a small test split).
MIN_FREE_BYTES = 64 * 2**20
_MIN_FREE_ENVIRONMENT = "ANOMALIB3D_MIN_FREE_MB"
_GUARD_ENVIRONMENT = "ANOMALIB3D_GUARD_WORKSPACE"
_PROBE_NAME = ".anomalib3d-write-probe"
_LOCK_NAME = ".versions.lock"


def _min_free_bytes() -> int:
    text = os.environ.get(_MIN_FREE_ENVIRONMENT, "").strip()
    if not text:
        return MIN_FREE_BYTES
    try:
        return max(0, int(float(text) * 2**20))
    except ValueError:
        msg = f"{_MIN_FREE_ENVIRONMENT} must be a number of MiB, got {text!r}."
        raise ValueError(msg) from None


def _not_writable(folder: Path, reason: str) -> ResultsFolderError:
    return ResultsFolderError(
        f"results folder is not writable ({reason}); nothing was run.",
        folder,
        "pass a writable folder (--default_root_dir DIR, or Engine(default_root_dir=DIR)), or make this one "
        "writable for this user.",
    )


def check_results_folder(folder: str | Path, needed_bytes: int = 0) -> Path:
    """Create ``folder`` if needed and make sure a run can write ``needed_bytes`` into it.

    Args:
        folder: the results folder (or the run's version folder inside it).
        needed_bytes: what the run will write (checkpoints); at least :data:`MIN_FREE_BYTES`
            (``ANOMALIB3D_MIN_FREE_MB`` overrides that floor) is required in any case.

    Returns:
        ``folder`` as a Path.

    Raises:
        ResultsFolderError: the folder cannot be created, cannot take a file, or its disk has less
            free space than needed.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _not_writable(folder, err.strerror or str(err)) from err
    if not folder.is_dir():
        raise _not_writable(folder, "it is not a folder")
    probe = folder / _PROBE_NAME
    try:
        with atomic_write(probe, durable=False) as handle:
            handle.write(b"\0" * 4096)
        probe.unlink()
    except OutputWriteError as err:
        cause = err.__cause__
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ResultsFolderError(
                "results folder's disk is full; nothing was run.",
                folder,
                "free disk space, or pass a folder on another disk (--default_root_dir DIR).",
            ) from err
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(err)
        raise _not_writable(folder, reason) from err
    required = max(int(needed_bytes), _min_free_bytes())
    free = shutil.disk_usage(folder).free
    if free < required:
        raise ResultsFolderError(
            f"results folder's disk has {free / 2**20:.1f} MiB free; this run needs about {required / 2**20:.0f} MiB "
            "(checkpoints, metric tables, pictures); nothing was run.",
            folder,
            f"free disk space, or pass a folder on another disk (--default_root_dir DIR); {_MIN_FREE_ENVIRONMENT}=<MiB> "
            "lowers the floor if you know the run writes less.",
        )
    return folder


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return path


def guard_engine_workspace() -> bool:
    """Wrap ``anomalib.engine.engine.create_versioned_dir`` (idempotent).

    Returns:
        Whether the guard is in place (``False`` when switched off by ``ANOMALIB3D_GUARD_WORKSPACE=0``
        or when anomalib no longer has that function).
    """
    if os.environ.get(_GUARD_ENVIRONMENT, "1").strip() == "0":
        return False
    import anomalib.engine.engine as engine_module

    original = getattr(engine_module, "create_versioned_dir", None)
    if original is None or getattr(original, "__anomalib3d_guard__", False):
        return original is not None

    from anomalib_3d._lazy import entry_point_names

    ours = entry_point_names("anomalib_3d.models")

    @functools.wraps(original)
    def create_versioned_dir(root_dir: str | Path) -> Path:
        root = Path(root_dir).resolve()
        if not ours & set(root.parts):
            # anomalib's Engine names the folder <root>/<model>/<dataset>/<category>: not one of
            # our models, so anomalib's own behaviour, untouched.
            return original(root_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _not_writable(_nearest_existing(root), err.strerror or str(err)) from err
        check_results_folder(root)
        # Two runs started together must not both pick the same vN (anomalib's mkdir of it would
        # fail in the second) nor race on the `latest` link.
        with FileLock(root / _LOCK_NAME, what=f"a new version folder in {root}"):
            return original(root)

    create_versioned_dir.__anomalib3d_guard__ = True  # type: ignore[attr-defined]
    engine_module.create_versioned_dir = create_versioned_dir
    return True

