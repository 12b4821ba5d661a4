"""Real3D-AD datamodule."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from anomalib_3d.data.datamodules.base import PointCloudDataModule
from anomalib_3d.data.datasets import scan_real3d_ad

REAL3D_AD_CATEGORIES = (
    "airplane", "car", "candybar", "chicken", "diamond", "duck",
    "fish", "gemstone", "seahorse", "shell", "starfish", "toffees",
)


class Real3DAD(PointCloudDataModule):
    """Real3D-AD (Liu et al., NeurIPS 2023): high-resolution scans, 4 training templates a class.

    Layout: ``<root>/<cat>/train/*.pcd``, ``<root>/<cat>/test/*.pcd``, ``<root>/<cat>/gt/<stem>.txt``
    (``x y z label`` per line); a test cloud without a GT file is good.

    Args:
        root: folder holding the category folders (e.g. ``./datasets/Real3D-AD-PCD``).
        category: one of ``REAL3D_AD_CATEGORIES`` or a list of them.
        **kwargs: see :class:`PointCloudDataModule`.

    Example:
        ``anomalib train --model IMRNet --data Real3DAD --data.root ./datasets/Real3D-AD-PCD --data.category airplane``
    """

    def __init__(self, root: str | Path = "./datasets/Real3D-AD-PCD", category: str | Sequence[str] = "airplane", **kwargs) -> None:
        super().__init__(root=root, category=category, **kwargs)

    def scan(self) -> pd.DataFrame:
        return pd.concat([scan_real3d_ad(self.root, c) for c in self.categories], ignore_index=True)
