"""Faults survived: what happens when a run is interrupted, shares its data root with another run,
meets a full or read-only disk, a broken checkpoint, or a cloud far too large.

* :mod:`.files` — atomic writes (temporary name, ``fsync``, rename) and an inter-process
  :class:`FileLock` (standard library only; the data readers and writers use it).
* :mod:`.signals` — SIGTERM / Ctrl-C raise :class:`RunInterrupted` in the main thread at once.
* :mod:`.checkpoints` — named errors for truncated, foreign and incompatible checkpoints;
  ``--ckpt_path last`` under anomalib's Engine.
* :mod:`.memory` — the points-per-cloud budget of each model.
* :mod:`.workspace` — the results folder checked before any work starts.
* :mod:`.callback` — :class:`FaultGuard`, the callback every anomalib-3d model adds.

Names are imported on first use, so ``import anomalib_3d.runtime`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FileLock": "files",
    "atomic_write": "files",
    "write_atomic": "files",
    "RunInterrupted": "signals",
    "StopHandler": "signals",
    "stop_on_signals": "signals",
    "GuardedCheckpointIO": "checkpoints",
    "check_checkpoint_file": "checkpoints",
    "check_checkpoint_matches": "checkpoints",
    "DEFAULT_MAX_CLOUD_POINTS": "memory",
    "check_cloud_sizes": "memory",
    "cloud_budget": "memory",
    "check_results_folder": "workspace",
    "guard_engine_workspace": "workspace",
    "FaultGuard": "callback",
}


def __getattr__(name: str) -> Any:  # noqa: ANN401
    module = _EXPORTS.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = sorted(_EXPORTS)
