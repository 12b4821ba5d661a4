"""BTF (Horwitz & Hoshen, "Back to the Feature", CVPR-W 2023): raw / FPFH / RGB+FPFH features in a
PatchCore memory bank.

``BTF`` is the anomalib model; ``BTFModel`` the plain-PyTorch feature extraction and scoring.
The steps every memory-bank model shares are :class:`anomalib_3d.models.FeatureBankModule`.
See ``plugins/btf/README.md`` for the paper, switches and measured results.
"""

from .lightning_model import BTF
from .torch_model import BTFModel, BTFPrediction

__all__ = ["BTF", "BTFModel", "BTFPrediction"]
