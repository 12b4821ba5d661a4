"""3D datamodules (anomalib ``AnomalibDataModule`` subclasses).

Imported lazily: ``from anomalib_3d.data.datamodules import Real3DAD`` loads only what is asked.
"""

from __future__ import annotations

from anomalib_3d._lazy import exported_names, lazy_exports

_EXPORTS = {
    ".base": ("PointCloudDataModule",),
    ".real3d_ad": ("Real3DAD",),
    ".anomaly_shapenet": ("AnomalyShapeNet",),
    ".mvtec3d": ("MVTec3DPointCloud",),
    ".synthetic": ("Synthetic3D",),
    ".zero_shot": ("ZeroShot3D", "DataSource"),
    ".eyecandies": ("Eyecandies",),
    ".multiview_scenes": ("MultiViewScenes",),
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = exported_names(_EXPORTS)
