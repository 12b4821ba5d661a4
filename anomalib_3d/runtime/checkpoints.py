"""Checkpoints that say what is wrong with them, and ``--ckpt_path last`` under anomalib's Engine.

Every checkpoint our models write carries a stamp (:data:`STAMP_KEY`): the model class and its
checkpoint format (a model's ``CHECKPOINT_FORMAT``, bumped when its stored state changes meaning).
Loading goes through :class:`GuardedCheckpointIO`, which turns every way a ``--ckpt_path`` can be
unusable into one named error before Lightning touches the model:

=====================================  ==========================================
file                                   error
=====================================  ==========================================
missing, or ``last`` with nothing      :class:`~anomalib_3d.errors.MissingCheckpointError`
empty, truncated, not a torch file     :class:`~anomalib_3d.errors.CorruptCheckpointError`
another model's, or no Lightning one   :class:`~anomalib_3d.errors.ForeignCheckpointError`
this model's, other format or shapes   :class:`~anomalib_3d.errors.IncompatibleCheckpointError`
=====================================  ==========================================

``last``: anomalib's ``Engine`` resolves every ``ckpt_path`` to an absolute path and starts a new
version folder per fit, so Lightning's own ``"last"`` keyword never reaches Lightning and would
look in the new, empty folder anyway. :func:`resolve_last` maps ``<cwd>/last`` to the newest
``last.ckpt`` of the same model, dataset and category (written after every training epoch by
:class:`~anomalib_3d.runtime.callback.FaultGuard`).
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.fabric.plugins import CheckpointIO

from anomalib_3d.errors import (
    CorruptCheckpointError,
    ForeignCheckpointError,
    IncompatibleCheckpointError,
    MissingCheckpointError,
)

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule, Trainer

__all__ = [
    "LAST_CHECKPOINT_NAME",
    "STAMP_KEY",
    "GuardedCheckpointIO",
    "check_checkpoint_file",
    "check_checkpoint_matches",
    "checkpoint_format",
    "resolve_last",
    "stamp_checkpoint",
]

STAMP_KEY = "anomalib_3d"
LAST_CHECKPOINT_NAME = "last.ckpt"
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_BYTE = 0x80
# Keys every anomalib module has, whatever the model: they say nothing about whose checkpoint it is.
_SHARED_PREFIXES = ("post_processor.", "pre_processor.", "evaluator.", "visualizer.")
_SHARED_KEYS = ("ddp_anchor", "_is_fitted")
_LISTED = 4


def checkpoint_format(module: LightningModule) -> int:
    """The checkpoint format of ``module`` (its class attribute ``CHECKPOINT_FORMAT``, default 1)."""
    return int(getattr(module, "CHECKPOINT_FORMAT", 1))


def stamp_checkpoint(checkpoint: dict[str, Any], module: LightningModule) -> None:
    """Record the model class, its checkpoint format and the package version in ``checkpoint``."""
    from anomalib_3d import __version__

    checkpoint[STAMP_KEY] = {
        "model": type(module).__name__,
        "format": checkpoint_format(module),
        "version": __version__,
    }


def resolve_last(path: str | Path, trainer: Trainer) -> Path:
    """``path`` itself, or for ``last`` the newest ``last.ckpt`` of this model / dataset / category.

    Args:
        path: the ``ckpt_path`` as Lightning received it (anomalib's Engine makes ``last`` absolute).
        trainer: the running trainer (its ``default_root_dir`` is the new version folder).

    Raises:
        MissingCheckpointError: ``last`` was asked for and no ``last.ckpt`` exists.
    """
    path = Path(path)
    if path.name != "last" or path.exists():
        return path
    run_folder = Path(trainer.default_root_dir)
    searched = [run_folder.parent]
    candidates = [p for p in run_folder.parent.glob(f"*/weights/lightning/{LAST_CHECKPOINT_NAME}") if p.is_file()]
    for callback in trainer.checkpoint_callbacks:
        dirpath = getattr(callback, "dirpath", None)
        if dirpath is not None:
            searched.append(Path(dirpath))
            last = Path(dirpath) / LAST_CHECKPOINT_NAME
            if last.is_file():
                candidates.append(last)
    if not candidates:
        raise MissingCheckpointError(
            f"--ckpt_path last: no {LAST_CHECKPOINT_NAME} to resume from (looked in "
            f"{', '.join(str(s) for s in dict.fromkeys(searched))}).",
            run_folder.parent,
            "start the fit without --ckpt_path (nothing was saved yet: a run writes last.ckpt after each training "
            "epoch), or pass the checkpoint's path.",
        )
    return max(candidates, key=lambda p: p.stat().st_mtime)


def check_checkpoint_file(path: str | Path) -> Path:
    """Refuse a file that cannot be a readable checkpoint, without unpickling anything.

    Raises:
        MissingCheckpointError: no such file.
        CorruptCheckpointError: a folder, an empty file, a zip archive whose end is missing
            (truncated copy or save), or a file that is neither torch format.
    """
    path = Path(path)
    if not path.exists():
        raise MissingCheckpointError(
            "checkpoint file does not exist.", path, "check the path given to --ckpt_path (or ckpt_path=...)."
        )
    if path.is_dir():
        raise CorruptCheckpointError(
            "is a folder, not a checkpoint file.", path, "pass the .ckpt file inside it (e.g. weights/lightning/model.ckpt)."
        )
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(4)
    if size == 0:
        raise CorruptCheckpointError("is empty (0 bytes).", path, "the save was interrupted: use another checkpoint or train again.")
    if head == _ZIP_MAGIC:
        if not zipfile.is_zipfile(path):
            raise CorruptCheckpointError(
                f"is truncated: a torch zip archive without its end ({size} bytes; the central directory is missing).",
                path,
                "the file was cut short (interrupted copy, download or save): copy it again or use another checkpoint.",
            )
        return path
    if not head or head[0] != _PICKLE_PROTOCOL_BYTE:
        raise CorruptCheckpointError(
            f"is not a torch checkpoint (it starts with {head!r}; torch files start with a zip or pickle header).",
            path,
            "pass the .ckpt written by anomalib (results/<model>/<data>/<category>/v*/weights/lightning/model.ckpt).",
        )
    return path


def _load_failure(path: Path, error: BaseException) -> CorruptCheckpointError | ForeignCheckpointError:
    text = f"{type(error).__name__}: {error}".strip()
    if len(text) > 300:
        text = text[:300] + " ..."
    if isinstance(error, pickle.UnpicklingError) and "weights only" in str(error).lower():
        return ForeignCheckpointError(
            f"holds objects that are not checkpoint data, so it is not loaded ({text}).",
            path,
            "pass a checkpoint written by an anomalib-3d model, or load trusted weights yourself with torch.load.",
        )
    return CorruptCheckpointError(
        f"cannot be read by torch.load: it is damaged or truncated ({text}).",
        path,
        "copy the checkpoint again, or use another one (each fit writes weights/lightning/model.ckpt and last.ckpt).",
    )


def _module_keys(module: LightningModule) -> dict[str, torch.Size]:
    return {key: value.shape for key, value in module.state_dict().items()}


def _resizable_owners(module: LightningModule) -> set[str]:
    """Prefixes of sub-modules that size their tensors from the checkpoint (memory banks, templates)."""
    base = torch.nn.Module._load_from_state_dict
    return {
        f"{name}." if name else ""
        for name, sub in module.named_modules()
        if type(sub)._load_from_state_dict is not base
    }


def _own(key: str) -> bool:
    return key not in _SHARED_KEYS and not key.startswith(_SHARED_PREFIXES)


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED])
    return shown + (f" and {len(keys) - _LISTED} more" if len(keys) > _LISTED else "")


def check_checkpoint_matches(checkpoint: Mapping[str, Any], module: LightningModule, path: str | Path) -> None:
    """Refuse a loaded checkpoint that is not ``module``'s, or not of its current format / shapes.

    Args:
        checkpoint: what ``torch.load`` returned.
        module: the model it is about to be loaded into.
        path: the file, for the message.

    Raises:
        ForeignCheckpointError: not a Lightning checkpoint, stamped by another model class, or
            (unstamped) sharing none of the model's own parameter names.
        IncompatibleCheckpointError: stamped with another checkpoint format, or parameter names
            or shapes that differ from the model's (another version or configuration).
    """
    path = Path(path)
    name = type(module).__name__
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("state_dict"), Mapping):
        keys = list(checkpoint)[:6] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ForeignCheckpointError(
            f"is not a Lightning checkpoint (no 'state_dict' entry; found {keys}).",
            path,
            "pass a .ckpt written by `anomalib train` / Engine.fit; pretrained backbone weights go to the model's own "
            "weights option (see the model's README).",
        )
    stamp = checkpoint.get(STAMP_KEY)
    if isinstance(stamp, Mapping):
        if stamp.get("model") != name:
            raise ForeignCheckpointError(
                f"was written by {stamp.get('model')}, but the model is {name}.",
                path,
                f"pass --model {stamp.get('model')} with this checkpoint, or a checkpoint of {name}.",
            )
        readable = getattr(module, "READABLE_CHECKPOINT_FORMATS", (checkpoint_format(module),))
        if stamp.get("format") not in readable:
            raise IncompatibleCheckpointError(
                f"is a {name} checkpoint of format {stamp.get('format')} (written by anomalib-3d "
                f"{stamp.get('version', '?')}); this installation reads {name} format "
                f"{', '.join(str(f) for f in readable)}.",
                path,
                f"load it with the anomalib-3d version that wrote it, or train {name} again.",
            )
    state = checkpoint["state_dict"]
    expected = _module_keys(module)
    own_stored = [k for k in state if _own(k)]
    own_expected = [k for k in expected if _own(k)]
    if not isinstance(stamp, Mapping) and own_stored and own_expected and not set(own_stored) & set(own_expected):
        raise ForeignCheckpointError(
            f"shares none of {name}'s parameters (it holds e.g. {_listed(sorted(own_stored))}): it was written by "
            "another model.",
            path,
            f"pass the --model that wrote it, or a checkpoint of {name}.",
        )
    if not getattr(module, "strict_loading", True):
        return
    unexpected = sorted(k for k in state if k not in expected)
    # A model that overrides load_state_dict fills what it does not store (PointAD rebuilds its
    # frozen backbone): its missing keys are its own business.
    fills_missing = type(module).load_state_dict is not torch.nn.Module.load_state_dict
    missing = [] if fills_missing else sorted(k for k in expected if k not in state)
    resizable = _resizable_owners(module)
    reshaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(shape)}"
        for k, shape in expected.items()
        if k in state
        and hasattr(state[k], "shape")
        and tuple(state[k].shape) != tuple(shape)
        and (k.rsplit(".", 1)[0] + "." if "." in k else "") not in resizable
    ]
    if unexpected or missing or reshaped:
        parts = []
        if reshaped:
            parts.append(f"shapes differ ({_listed(reshaped)})")
        if missing:
            parts.append(f"the model has parameters the checkpoint lacks ({_listed(missing)})")
        if unexpected:
            parts.append(f"the checkpoint has parameters the model lacks ({_listed(unexpected)})")
        raise IncompatibleCheckpointError(
            f"does not fit this {name}: {'; '.join(parts)}. It was written by another version of {name} or with "
            "other model settings.",
            path,
            "use the same --model.* settings (and anomalib-3d version) as the run that wrote it; the settings are in "
            "the checkpoint's 'hyper_parameters'.",
        )


class GuardedCheckpointIO(CheckpointIO):
    """Wraps the trainer's checkpoint IO: named errors for unusable checkpoints, and ``last``.

    Saving and removing go to the wrapped IO unchanged; other attributes (anomalib's
    ``extra_safe_globals``) are read from and written to it.

    Args:
        inner: the IO to wrap (anomalib's ``AnomalibCheckpointIO`` under its Engine).
        trainer: the trainer whose model a checkpoint must fit.
    """

    def __init__(self, inner: CheckpointIO, trainer: Trainer) -> None:
        super().__init__()
        self.__dict__["inner"] = inner
        self.__dict__["trainer"] = trainer

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401
        return getattr(self.__dict__["inner"], name)

    def __setattr__(self, name: str, value: Any) -> None:  # noqa: ANN401
        if name in self.__dict__:
            self.__dict__[name] = value
        else:
            setattr(self.__dict__["inner"], name, value)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:  # noqa: ANN401
        """Delegated."""
        self.inner.save_checkpoint(checkpoint, path, storage_options=storage_options)

    def remove_checkpoint(self, path: Any) -> None:  # noqa: ANN401
        """Delegated."""
        self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        """Delegated."""
        self.inner.teardown()

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:  # noqa: ANN401
        """Load ``path`` (``last`` resolved) through the wrapped IO, raising a named error when unusable."""
        if isinstance(path, str) and "://" in path:  # remote (fsspec) paths: left to the wrapped IO
            return self.inner.load_checkpoint(path, *args, **kwargs)
        resolved = check_checkpoint_file(resolve_last(path, self.trainer))
        try:
            checkpoint = self.inner.load_checkpoint(resolved, *args, **kwargs)
        except FileNotFoundError as err:
            raise MissingCheckpointError("checkpoint file does not exist.", resolved, "check --ckpt_path.") from err
        except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError) as err:
            raise _load_failure(resolved, err) from err
        module = self.trainer.lightning_module
        if module is not None:
            check_checkpoint_matches(checkpoint, module, resolved)
        return checkpoint
