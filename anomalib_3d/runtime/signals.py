"""SIGTERM (and Ctrl-C) stop a run promptly, at any stage, with one line saying where.

``docker stop``, Kubernetes and batch schedulers send SIGTERM. Lightning's own handler only sets a
flag that its loops read *between training steps*, so a long step (a greedy coreset, feature
extraction over a whole split, testing) runs on. :func:`stop_on_signals` installs a handler that
raises :class:`RunInterrupted` in the main thread instead: Python runs it as soon as the thread is
between two bytecodes, so any loop that returns to Python (every loop here does, at least once per
iteration) stops within its current iteration. The exception unwinds through ``finally`` blocks and
:func:`~anomalib_3d.runtime.files.atomic_write`, which discards what was being written: finished
files stay complete, unfinished ones never appear.

A watchdog covers C code that does not return to Python for long: if the process is still
running ``grace_seconds`` after the signal (default 30, ``ANOMALIB3D_STOP_GRACE_SECONDS``), it
exits at once with the same status. A second signal during the stop acts at once too.

Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

__all__ = ["RunInterrupted", "StopHandler", "announcement", "stop_on_signals"]

_DEFAULT_GRACE_SECONDS = 30.0


class RunInterrupted(SystemExit):
    """A run stopped by a signal. A ``SystemExit``: ``except Exception`` never swallows it, and an
    uncaught one ends the process quietly with status ``128 + signal`` (143 for SIGTERM, 130 for
    Ctrl-C), the shell convention for "killed by this signal".

    Attributes:
        signum: the signal number.
        stage: what the run was doing (e.g. ``"fit, epoch 3"``).
    """

    def __init__(self, signum: int, stage: str) -> None:
        self.signum = int(signum)
        self.stage = stage
        super().__init__(128 + self.signum)

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name} during {self.stage}"

    def __reduce__(self) -> tuple:
        return (type(self), (self.signum, self.stage))


def _grace_seconds() -> float:
    try:
        return float(os.environ.get("ANOMALIB3D_STOP_GRACE_SECONDS", _DEFAULT_GRACE_SECONDS))
    except ValueError:
        return _DEFAULT_GRACE_SECONDS


class StopHandler:
    """Installs (and restores) the handlers of :func:`stop_on_signals`; usable where a ``with``
    block does not fit (Lightning callbacks install in one hook and restore in another).

    A SIGTERM handler found at :meth:`install` (Lightning's, which tells DDP workers to stop) is
    called first, then :class:`RunInterrupted` is raised. :meth:`restore` puts back only what this
    handler replaced and still holds, so it never undoes a later owner's choice (Lightning puts back
    its own originals when its run ends).

    Args:
        stage: what is running, or a function returning it at signal time.
        resume_hint: appended to the announcement (e.g. how to resume).
    """

    def __init__(self, stage: str | Callable[[], str], resume_hint: str = "") -> None:
        self._stage = stage
        self.resume_hint = resume_hint
        self._previous: dict[int, object] = {}
        self._found: dict[int, object] = {}
        self._second: dict[int, object] = {}
        self._watchdog: threading.Timer | None = None
        self.received: RunInterrupted | None = None

    @property
    def installed(self) -> bool:
        """Whether the handlers are in place."""
        return bool(self._previous)

    def stage(self) -> str:
        """The stage as it is now."""
        return self._stage() if callable(self._stage) else self._stage

    def install(self) -> bool:
        """Install on SIGTERM, and on SIGINT while it has Python's default handler.

        Returns:
            ``False`` (and installs nothing) when already installed, or outside the main thread,
            where Python cannot set handlers (a DataLoader worker thread, a notebook's thread).
        """
        if self.installed or threading.current_thread() is not threading.main_thread():
            return False
        self.received = None
        self._second = {}
        wanted = [signal.SIGTERM]
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            wanted.append(signal.SIGINT)
        for signum in wanted:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        self._found = dict(self._previous)
        return True

    def restore(self) -> None:
        """Put back the handlers found at :meth:`install` and cancel a pending watchdog."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if threading.current_thread() is not threading.main_thread():
            return
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            current = signal.getsignal(signum)
            if current == self._handle or (signum in self._second and current == self._second[signum]):
                signal.signal(signum, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.installed:
            # Restored, but someone re-installed this handler afterwards: behave as the handler
            # found at install time.
            _delegate(self._found.get(signum, signal.SIG_DFL), signum, frame)
            return
        stopping = RunInterrupted(signum, self.stage())
        self.received = stopping
        previous = self._previous.get(signum)
        if signum == signal.SIGTERM and callable(previous) and previous is not signal.default_int_handler:
            previous(signum, frame)
        # A second signal acts at once (the default action), as users expect from a second Ctrl-C.
        self._second[signum] = signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler
        signal.signal(signum, self._second[signum])  # type: ignore[arg-type]
        # os.write, not print: the main thread may be inside a write to stderr right now.
        os.write(2, f"\n{announcement(signum, stopping.stage, self.resume_hint)}\n".encode())
        grace = _grace_seconds()
        if grace > 0:
            self._watchdog = threading.Timer(grace, _exit_now, args=(signum, grace))
            self._watchdog.daemon = True
            self._watchdog.start()
        raise stopping


def announcement(signum: int, stage: str, resume_hint: str = "") -> str:
    """The line printed when a signal stops a run."""
    hint = f" {resume_hint}" if resume_hint else ""
    return (
        f"anomalib-3d: {signal.Signals(signum).name} received during {stage}: stopping now; "
        f"files being written are discarded, finished files are complete.{hint}"
    )


def _delegate(handler: object, signum: int, frame: FrameType | None) -> None:
    """Act as ``handler`` (a callable, ``SIG_DFL`` or ``SIG_IGN``) would have on ``signum``."""
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _exit_now(signum: int, grace: float) -> None:
    os.write(2, f"anomalib-3d: still running {grace:.0f} s after the signal (inside native code); exiting now.\n".encode())
    os._exit(128 + signum)


@contextlib.contextmanager
def stop_on_signals(stage: str | Callable[[], str], resume_hint: str = "") -> Iterator[StopHandler]:
    """Within the block, SIGTERM (and a default Ctrl-C) raise :class:`RunInterrupted` in the main thread.

    Args:
        stage: what the block does, for the message (``"synthetic data generation"``).
        resume_hint: what to do afterwards, appended to the message.

    Yields:
        The :class:`StopHandler` (``received`` holds the interruption once one arrived).
    """
    handler = StopHandler(stage, resume_hint)
    handler.install()
    try:
        yield handler
    finally:
        handler.restore()
