"""Odd-One-Out (Bhunia et al., CVPR 2025): find the odd object in a multi-view multi-object scene.

Work in progress (see ``README.md``): ``OddOneOut`` is the anomalib model (CPU-sized first
version: small 2D/3D backbones, a random frozen stand-in teacher instead of DINOv2, ground-truth
boxes); ``OddOneOutModel`` the plain-PyTorch network with the cross-instance attention.
"""

from .backbones import DinoV2Teacher, ResNetFPNEncoder, build_encoder, build_teacher
from .lightning_model import OddOneOut, paint_object_scores
from .proposals import cluster_density, density_proposals
from .torch_model import (
    CrossInstanceAttention,
    CrossInstanceBlock,
    OddOneOutModel,
    OddOneOutOutput,
    SmallEncoder2D,
    VolumeNet3D,
    cross_instance_attention,
)

__all__ = [
    "CrossInstanceAttention",
    "DinoV2Teacher",
    "ResNetFPNEncoder",
    "build_encoder",
    "build_teacher",
    "cluster_density",
    "density_proposals",
    "OddOneOut",
    "paint_object_scores",
    "CrossInstanceBlock",
    "OddOneOutModel",
    "OddOneOutOutput",
    "SmallEncoder2D",
    "VolumeNet3D",
    "cross_instance_attention",
]
