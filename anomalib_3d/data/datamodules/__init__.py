"""3D datamodules (anomalib ``AnomalibDataModule`` subclasses).

Imported lazily: ``from anomalib_3d.data.datamodules import Real3DAD`` loads only what is asked.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "PointCloudDataModule": "base",
    "Real3DAD": "real3d_ad",
    "AnomalyShapeNet": "anomaly_shapenet",
    "MVTec3DPointCloud": "mvtec3d",
    "Synthetic3D": "synthetic",
    "ZeroShot3D": "zero_shot",
    "Eyecandies": "eyecandies",
    "MultiViewScenes": "multiview_scenes",
    "DataSource": "zero_shot",
}


def __getattr__(name: str) -> Any:  # noqa: ANN401
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = list(_WHERE)
