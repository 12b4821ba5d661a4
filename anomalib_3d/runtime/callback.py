""":class:`FaultGuard`: the Lightning callback every anomalib-3d model adds to its trainer.

What it does, hook by hook:

* ``setup`` (before any step, and before the checkpoint of ``--ckpt_path`` is read): checks the
  results folder (:func:`~anomalib_3d.runtime.workspace.check_results_folder`) and wraps the
  trainer's checkpoint IO in :class:`~anomalib_3d.runtime.checkpoints.GuardedCheckpointIO` (named
  errors for unusable checkpoints, ``--ckpt_path last``).
* ``on_{train,validation,test,predict,sanity_check}_start``: installs the SIGTERM / Ctrl-C
  handler (:class:`~anomalib_3d.runtime.signals.StopHandler`) after Lightning has registered its
  own, which it then calls first (it tells DDP workers to stop). Before that point no handler
  holds SIGTERM, whose default action ends the process at once. ``teardown`` and
  ``on_exception`` restore what was there.
* ``on_*_batch_start``: the cloud-size budget (:func:`~anomalib_3d.runtime.memory.check_cloud_sizes`).
* ``on_train_epoch_end`` (trained models, ``max_epochs > 1``): writes ``last.ckpt`` next to
  anomalib's ``model.ckpt``, with the states of the random-number generators (global ones and
  those a model keeps as attributes), which a resume puts back when it loads the checkpoint; a
  fit stopped in epoch k and resumed then continues as the uninterrupted fit would have (same
  shuffling, same random masks).
* ``on_save_checkpoint``: stamps the model class and checkpoint format into every checkpoint.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lightning.pytorch import Callback

from anomalib_3d.runtime.checkpoints import LAST_CHECKPOINT_NAME, GuardedCheckpointIO, stamp_checkpoint
from anomalib_3d.runtime.memory import check_cloud_sizes
from anomalib_3d.runtime.signals import StopHandler
from anomalib_3d.runtime.workspace import check_results_folder

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule, Trainer

__all__ = ["RERUN_HINT", "RESUME_HINT", "FaultGuard", "collect_rng_states", "module_generators", "restore_rng_states"]

RESUME_HINT = "Resume the fit with the same command plus --ckpt_path last."
RERUN_HINT = "Run the same command again to redo it."


def collect_rng_states() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) generators, as checkpoint-safe
    values (tensors, ints, floats, strings: loadable with ``torch.load(weights_only=True)``)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": list(python_state), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Put back what :func:`collect_rng_states` returned."""
    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = states["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss_next"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def module_generators(module: torch.nn.Module) -> dict[str, torch.Generator]:
    """Every ``torch.Generator`` a model keeps as an attribute (its own random streams), by
    ``<sub-module path>.<attribute>``; a checkpoint does not store them otherwise."""
    found: dict[str, torch.Generator] = {}
    for prefix, sub in module.named_modules():
        for name, value in vars(sub).items():
            if isinstance(value, torch.Generator):
                found[f"{prefix}.{name}" if prefix else name] = value
    return found


def _model_bytes(module: LightningModule) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values() if isinstance(t, torch.Tensor))


class FaultGuard(Callback):
    """Named errors before work starts, prompt stops, resumable fits (see the module docstring).

    Args:
        check_folder: check the results folder at ``setup``.
        save_last: write ``last.ckpt`` after every training epoch of a fit longer than one epoch.
    """

    def __init__(self, check_folder: bool = True, save_last: bool = True) -> None:
        self.check_folder = check_folder
        self.save_last = save_last
        self._trainer: Trainer | None = None
        self._stop = StopHandler(self._stage, RERUN_HINT)
        self._rng_states: dict[str, Any] | None = None

    # -- where the run is, for the stop message ------------------------------------------------
    def _stage(self) -> str:
        trainer = self._trainer
        if trainer is None:
            return "the run"
        function = trainer.state.fn.value if trainer.state.fn is not None else "run"
        stage = trainer.state.stage.value if trainer.state.stage is not None else None
        where = f"{function}" if stage in (None, function) else f"{function} ({stage})"
        if function == "fit":
            where += f", epoch {trainer.current_epoch}"
        return where

    def _resumable(self, trainer: Trainer) -> bool:
        return self.save_last and trainer.max_epochs is not None and trainer.max_epochs != 1

    # -- set-up and tear-down -------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Results folder and checkpoint IO (before the checkpoint of ``--ckpt_path`` is read)."""
        self._trainer = trainer
        if self.check_folder and trainer.is_global_zero:
            # A checkpoint is written twice at most at once (model.ckpt, last.ckpt) plus a temporary copy.
            check_results_folder(trainer.default_root_dir, needed_bytes=3 * _model_bytes(pl_module))
        strategy = trainer.strategy
        if not isinstance(strategy.checkpoint_io, GuardedCheckpointIO):
            strategy.checkpoint_io = GuardedCheckpointIO(strategy.checkpoint_io, trainer)
        self._stop.resume_hint = RESUME_HINT if stage == "fit" and self._resumable(trainer) else RERUN_HINT

    # -- the stop handler: installed once Lightning has registered its own (which it calls first)
    def _install_stop(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Stop on SIGTERM / Ctrl-C from here on (idempotent)."""
        del trainer, pl_module
        self._stop.install()

    on_sanity_check_start = on_train_start = on_validation_start = _install_stop
    on_test_start = on_predict_start = _install_stop

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Put the signal handlers back."""
        del trainer, pl_module, stage
        self._stop.restore()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Put the signal handlers back (Lightning skips ``teardown`` after an exception)."""
        del trainer, pl_module, exception
        self._stop.restore()

    # -- cloud-size budget ----------------------------------------------------------------------
    def _check_batch(self, trainer: Trainer, pl_module: LightningModule, batch: Any, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        """Refuse clouds over the model's budget, before the step sees them."""
        del trainer, args, kwargs
        check_cloud_sizes(batch, pl_module)

    on_train_batch_start = on_validation_batch_start = on_test_batch_start = on_predict_batch_start = _check_batch

    # -- resumable fits -------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write ``last.ckpt`` (atomically: Lightning saves through a temporary file)."""
        if not self._resumable(trainer):
            return
        callback = trainer.checkpoint_callback
        dirpath = getattr(callback, "dirpath", None)
        folder = Path(dirpath) if dirpath else Path(trainer.default_root_dir) / "checkpoints"
        self._rng_states = collect_rng_states()
        self._rng_states["modules"] = {name: g.get_state() for name, g in module_generators(pl_module).items()}
        trainer.save_checkpoint(folder / LAST_CHECKPOINT_NAME)

    def state_dict(self) -> dict[str, Any]:
        """The generator states at the end of the last finished training epoch."""
        return {"rng_states": self._rng_states} if self._rng_states is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Put back the generator states stored with the checkpoint.

        Right away: the first training iterator of a resumed fit is created before any epoch
        hook runs (Lightning's sanity check in between keeps the generators as they are).
        """
        states = state_dict.get("rng_states")
        if states is None:
            return
        restore_rng_states(states)
        module = self._trainer.lightning_module if self._trainer is not None else None
        if module is not None:
            generators = module_generators(module)
            for name, state in states.get("modules", {}).items():
                if name in generators:
                    generators[name].set_state(state)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Stamp the model class and checkpoint format."""
        del trainer
        stamp_checkpoint(checkpoint, pl_module)
