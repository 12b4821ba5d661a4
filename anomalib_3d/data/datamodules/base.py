"""Shared base of the point-cloud datamodules: scan a layout, build train/test datasets."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from anomalib.data.datamodules.base.image import AnomalibDataModule
from anomalib.data.utils import TestSplitMode, ValSplitMode

from anomalib_3d.data.datasets import PointCloudDataset


def as_category_list(category: str | Sequence[str]) -> list[str]:
    """``"a"`` → ``["a"]``; lists are kept (order kept, duplicates refused)."""
    categories = [category] if isinstance(category, str) else list(category)
    if not categories:
        msg = "category must name at least one category."
        raise ValueError(msg)
    if len(set(categories)) != len(categories):
        msg = f"category lists a category twice: {categories}."
        raise ValueError(msg)
    return categories


class PointCloudDataModule(AnomalibDataModule):
    """Base of the 3D datamodules (one or several categories at once).

    Args:
        root: dataset root (the folder holding the category folders).
        category: one category or a list (multi-category training / per-category testing).
        train_batch_size, eval_batch_size, num_workers: as in anomalib.
        val_split_mode: anomalib's validation split; default ``same_as_test`` (the public 3D
            datasets have no anomalous validation data; thresholds come from the test set as in
            the papers).
        val_split_ratio, test_split_mode, test_split_ratio, seed: as in anomalib.
    """

    def __init__(
        self,
        root: str | Path,
        category: str | Sequence[str],
        train_batch_size: int = 4,
        eval_batch_size: int = 4,
        num_workers: int = 0,
        val_split_mode: ValSplitMode | str = ValSplitMode.SAME_AS_TEST,
        val_split_ratio: float = 0.5,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            val_split_mode=val_split_mode,
            val_split_ratio=val_split_ratio,
            test_split_mode=test_split_mode,
            test_split_ratio=test_split_ratio,
            seed=seed,
        )
        self.root = Path(root)
        self.categories = as_category_list(category)
        self.category = "+".join(self.categories)

    @abstractmethod
    def scan(self) -> pd.DataFrame:
        """The samples table of every selected category (see :mod:`anomalib_3d.data.datasets`)."""

    def make_dataset(self, samples: pd.DataFrame, split: str) -> PointCloudDataset:
        """Dataset of one split; subclasses pass their reading options."""
        return PointCloudDataset(samples, split, name=self.name)

    def _setup(self, _stage: str | None = None) -> None:
        samples = self.scan()
        self.samples = samples
        self.train_data = self.make_dataset(samples, "train")
        self.test_data = self.make_dataset(samples, "test")
