"""Every switch of PatchCore3D's patching, features, memory bank and scoring, once.

:class:`~anomalib_3d_plugins.patchcore3d.lightning_model.PatchCore3D` takes these fields as its
constructor arguments (its signature, which anomalib's CLI reads, is written from them by
:func:`~anomalib_3d.settings.switches_from`) and builds a :class:`PatchCore3DSettings` from them; the torch
model reads ``self.settings``. See ``README.md`` for the Real3D-AD / M3DM rows these reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anomalib_3d.settings import ModelSettings

#: The feature sources, in the order their features are concatenated.
FEATURE_SOURCES = ("point_mae", "fpfh", "raw")


@dataclass(frozen=True)
class PatchCore3DSettings(ModelSettings):
    """The switches of :class:`~anomalib_3d_plugins.patchcore3d.torch_model.PatchCore3DModel`."""

    #: any of ``"point_mae"``, ``"fpfh"``, ``"raw"`` (concatenated in this order). Real3D-AD's
    #: "FPFH + Raw" row is ``("fpfh", "raw")``.
    feature_sources: tuple[str, ...] = ("point_mae",)
    #: points per cloud after FPS subsampling (smaller clouds are used whole).
    num_points: int = 2048
    #: patches per cloud.
    num_groups: int = 128
    #: points per patch.
    group_size: int = 32
    #: encoder sizes: width, tokenizer width, blocks, heads (Point-MAE: 384, 256, 12, 6; a
    #: Point-MAE checkpoint needs those).
    embed_dim: int = 128
    tokenizer_width: int = 128
    encoder_depth: int = 4
    num_heads: int = 4
    #: encoder blocks (1-based) whose layer-normalised outputs are concatenated (Real3D-AD / M3DM
    #: with Point-MAE: 3, 7, 11); 0 is the patch tokens (mini-PointNet of the patch shape, before
    #: any position embedding or attention).
    feature_layers: tuple[int, ...] = (2, 4)
    #: Point-MAE ``pretrain.pth``; None keeps the seeded random initialisation.
    pretrained_path: str | Path | None = None
    #: FPFH neighbourhood in the normalised frame (unit radius): radius and at most this many neighbours.
    fpfh_radius: float = 0.15
    fpfh_max_nn: int = 100
    #: divide each source by its mean feature norm on the training set, so a 33-D histogram and 3
    #: coordinates weigh alike in the distance (False: plain concatenation).
    balance_sources: bool = True
    #: memory-bank coreset: kept share and random projection width.
    coreset_ratio: float = 0.1
    projection_dim: int | None = 128
    #: PatchCore re-weighting support (1: plain maximum).
    num_neighbors: int = 3
    #: patch centres averaged (inverse distance) for each point's score.
    interpolation_k: int = 3
    #: Gaussian smoothing of the point scores over ``smoothing_k`` neighbours (0: off), sigma in
    #: the normalised frame.
    smoothing_k: int = 0
    smoothing_sigma: float = 0.03
    #: encoder initialisation and coreset seed.
    seed: int = 0

    def validate(self) -> None:
        """Refuse values the model cannot run with, naming the switch."""
        sources = tuple(self.feature_sources)
        bad = [s for s in sources if s not in FEATURE_SOURCES]
        if not sources or bad:
            msg = f"feature_sources must be a non-empty subset of {FEATURE_SOURCES}, got {sources}."
            raise ValueError(msg)
        layers = tuple(int(layer) for layer in self.feature_layers)
        if not layers or min(layers) < 0 or max(layers) > self.encoder_depth:
            msg = f"feature_layers {layers} must be encoder blocks in 1 .. {self.encoder_depth} (0: the patch tokens)."
            raise ValueError(msg)


__all__ = ["FEATURE_SOURCES", "PatchCore3DSettings"]
