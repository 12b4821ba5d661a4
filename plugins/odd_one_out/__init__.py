"""Odd-One-Out (Bhunia et al., CVPR 2025): find the odd object in a multi-view multi-object scene.

``OddOneOut`` is the anomalib model (two-stage training, scene / object / pixel metrics, scene
pictures); ``OddOneOutModel`` the plain-PyTorch network with the sparse cross-instance attention;
``backbones`` the paper's ResNet-50 + FPN encoder and DINOv2 teacher; ``proposals`` the object
proposals from the predicted density. See ``README.md`` for switches and measured results.
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
