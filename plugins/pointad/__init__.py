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

from anomalib_3d._lazy import exported_names, lazy_exports

# Lazy: importing a sub-module (e.g. the torch model) must not import anomalib.models, whose import
# hook loads this plugin; a half-initialised package would then fail to provide ``PointAD``.
_EXPORTS = {
    ".clip_backbone": ("BUILTIN_CONFIGS", "FrozenCLIP", "load_open_clip"),
    ".checkpoint": ("load_official_prompts",),
    ".lightning_model": ("PointAD",),
    ".loss": ("HybridLoss", "HybridLossInputs"),
    ".prompts": ("PromptLearner",),
    ".feature_cache": ("FeatureCache",),
    ".official": ("OFFICIAL_STYLES",),
    ".torch_model": ("PointADModel",),
    ".scoring": ("PointADPrediction",),
    ".render_settings": ("RenderSettings",),
    ".settings": ("PointADSettings",),
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = exported_names(_EXPORTS)
