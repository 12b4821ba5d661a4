"""3DzAL: zero-shot 3D anomaly localization from task-irrelevant data. See ``README.md``.

* :class:`ThreeDzAL` — the anomalib Lightning module (``anomalib train --model ThreeDzAL``);
* :class:`ThreeDzALModel` — the PyTorch model (branches, pseudo-anomaly losses, bank, scores);
* :mod:`.grid_defects` — pseudo-defects made on the whole organized grid (attach, bulge, dent, hole);
* :mod:`.pseudo_anomaly` — random-CNN points of interest, the paper's per-cell adding / removing,
  count-matched positives;
* :mod:`.cells` — organized clouds cut into cells (the patches every part scores).
"""

from __future__ import annotations

from anomalib_3d._lazy import exported_names, lazy_exports

# Lazy, as in the PointAD plugin: importing a sub-module must not import anomalib.models, whose
# import hook loads this plugin.
_EXPORTS = {
    ".lightning_model": ("SMALL_PRESET", "ThreeDzAL"),
    ".torch_model": ("ThreeDzALModel", "ThreeDzALPrediction", "perturb_patches"),
    ".settings": ("ThreeDzALSettings",),
    ".loss": ("ThreeDzALLoss", "patch_contrastive_loss"),
    ".pointnet2": ("PatchPointNet2",),
    ".pseudo_anomaly": ("GeneratorCNN", "add_points", "remove_points", "match_counts"),
    ".grid_defects": ("synthesise_defect", "interest_centre"),
    ".cells": ("cut_cells",),
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = exported_names(_EXPORTS)
