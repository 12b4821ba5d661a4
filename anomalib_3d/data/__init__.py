"""anomalib-3d's data layer: datamodules, point-cloud dataclasses, readers and named errors.

``from anomalib_3d.data import Real3DAD, PointCloudBatch`` works as ``from anomalib.data import
MVTec3D`` does in anomalib, and stays lazy: a name's module is imported on first access. Every
datamodule registered under the ``anomalib_3d.datamodules`` entry-point group is importable from
here, so a new datamodule needs no edit of this file.
"""

from __future__ import annotations

import importlib
from typing import Any

from anomalib_3d._lazy import entry_point_names, load_entry_point

_ENTRY_POINT_GROUP = "anomalib_3d.datamodules"
_CORE = {
    "PointCloudItem": "anomalib_3d.data.dataclasses",
    "PointCloudBatch": "anomalib_3d.data.dataclasses",
    "PointCloudDataModule": "anomalib_3d.data.datamodules.base",
    "DataSource": "anomalib_3d.data.datamodules.zero_shot",
    "PointCloudPredictDataset": "anomalib_3d.data.predict",
    "PointCloudError": "anomalib_3d.data.errors",
    "MissingWeightsError": "anomalib_3d.data.errors",
}


def __getattr__(name: str) -> Any:  # noqa: ANN401
    if name in _CORE:
        return getattr(importlib.import_module(_CORE[name]), name)
    if name in entry_point_names(_ENTRY_POINT_GROUP):
        return load_entry_point(_ENTRY_POINT_GROUP, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted({*globals(), *_CORE, *entry_point_names(_ENTRY_POINT_GROUP)})
