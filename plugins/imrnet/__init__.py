"""IMRNet (Li et al., CVPR 2024): iterative mask reconstruction for 3D point-cloud anomaly detection.

``IMRNet`` is the anomalib model; ``IMRNetModel`` the plain-PyTorch network and scoring.
See ``plugins/imrnet/README.md`` for the paper readings, switches and measured results.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:  # noqa: ANN401
    # Importing anomalib.models (below) fires anomalib-3d's plugin hook, which asks this very
    # package for ``IMRNet`` while it is still importing; answering lazily lets it register.
    if name in {"IMRNet", "SMALL_PRESET"}:
        from . import lightning_model

        return getattr(lightning_model, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


import anomalib.models  # noqa: E402, F401

from .lightning_model import SMALL_PRESET, IMRNet  # noqa: E402
from .torch_model import IMRNetModel, IMRNetPrediction  # noqa: E402

__all__ = ["SMALL_PRESET", "IMRNet", "IMRNetModel", "IMRNetPrediction"]
