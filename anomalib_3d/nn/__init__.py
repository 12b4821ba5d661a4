"""Neural-network building blocks shared by the models: the Point-MAE patch encoder (IMRNet,
PatchCore3D), transformer blocks, frozen image backbones and pretrained-weight lookup.

Sits beside :mod:`anomalib_3d.ops` (which it uses) and below the data layer and the plugins.
"""

from anomalib_3d.nn.image_backbones import WIDE_RESNET50_URL, RGBBackbone, grid_patch_features
from anomalib_3d.nn.point_mae import (
    POINT_MAE_URL,
    PatchTokenizer,
    PointMAE,
    PreparedClouds,
    group_into_patches,
    map_point_mae_state_dict,
    position_embedding,
    prepare_clouds,
    read_point_mae_checkpoint,
    take_patches,
)
from anomalib_3d.nn.transformer import DropPath, FeedForward, SelfAttention, TransformerBlock, TransformerStack
from anomalib_3d.nn.weights import cached_checkpoint, hub_checkpoint_dir, load_state_dict_file

__all__ = [
    "POINT_MAE_URL",
    "WIDE_RESNET50_URL",
    "DropPath",
    "FeedForward",
    "PatchTokenizer",
    "PointMAE",
    "PreparedClouds",
    "RGBBackbone",
    "SelfAttention",
    "TransformerBlock",
    "TransformerStack",
    "cached_checkpoint",
    "grid_patch_features",
    "group_into_patches",
    "hub_checkpoint_dir",
    "load_state_dict_file",
    "map_point_mae_state_dict",
    "position_embedding",
    "prepare_clouds",
    "read_point_mae_checkpoint",
    "take_patches",
]
