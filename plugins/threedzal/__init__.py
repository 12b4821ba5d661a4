"""3DzAL: zero-shot 3D anomaly localization from task-irrelevant data. See ``README.md``.

* :class:`ThreeDzAL` — the anomalib Lightning module (``anomalib train --model ThreeDzAL``);
* :class:`ThreeDzALModel` — the PyTorch model (branches, pseudo-anomaly losses, bank, scores);
* :mod:`.grid_defects` — pseudo-defects made on the whole organized grid (attach, bulge, dent, hole);
* :mod:`.pseudo_anomaly` — random-CNN points of interest, the paper's per-cell adding / removing,
  count-matched positives;
* :mod:`.cells` — organized clouds cut into cells (the patches every part scores).
"""

from __future__ import annotations

import importlib
from typing import Any

# Lazy, as in the PointAD plugin: importing a sub-module must not import anomalib.models, whose
# import hook loads this plugin.
_WHERE = {
    "SMALL_PRESET": "lightning_model",
    "ThreeDzAL": "lightning_model",
    "ThreeDzALModel": "torch_model",
    "ThreeDzALPrediction": "torch_model",
    "perturb_patches": "torch_model",
    "ThreeDzALLoss": "loss",
    "patch_contrastive_loss": "loss",
    "PatchPointNet2": "pointnet2",
    "GeneratorCNN": "pseudo_anomaly",
    "add_points": "pseudo_anomaly",
    "remove_points": "pseudo_anomaly",
    "match_counts": "pseudo_anomaly",
    "synthesise_defect": "grid_defects",
    "interest_centre": "grid_defects",
    "cut_cells": "cells",
}


def __getattr__(name: str) -> Any:  # noqa: ANN401
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = sorted(_WHERE)
