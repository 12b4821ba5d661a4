"""Faults survived: what happens when a run is interrupted, shares its data root with another run,
meets a full or read-only disk, a broken checkpoint, or a cloud far too large.

* :mod:`.files` — atomic writes (temporary name, ``fsync``, rename) and an inter-process
  :class:`FileLock` (standard library only; the data readers and writers use it).
* :mod:`.signals` — SIGTERM / Ctrl-C raise :class:`RunInterrupted` in the main thread at once.
* :mod:`.checkpoints` — named errors for truncated, foreign and incompatible checkpoints;
  ``--ckpt_path last`` under anomalib's Engine.
* :mod:`.memory` — the points-per-cloud budget of each model.
* :mod:`.workspace` — the results folder checked before any work starts.
* :mod:`.seed` — ``anomalib train --seed_everything N`` applied before the model is built.
* :mod:`.callback` — :class:`FaultGuard`, the callback every anomalib-3d model adds.

Names are imported on first use, so ``import anomalib_3d.runtime`` stays light.
"""

from __future__ import annotations

from anomalib_3d._lazy import exported_names, lazy_exports

_EXPORTS = {
    ".files": ["FileLock", "atomic_write", "write_atomic"],
    ".signals": ["RunInterrupted", "StopHandler", "stop_on_signals"],
    ".checkpoints": ["GuardedCheckpointIO", "check_checkpoint_file", "check_checkpoint_matches"],
    ".memory": ["DEFAULT_MAX_CLOUD_POINTS", "check_cloud_sizes", "cloud_budget"],
    ".workspace": ["check_results_folder", "guard_engine_workspace"],
    ".seed": ["apply_cli_seed", "honour_cli_seed"],
    ".callback": ["FaultGuard"],
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = exported_names(_EXPORTS)
