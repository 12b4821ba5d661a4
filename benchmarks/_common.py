"""Timing and memory helpers shared by the benchmark scripts.

The scripts are run as ``python benchmarks/<name>.py``: Python then puts ``benchmarks/`` first on
``sys.path``, so ``from _common import ...`` finds this file wherever the checkout lies, while the
package itself (``anomalib_3d``, ``anomalib_3d_plugins``) is imported as installed
(``pip install -e .``). No script edits ``sys.path``.

* :func:`cpu_seconds` — CPU time of this process and its finished children (user + system);
* :func:`synchronize` — wait for queued CUDA work, so that a clock reading covers it;
* :func:`time_call` — ``(wall, cpu)`` seconds of repeated calls after a warm-up call;
* :class:`PeakMemory` — peak memory of a step above its start (MiB): CUDA allocator, or the
  resident-set high-water mark on CPU.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

#: glibc's mmap threshold variable: pinned low, freed tensors leave the resident set at once.
MMAP_THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have been waited for.

    On a shared, oversubscribed machine wall time mostly measures waiting for a core; CPU time
    does not, so the scripts report both.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def synchronize(device: Any) -> None:  # noqa: ANN401 - torch.device or str
    """Block until every kernel queued on ``device`` has run (no-op off CUDA)."""
    if _device_type(device) == "cuda":
        import torch

        torch.cuda.synchronize(device)


class Timing(NamedTuple):
    """One timed call: wall-clock and process CPU seconds (all threads of this process)."""

    wall: float
    cpu: float


def time_call(
    fn: Callable[[], object], repeats: int, device: Any = "cpu", *, warmup: bool = True  # noqa: ANN401
) -> list[Timing]:
    """Time ``repeats`` calls of ``fn``, after one untimed warm-up call unless ``warmup=False``.

    The warm-up absorbs lazy imports, allocator growth and CUDA context creation. CUDA work is
    synchronised before and after each call, so the wall time covers the kernels, not their launch.

    Returns:
        One :class:`Timing` per call (``repeats`` of them; callers take the min or the median).
    """
    if warmup:
        fn()
    timings = []
    for _ in range(repeats):
        synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        timings.append(Timing(time.perf_counter() - start, time.process_time() - start_cpu))
    return timings


# ----------------------------------------------------------------------------------------------
# memory


def _device_type(device: Any) -> str:  # noqa: ANN401
    """``"cuda"`` for ``torch.device("cuda:1")`` or ``"cuda:1"``; ``"cpu"`` for CPU devices."""
    return str(getattr(device, "type", device)).split(":")[0]


def _status_mib(key: str) -> float | None:
    """A ``kB`` line of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MiB; None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _max_rss_mib() -> float:
    """This process's peak resident set so far (``ru_maxrss``: kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _reset_high_water_mark() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return _status_mib("VmHWM") is not None


class PeakMemory:
    """Peak memory of one step above the level at its start, in MiB.

    * CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation at the start (tensors only).
    * CPU on Linux: the resident-set high-water mark (``VmHWM``, reset through
      ``/proc/self/clear_refs`` at the start) minus the RSS at the start. It counts every
      allocation of the step, however short-lived. Freed memory that glibc keeps in its heap stays
      in the RSS; pin :data:`MMAP_THRESHOLD_ENV` low in the environment of a dedicated process
      when each step must start from the live state (:attr:`method` says whether it is pinned).
    * CPU elsewhere: the growth of ``ru_maxrss`` (a lower bound: zero until the step exceeds the
      process's earlier peak).

    Use as ``start()`` / ``stop()`` or as a context manager, which leaves the result in ``peak``::

        with PeakMemory() as memory:
            step()
        print(memory.peak)
    """

    def __init__(self, device: Any = "cpu") -> None:  # noqa: ANN401 - torch.device or str
        self.device = device
        self.cuda = _device_type(device) == "cuda"
        self.high_water_mark = (not self.cuda) and _reset_high_water_mark()
        self.base = 0.0
        self.peak = float("nan")

    @property
    def method(self) -> str:
        """How the peak is measured, for a table's header."""
        if self.cuda:
            return "torch.cuda.max_memory_allocated above the allocation at step start (tensors only)"
        if self.high_water_mark:
            pinned = os.environ.get(MMAP_THRESHOLD_ENV)
            return (
                "RSS high-water mark (VmHWM, reset via /proc/self/clear_refs) above the RSS at step start; "
                f"glibc mmap threshold {pinned or 'NOT pinned'} bytes"
            )
        return "growth of ru_maxrss over the step (a lower bound: /proc/self/clear_refs is not writable)"

    def start(self) -> None:
        """Mark the start of the step."""
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 2**20
        elif self.high_water_mark:
            _reset_high_water_mark()
            self.base = _status_mib("VmRSS") or 0.0
        else:
            self.base = _max_rss_mib()

    def stop(self) -> float:
        """Peak MiB above the start since :meth:`start` (also stored in ``peak``)."""
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) / 2**20 - self.base
        elif self.high_water_mark:
            # The kernel refreshes VmHWM lazily: a step that allocates nothing can read a few kB
            # below the RSS sampled at its start.
            self.peak = max(0.0, (_status_mib("VmHWM") or 0.0) - self.base)
        else:
            self.peak = _max_rss_mib() - self.base
        return self.peak

    def __enter__(self) -> PeakMemory:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
