"""Every switch of BTF's feature extraction, memory bank and scoring, once.

:class:`~anomalib_3d_plugins.btf.lightning_model.BTF` takes these fields as its
constructor arguments (its signature, which anomalib's CLI reads, is written from them by
:func:`~anomalib_3d.settings.switches_from`) and builds a :class:`BTFSettings` from them; the torch model reads
``self.settings``. Defaults are the paper's where it gives a number (see ``README.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anomalib_3d.settings import ModelSettings, check_choice

from .features import FEATURE_MODES


@dataclass(frozen=True)
class BTFSettings(ModelSettings):
    """The switches of :class:`~anomalib_3d_plugins.btf.torch_model.BTFModel`."""

    #: ``"raw"`` (xyz), ``"fpfh"`` (33-D FPFH) or ``"rgb_fpfh"`` (WideResNet-50 layers 2 + 3 on the
    #: RGB image concatenated with FPFH; organized input with RGB only).
    feature_mode: str = "fpfh"
    #: use the organized pipeline when the batch carries an image grid.
    use_grid: bool = True
    #: organized grids larger than this (longest side) are subsampled to it before feature
    #: extraction (BTF resizes to 224); None keeps the full grid.
    grid_size: int | None = 224
    #: patches per side on organized grids (BTF: 28).
    patch_grid: int = 28
    #: average-pooling window on the grid (BTF: 3; 1 disables pooling).
    pool_kernel: int = 3
    #: unorganized pooling neighbourhood (1 disables pooling).
    pool_k: int = 8
    #: unorganized clouds larger than this are reduced to an FPS subsample of this size, which
    #: carries the features, the bank rows and the scores (interpolated back to every point); None
    #: uses every point (cost and bank grow with the cloud).
    max_points: int | None = 16384
    #: ``"bbox"`` (centre + unit bounding-box diagonal per cloud) or ``"none"``.
    normalization: str = "bbox"
    #: FPFH neighbourhood in normalised units: radius, at most ``fpfh_max_nn`` neighbours, normals
    #: from ``normal_k`` neighbours.
    fpfh_radius: float = 0.08
    fpfh_max_nn: int = 100
    normal_k: int = 30
    #: memory-bank coreset (PatchCore: 0.1, sparse projection to ``projection_dim``).
    coreset_ratio: float = 0.1
    projection_dim: int | None = 128
    #: PatchCore re-weighting support of the object score (1: plain maximum).
    num_neighbors: int = 3
    #: Gaussian smoothing of the score map.
    smoothing: bool = True
    #: organized: pixels at 224 resolution (BTF: 4), scaled to the grid; unorganized: normalised
    #: units (None: 4 px organized, 0.02 unorganized).
    smoothing_sigma: float | None = None
    #: unorganized smoothing neighbourhood.
    smoothing_k: int = 16
    #: RGB backbone (``rgb_fpfh``): ImageNet weights (offline), from ``backbone_weights`` or
    #: torchvision's cache when None (see :class:`~anomalib_3d.nn.image_backbones.RGBBackbone`).
    pretrained_backbone: bool = True
    backbone_weights: str | Path | None = None
    #: coreset (and random RGB backbone) seed.
    seed: int = 0

    def validate(self) -> None:
        """Refuse values the model cannot run with, naming the switch."""
        check_choice("feature_mode", self.feature_mode, FEATURE_MODES)


__all__ = ["BTFSettings"]
