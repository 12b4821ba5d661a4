"""Every switch of the Odd-One-Out network (voxel grid, 2D encoder, 3D backbone, heads, attention), once.

:class:`~anomalib_3d_plugins.odd_one_out.lightning_model.OddOneOut` takes these fields as its
constructor arguments (its signature, which anomalib's CLI reads, is written from them by
:func:`~anomalib_3d.settings.switches_from`) and builds an :class:`OddOneOutSettings` from them; the torch
model (:class:`~anomalib_3d_plugins.odd_one_out.torch_model.OddOneOutModel`) reads it once. The
training switches (rendering, teacher, losses, boxes, optimiser) are the Lightning module's own.
Defaults are CPU-sized; the paper's values are given in each doc (see ``README.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

from anomalib_3d.settings import ModelSettings


@dataclass(frozen=True)
class OddOneOutSettings(ModelSettings):
    """The switches of :class:`~anomalib_3d_plugins.odd_one_out.torch_model.OddOneOutModel`."""

    # -- the voxel grid
    #: voxels along world x, y, z, edge length (metres) and world centre of the grid (paper: 96 x 96
    #: x 16, 4 cm, centred at the origin).
    grid_shape: tuple[int, int, int] = (96, 96, 16)
    voxel_size: float = 0.04
    grid_center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # -- volume and heads
    #: channels of the 2D maps and of the 3D features (paper: 32).
    feature_dim: int = 32
    #: width of β (paper: 128 after PCA of DINOv2 features; 384 in the official code).
    projection_dim: int = 32
    #: per-object crop (paper: 8 x 8 x 8).
    crop_size: int = 8
    #: cross-instance attention: ``"sparse"`` | ``"dense"`` | ``"none"`` (ablation switch).
    attention: str = "sparse"
    #: correspondences per other instance (paper: 20).
    topk: int = 20
    #: attention stack: blocks, heads, token width (paper: 3 blocks, 8 heads).
    num_blocks: int = 3
    heads: int = 8
    token_dim: int = 64
    #: enlarge boxes by this fraction on each side before cropping.
    crop_margin: float = 0.1
    #: 2D encoder, ``"small"`` (CPU preset) or ``"resnet50_fpn"`` (the paper's ResNet-50 + FPN);
    #: ``encoder_weights``: ``"default"`` (ImageNet from torch hub's cache for ResNet-50), a local
    #: file, or ``None`` (random init).
    encoder: str = "small"
    encoder_weights: str | None = "default"
    #: ``"conv"`` (the paper: strided 3D convolutions to 1/8, then a 2-layer MLP) or ``"mean"``
    #: (token average, then the MLP).
    readout: str = "conv"
    #: render β with the density detached (the paper), so distillation shapes the features but not
    #: the geometry.
    feature_stop_gradient: bool = True
    #: resolutions of the 3D encoder-decoder (the paper's "four-scale" backbone: 4).
    unet_scales: int = 4
    #: 1 x 1 x 1 layers of the colour and density heads (paper: 2).
    head_layers: int = 2
    #: layers of the projector β (paper: 4).
    projection_layers: int = 4
    #: width of the heads' hidden layers (official code: 128).
    head_hidden: int = 128


__all__ = ["OddOneOutSettings"]
