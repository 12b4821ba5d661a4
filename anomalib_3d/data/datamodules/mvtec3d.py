"""MVTec 3D-AD as point clouds (organized xyz + RGB + GT), several categories at once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from anomalib_3d.data.datamodules.base import PointCloudDataModule
from anomalib_3d.data.datasets import PointCloudDataset, scan_mvtec3d

MVTEC3D_CATEGORIES = (
    "bagel", "cable_gland", "carrot", "cookie", "dowel", "foam", "peach", "potato", "rope", "tire",
)


class MVTec3DPointCloud(PointCloudDataModule):
    """MVTec 3D-AD read as point clouds.

    anomalib's own ``MVTec3D`` yields ``DepthBatch`` (RGB + organized xyz); every anomalib-3d
    model accepts that too. This datamodule yields :class:`PointCloudBatch` instead: only valid
    pixels become points, the support plane is removed as in BTF (switchable), RGB is kept as
    per-point colours and as the image, and ``grid_index`` maps scores back to pixels exactly.

    Layout: ``<root>/<cat>/{train,validation}/good/{rgb,xyz}/NNN.{png,tiff}``,
    ``<root>/<cat>/test/<defect>/{rgb,xyz,gt}/NNN.{png,tiff,png}``.

    Args:
        root: the extracted ``mvtec_3d_anomaly_detection`` folder.
        category: one of ``MVTEC3D_CATEGORIES`` or a list.
        remove_background: drop the support plane (BTF's RANSAC plane removal).
        background_threshold: distance to the plane (same unit as xyz; metres for MVTec) under
            which a point is background.
        keep_largest_cluster: with ``remove_background``, also drop every fragment outside the
            largest DBSCAN cluster (eps 6 mm, 30 points), at the native resolution before any
            resize: the PointAD authors' cleaning (off: BTF's plane removal only).
        grid_size: nearest-resize every grid to (H, W) (MVTec images vary in size; a batch needs
            one size). ``None`` keeps native size (then use batch size 1 or equal-size data).
        **kwargs: see :class:`PointCloudDataModule`.
    """

    def __init__(
        self,
        root: str | Path = "./datasets/MVTec3D",
        category: str | Sequence[str] = "bagel",
        remove_background: bool = True,
        background_threshold: float = 0.005,
        grid_size: tuple[int, int] | None = (224, 224),
        keep_largest_cluster: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(root=root, category=category, **kwargs)
        self.remove_background = remove_background
        self.background_threshold = background_threshold
        self.keep_largest_cluster = keep_largest_cluster
        self.grid_size = grid_size

    def scan(self) -> pd.DataFrame:
        return pd.concat([scan_mvtec3d(self.root, c) for c in self.categories], ignore_index=True)

    def make_dataset(self, samples: pd.DataFrame, split: str) -> PointCloudDataset:
        return PointCloudDataset(
            samples,
            split,
            remove_background=self.remove_background,
            background_threshold=self.background_threshold,
            keep_largest_cluster=self.keep_largest_cluster,
            grid_size=self.grid_size,
            name=self.name,
        )
