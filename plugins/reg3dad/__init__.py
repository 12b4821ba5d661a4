"""Reg3DAD: registration to training templates + point distance (Real3D-AD's Reg3D-AD baseline),
with Reg3D-AD's dual coordinate / feature memory bank as a switch.

``Reg3DAD`` is the anomalib model; ``Reg3DADModel`` the plain-PyTorch templates and scoring.
See ``plugins/reg3dad/README.md``.
"""

from .lightning_model import Reg3DAD
from .torch_model import Reg3DADModel, Reg3DADPrediction

__all__ = ["Reg3DAD", "Reg3DADModel", "Reg3DADPrediction"]
