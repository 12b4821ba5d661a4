"""anomalib-3d's data layer: datamodules, point-cloud dataclasses, readers and named errors.

``from anomalib_3d.data import Real3DAD, PointCloudBatch`` works as ``from anomalib.data import
MVTec3D`` does in anomalib, and stays lazy: a name's module is imported on first access. Every
datamodule registered under the ``anomalib_3d.datamodules`` entry-point group is importable from
here, so a new datamodule needs no edit of this file.
"""

from __future__ import annotations

from anomalib_3d._lazy import lazy_exports

_ENTRY_POINT_GROUP = "anomalib_3d.datamodules"
_CORE = {
    "anomalib_3d.data.dataclasses": ("PointCloudItem", "PointCloudBatch"),
    "anomalib_3d.data.datamodules.base": ("PointCloudDataModule",),
    "anomalib_3d.data.datamodules.zero_shot": ("DataSource",),
    "anomalib_3d.data.predict": ("PointCloudPredictDataset",),
    "anomalib_3d.data.errors": ("PointCloudError", "MissingWeightsError"),
}


__getattr__, __dir__ = lazy_exports(__name__, _CORE, _ENTRY_POINT_GROUP)
