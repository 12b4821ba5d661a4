"""Anomaly-ShapeNet datamodule."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from anomalib_3d.data.datamodules.base import PointCloudDataModule
from anomalib_3d.data.datasets import scan_anomaly_shapenet


class AnomalyShapeNet(PointCloudDataModule):
    """Anomaly-ShapeNet (Li et al., the IMRNet paper): 40 (+10) ShapeNet classes, six defect types.

    Layout of the v2 release (``Anomaly-ShapeNet-v2/dataset/pcd``):
    ``<root>/<cat>/train/<cat>_template<k>.pcd``, ``<root>/<cat>/test/<cat>_<defect><k>.pcd``
    (``positive`` = good), ``<root>/<cat>/GT/<cat>_<defect><k>.txt`` (``x y z label``).

    Args:
        root: the ``dataset/pcd`` folder of the release.
        category: e.g. ``ashtray0`` or a list.
        **kwargs: see :class:`PointCloudDataModule`.
    """

    def __init__(self, root: str | Path = "./datasets/Anomaly-ShapeNet-v2/dataset/pcd", category: str | Sequence[str] = "ashtray0", **kwargs) -> None:
        super().__init__(root=root, category=category, **kwargs)

    def scan(self) -> pd.DataFrame:
        return pd.concat([scan_anomaly_shapenet(self.root, c) for c in self.categories], ignore_index=True)
