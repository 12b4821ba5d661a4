"""PatchCore3D: PatchCore memory bank on point-patch features (Point-MAE encoder / FPFH / raw).

``PatchCore3D`` is the anomalib model; ``PatchCore3DModel`` the plain-PyTorch features and scoring.
See ``plugins/patchcore3d/README.md``.
"""

from .lightning_model import PatchCore3D
from .torch_model import FEATURE_SOURCES, PatchCore3DModel, PatchCore3DPrediction

__all__ = ["FEATURE_SOURCES", "PatchCore3D", "PatchCore3DModel", "PatchCore3DPrediction"]
