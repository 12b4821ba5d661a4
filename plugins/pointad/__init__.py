"""PointAD: zero-shot 3D (and multimodal) anomaly detection with CLIP, multi-view rendering and
hybrid point/pixel prompt learning (Zhou et al., NeurIPS 2024). See ``README.md``.

* :class:`PointAD` — the anomalib Lightning module (``anomalib train --model PointAD``);
* :class:`PointADModel` — the PyTorch model (render → frozen CLIP → prompts → point scores);
* :class:`RenderSettings` — views and drawing of the clouds (our style or the authors' Open3D
  pictures, :data:`OFFICIAL_STYLES` in ``official``); :class:`FeatureCache` — frozen features
  reused across epochs; ``scoring`` / ``rgb_fusion`` — smoothing, object score, RGB branch;
* :class:`FrozenCLIP` — open_clip loading, value-value attention, multi-layer patch tokens;
* :class:`PromptLearner` — object-agnostic / object-aware learnable prompts (+ deep prompts);
* :class:`HybridLoss` — the four switchable loss terms;
* :func:`load_official_prompts` — the authors' released prompt checkpoints.
"""

from __future__ import annotations

import importlib
from typing import Any

# Lazy: importing a sub-module (e.g. the torch model) must not import anomalib.models, whose import
# hook loads this plugin; a half-initialised package would then fail to provide ``PointAD``.
_WHERE = {
    "BUILTIN_CONFIGS": "clip_backbone",
    "FrozenCLIP": "clip_backbone",
    "load_open_clip": "clip_backbone",
    "load_official_prompts": "checkpoint",
    "PointAD": "lightning_model",
    "HybridLoss": "loss",
    "HybridLossInputs": "loss",
    "PromptLearner": "prompts",
    "FeatureCache": "feature_cache",
    "OFFICIAL_STYLES": "official",
    "PointADModel": "torch_model",
    "PointADPrediction": "scoring",
    "RenderSettings": "render_settings",
}


def __getattr__(name: str) -> Any:  # noqa: ANN401
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = [
    "BUILTIN_CONFIGS",
    "FeatureCache",
    "FrozenCLIP",
    "HybridLoss",
    "HybridLossInputs",
    "OFFICIAL_STYLES",
    "PointAD",
    "PointADModel",
    "PointADPrediction",
    "PromptLearner",
    "RenderSettings",
    "load_official_prompts",
    "load_open_clip",
]
