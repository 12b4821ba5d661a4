"""Files that survive faults: atomic writes and an inter-process lock.

* :func:`atomic_write` / :func:`write_atomic`: the data goes to a hidden temporary sibling, is
  flushed to disk (``fsync``), then renamed over the target. A reader sees the old file or the new
  one, never a prefix, whatever kills the writer (SIGKILL, a full disk, a power cut after the
  rename). A failed write removes its temporary file and raises :class:`OutputWriteError` naming
  the target.
* :class:`FileLock`: an exclusive lock on a lock file (``flock`` on POSIX, ``msvcrt.locking`` on
  Windows), held by one process at a time; the others wait (with one log line saying for what),
  then continue. The operating system releases it when its holder dies, so a killed process never
  leaves a stale lock.

Standard library only: the data readers and writers import this module.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from anomalib_3d.errors import OutputWriteError

__all__ = ["FileLock", "atomic_write", "remove_stale_temporaries", "temporary_sibling", "write_atomic"]

logger = logging.getLogger(__name__)

#: Prefix of the temporary files: hidden, so a folder listing by pattern rarely meets one.
TEMPORARY_PREFIX = "."
TEMPORARY_MARK = ".partial-"


def temporary_sibling(path: Path) -> Path:
    """A fresh hidden name next to ``path`` (unique per process and call), e.g. ``.a.ply.partial-1f2e3d``.

    The temporary name does not end in the target's suffix, so readers that pick files by
    extension never take an unfinished file for a finished one.
    """
    return path.with_name(f"{TEMPORARY_PREFIX}{path.name}{TEMPORARY_MARK}{os.getpid()}-{secrets.token_hex(3)}")


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files a killed writer left in ``folder`` (not recursive).

    Call it only while no other process writes there (e.g. holding the folder's
    :class:`FileLock`): a live writer's temporary file looks the same.

    Returns:
        How many were removed.
    """
    removed = 0
    for path in Path(folder).glob(f"{TEMPORARY_PREFIX}*{TEMPORARY_MARK}*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    if sys.platform.startswith("win"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_failure(path: Path, error: OSError) -> OutputWriteError:
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = "free disk space (or pass another results folder / dataset root on a disk with room) and run again."
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the folder writable for this user, or choose a writable folder."
    else:
        fix = "check the folder (it must be a writable directory) and run again."
    return OutputWriteError(f"could not be written ({reason}); no partial file was left.", path, fix)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", *, durable: bool = True, **open_kwargs: Any) -> Iterator[IO]:  # noqa: ANN401
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path`` at once.

    Args:
        path: the file to (re)write; its folder is created if missing.
        mode: ``"wb"`` (bytes) or ``"w"`` (text; pass ``encoding``/``newline`` as keywords).
        durable: ``fsync`` the data (and the folder after the rename), so the new file also
            survives a power cut; without it a killed *process* still never leaves a partial file.
        **open_kwargs: passed to :func:`open`.

    Yields:
        The open handle (the temporary file). Anything raised inside the block, a signal
        included, removes the temporary file and leaves ``path`` as it was.

    Raises:
        OutputWriteError: the folder is not writable, or the disk is full; names ``path``.

    Example:
        >>> with atomic_write(folder / "table.csv", "w", newline="") as handle:  # doctest: +SKIP
        ...     handle.write("a,b\\n")
    """
    if "w" not in mode:
        msg = f"atomic_write writes whole files; mode must contain 'w', got {mode!r}."
        raise ValueError(msg)
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(tmp, mode, **open_kwargs)  # noqa: SIM115 - closed below on every path
    except OSError as err:
        raise _write_failure(path, err) from err
    try:
        with handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _write_failure(path, err) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_folder(path.parent)


def write_atomic(path: str | Path, data: bytes | str, *, durable: bool = True) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` through :func:`atomic_write`."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_write(path, "wb", durable=durable) as handle:
        handle.write(payload)


class FileLock:
    """An exclusive inter-process lock on ``path`` (created if missing), usable as a context manager.

    Args:
        path: the lock file. It stays on disk (empty) after release: deleting it while another
            process waits on it would let a third take a different lock on a new file.
        what: what the lock protects, for the message printed while waiting.
        timeout: seconds to wait before raising ``TimeoutError``; ``None`` waits for ever.
        poll: seconds between attempts while waiting (signals are handled between attempts).

    Not re-entrant: acquiring a held :class:`FileLock` again raises ``RuntimeError``. Two
    :class:`FileLock` objects on one path exclude each other, in one process too (each opens the
    file itself).
    """

    def __init__(self, path: str | Path, what: str = "", *, timeout: float | None = None, poll: float = 0.2) -> None:
        self.path = Path(path)
        self.what = what or str(self.path.parent)
        self.timeout = timeout
        self.poll = poll
        self._handle: IO | None = None

    @staticmethod
    def _try_lock(handle: IO) -> bool:
        if sys.platform.startswith("win"):
            import msvcrt

            try:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            except OSError:
                return False
            return True
        import fcntl

        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    @staticmethod
    def _unlock(handle: IO) -> None:
        if sys.platform.startswith("win"):
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
            return
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def acquire(self) -> None:
        """Take the lock, waiting while another process holds it."""
        if self._handle is not None:
            msg = f"{self.path} is already locked by this FileLock."
            raise RuntimeError(msg)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+b")  # noqa: SIM115 - kept open while the lock is held
        except OSError as err:
            raise _write_failure(self.path, err) from err
        start = time.monotonic()
        announced = False
        try:
            while not self._try_lock(handle):
                waited = time.monotonic() - start
                if not announced:
                    logger.warning("Another process is writing %s; waiting for it to finish (lock %s).", self.what, self.path)
                    announced = True
                if self.timeout is not None and waited >= self.timeout:
                    msg = f"{self.path}: still locked by another process writing {self.what} after {waited:.0f} s."
                    raise TimeoutError(msg)
                time.sleep(self.poll)
        except BaseException:
            handle.close()
            raise
        if announced:
            logger.warning("The other process finished %s after %.1f s; continuing.", self.what, time.monotonic() - start)
        self._handle = handle

    def release(self) -> None:
        """Give the lock back (closing the file releases it too)."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            self._unlock(handle)
        finally:
            handle.close()

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
