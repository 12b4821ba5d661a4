"""Where pretrained weight files are looked for, and how they are read.

Nothing is ever downloaded: a file is given by path, or found in torch hub's checkpoint folder;
a missing or unreadable file is a named error (:class:`MissingWeightsError`,
:class:`CorruptFileError`) whose message says what to fetch and where to put it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from anomalib_3d.errors import CorruptFileError

__all__ = ["cached_checkpoint", "hub_checkpoint_dir", "load_state_dict_file"]


def hub_checkpoint_dir() -> Path:
    """torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``): where every pretrained weight
    file of this project is looked for when no path is given. Nothing is ever downloaded."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_checkpoint(*patterns: str) -> Path | None:
    """The first file in :func:`hub_checkpoint_dir` matching the first pattern that matches anything
    (exact names first, then globs such as ``"resnet50-*.pth"``), or ``None``."""
    folder = hub_checkpoint_dir()
    if not folder.is_dir():
        return None
    for pattern in patterns:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    return None


def load_state_dict_file(path: Path, what: str, fix: str) -> dict[str, torch.Tensor]:
    """A ``str -> Tensor`` mapping from a ``.pth`` / ``.pt`` (``torch.load``) or ``.safetensors`` file.

    Raises:
        CorruptFileError: the file cannot be read or holds no state dict (message names ``what``).
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CorruptFileError(f"cannot read {what} ({type(exc).__name__}: {exc}).", path=path, fix=fix) from exc
    if not isinstance(state, dict):
        raise CorruptFileError(f"{what}: expected a state dict, found a {type(state).__name__}.", path=path, fix=fix)
    return state
