"""IMRNet (Li et al., CVPR 2024): iterative mask reconstruction for 3D point-cloud anomaly detection.

``IMRNet`` is the anomalib model; ``IMRNetModel`` the plain-PyTorch network and scoring.
See ``plugins/imrnet/README.md`` for the paper readings, switches and measured results.
"""

from .lightning_model import SMALL_PRESET, IMRNet
from .torch_model import PAPER_LITERAL, IMRNetModel, IMRNetPrediction

__all__ = ["PAPER_LITERAL", "SMALL_PRESET", "IMRNet", "IMRNetModel", "IMRNetPrediction"]
