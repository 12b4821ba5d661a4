"""Load the authors' released PointAD prompt checkpoints into :class:`PromptLearner`.

The official release (zqhang/PointAD, ``epoch_15.pth``) stores ``{"prompt_learner": state}``
where ``state`` holds, for ViT-L/14@336 with ``n_ctx = 12``, ``depth = 9``, ``t_n_ctx = 4``:

=============================  ==================  ====================================
official key                   shape               our parameter
=============================  ==================  ====================================
``ctx_pos``                    ``(1, 1, 12, 768)`` ``normal_context`` ``(12, 768)``
``ctx_neg``                    ``(1, 1, 12, 768)`` ``abnormal_context`` ``(12, 768)``
``compound_prompts_text.i``    ``(4, 768)``        ``deep.i`` (``i = 0 .. 7``)
=============================  ==================  ====================================

``ctx_pos`` is the *normal* template (``[V1..V12] object.``) and ``ctx_neg`` the abnormal one
(``[W1..W12] damaged object.``); the leading ``(1, 1)`` are the class and template counts of the
object-agnostic learner. Everything else in the state (frozen token prefixes/suffixes, tokenized
prompts, the unused ``compound_prompt_projections``) is rebuilt by us from CLIP and is dropped
with one log line naming the keys.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from anomalib_3d.errors import CorruptFileError
from anomalib_3d_plugins.pointad.prompts import PromptLearner

logger = logging.getLogger(__name__)

_DEEP_PREFIX = "compound_prompts_text."


def _read_state(source: str | Path | Mapping[str, object]) -> tuple[Mapping[str, Tensor], Path | None]:
    path = None
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise CorruptFileError(
                "PointAD prompt checkpoint not found.",
                path=path,
                fix="pass the path of the authors' epoch_15.pth (or a file with the same 'prompt_learner' layout)",
            )
        source = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(source, Mapping):
        raise CorruptFileError(f"a prompt checkpoint must be a dict, got {type(source).__name__}.", path=path)
    state = source.get("prompt_learner", source)
    if not isinstance(state, Mapping) or "ctx_pos" not in state or "ctx_neg" not in state:
        keys = sorted(state)[:8] if isinstance(state, Mapping) else type(state).__name__
        raise CorruptFileError(
            f"not an official PointAD prompt checkpoint: no 'prompt_learner' with 'ctx_pos' / 'ctx_neg' (found {keys}).",
            path=path,
            fix="use the authors' released epoch_15.pth, or save {'prompt_learner': {'ctx_pos', 'ctx_neg', "
            "'compound_prompts_text.0', ...}}",
        )
    return state, path


def _context(state: Mapping[str, Tensor], key: str, target: Tensor, path: Path | None) -> Tensor:
    value = torch.as_tensor(state[key])
    # (1, 1, E, W): one class (object-agnostic), one template.
    if value.ndim == 4 and value.shape[:2] == (1, 1):
        value = value[0, 0]
    if tuple(value.shape) != tuple(target.shape):
        raise CorruptFileError(
            f"'{key}' has shape {tuple(torch.as_tensor(state[key]).shape)}; this model expects (1, 1, "
            f"{target.shape[0]}, {target.shape[1]}) (prompt_length={target.shape[0]}, text width={target.shape[1]}).",
            path=path,
            fix="build PointAD with the checkpoint's settings (ViT-L-14-336: prompt_length 12, text width 768)",
        )
    return value


def load_official_prompts(
    prompt_learner: PromptLearner, source: str | Path | Mapping[str, object]
) -> dict[str, list[str]]:
    """Copy an official PointAD prompt checkpoint into ``prompt_learner`` (in place).

    Args:
        prompt_learner: our learner, built for the same backbone, ``prompt_length`` (12) and deep
            prompts (``deep_prompt_length`` 4, ``deep_prompt_depth`` 9).
        source: path of the ``.pth`` file, the loaded dict (``{"prompt_learner": state}``) or the
            state itself.

    Returns:
        ``{"loaded": [our parameter names], "dropped": [official keys not used]}``.

    Raises:
        CorruptFileError: missing file, not that layout, or shapes that do not fit this model.
    """
    state, path = _read_state(source)
    normal = _context(state, "ctx_pos", prompt_learner.normal_context, path)
    abnormal = _context(state, "ctx_neg", prompt_learner.abnormal_context, path)
    deep_keys = sorted((k for k in state if k.startswith(_DEEP_PREFIX) and k[len(_DEEP_PREFIX) :].isdigit()),
                       key=lambda k: int(k[len(_DEEP_PREFIX) :]))
    if len(deep_keys) != len(prompt_learner.deep):
        raise CorruptFileError(
            f"the checkpoint has {len(deep_keys)} deep text prompts ({_DEEP_PREFIX}*), this model "
            f"{len(prompt_learner.deep)}.",
            path=path,
            fix=f"set deep_prompt_depth={len(deep_keys) + 1} (deep_prompts={bool(deep_keys)})",
        )
    deep_values = []
    for index, (key, target) in enumerate(zip(deep_keys, prompt_learner.deep, strict=True)):
        if key != f"{_DEEP_PREFIX}{index}":
            raise CorruptFileError(f"deep prompts are not numbered 0..{len(deep_keys) - 1}: found '{key}'.", path=path)
        value = torch.as_tensor(state[key])
        if tuple(value.shape) != tuple(target.shape):
            raise CorruptFileError(
                f"'{key}' has shape {tuple(value.shape)}; this model expects {tuple(target.shape)} "
                f"(deep_prompt_length={target.shape[0]}, text width={target.shape[1]}).",
                path=path,
                fix=f"set deep_prompt_length={value.shape[0]}" if value.ndim == 2 else None,
            )
        deep_values.append(value)
    with torch.no_grad():
        prompt_learner.normal_context.copy_(normal.to(prompt_learner.normal_context))
        prompt_learner.abnormal_context.copy_(abnormal.to(prompt_learner.abnormal_context))
        for parameter, value in zip(prompt_learner.deep, deep_values, strict=True):
            parameter.copy_(value.to(parameter))
    used = {"ctx_pos", "ctx_neg", *deep_keys}
    dropped = sorted(k for k in state if k not in used)
    loaded = ["normal_context", "abnormal_context", *(f"deep.{i}" for i in range(len(deep_values)))]
    logger.info(
        "Loaded the official PointAD prompts%s: %s; dropped %d key(s) rebuilt from CLIP or unused: %s",
        f" from {path}" if path else "", ", ".join(loaded), len(dropped), ", ".join(dropped) or "none",
    )
    return {"loaded": loaded, "dropped": dropped}


__all__ = ["load_official_prompts"]
