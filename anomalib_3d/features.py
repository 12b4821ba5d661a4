"""Image features and pretrained-weight lookup, importable here as well as from
:mod:`anomalib_3d.nn` (where they live: :mod:`anomalib_3d.nn.image_backbones`,
:mod:`anomalib_3d.nn.weights`)."""

from anomalib_3d.nn.image_backbones import WIDE_RESNET50_URL, RGBBackbone, grid_patch_features
from anomalib_3d.nn.weights import cached_checkpoint, hub_checkpoint_dir, load_state_dict_file

__all__ = [
    "WIDE_RESNET50_URL",
    "RGBBackbone",
    "cached_checkpoint",
    "grid_patch_features",
    "hub_checkpoint_dir",
    "load_state_dict_file",
]
