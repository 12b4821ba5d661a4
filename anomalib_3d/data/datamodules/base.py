"""Shared base of the point-cloud datamodules: scan a layout, build train/test datasets, and
check every file before training (the pre-flight check of :mod:`anomalib_3d.data.validation`)."""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from anomalib.data.datamodules.base.image import AnomalibDataModule
from anomalib.data.utils import TestSplitMode, ValSplitMode

from anomalib_3d.data.datasets import PointCloudDataset, check_category_name
from anomalib_3d.errors import PointCloudError, UnknownCategoryError
from anomalib_3d.data.validation import check_mode, check_samples, collect_problems, raise_if_problems

logger = logging.getLogger(__name__)


def as_category_list(category: str | Sequence[str]) -> list[str]:
    """``"a"`` → ``["a"]``; lists are kept (order kept, duplicates refused).

    Raises:
        UnknownCategoryError: no category, an empty / ``..`` / path-like name, or a duplicate.
    """
    categories = [category] if isinstance(category, str) else list(category)
    if not categories:
        raise UnknownCategoryError(
            "category must name at least one category (got an empty list).",
            fix="pass a category name, e.g. category='duck', or a non-empty list of names.",
        )
    for name in categories:
        check_category_name(name)
    if len(set(categories)) != len(categories):
        raise UnknownCategoryError(
            f"category lists a category twice: {categories}.", fix="list each category once."
        )
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
        validate: pre-flight check at ``setup()``: ``"header"`` (default; every file's header,
            seconds), ``"full"`` (reads every sample) or ``"off"``. All problems are reported at
            once in one :class:`~anomalib_3d.data.errors.DatasetValidationError`.
        columns: text/``.npy`` clouds: column layout passed to
            :func:`~anomalib_3d.data.io.read_point_cloud` (``None`` infers it).
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
        validate: str = "header",
        columns: str | None = None,
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
        self.validate = check_mode(validate)
        self.columns = columns

    @abstractmethod
    def scan(self) -> pd.DataFrame:
        """The samples table of every selected category (see :mod:`anomalib_3d.data.datasets`)."""

    def make_dataset(self, samples: pd.DataFrame, split: str) -> PointCloudDataset:
        """Dataset of one split; subclasses pass their reading options."""
        return PointCloudDataset(samples, split, name=self.name, columns=self.columns)

    def describe(self) -> str:
        """What is being checked, for messages (``Real3DAD 'duck' at /data/real3d``)."""
        return f"{type(self).__name__} {self.categories} at {self.root}"

    def check_data(self, validate: str | None = None) -> list[PointCloudError]:
        """Scan the layout and run the pre-flight check; return every problem found (no raise).

        Args:
            validate: ``"header"`` | ``"full"`` | ``"off"``; default this datamodule's ``validate``.

        Raises:
            PointCloudError: only for problems that stop the scan itself (missing root or
                category folder).
        """
        mode = check_mode(validate or self.validate)
        with collect_problems() as problems:
            samples = self.scan()
        self.samples = samples
        self.train_data = self.make_dataset(samples, "train")
        self.test_data = self.make_dataset(samples, "test")
        start = time.perf_counter()
        # One table for both splits, so dataset-wide checks (mixed colours) see every file.
        datasets = (self.train_data, self.test_data)
        table = pd.concat([d.samples for d in datasets], ignore_index=True)
        offsets = [0, len(self.train_data)]

        def read_item(index: int) -> object:
            split = int(index >= offsets[1])
            return datasets[split][index - offsets[split]]

        problems.extend(check_samples(
            table, mode, read_item=read_item, check_row=getattr(self.test_data, "check_row_header", None),
        ))
        if mode != "off":
            logger.info("pre-flight check (%s) of %d samples: %d problem(s) in %.2f s", mode, len(samples),
                        len(problems), time.perf_counter() - start)
        return problems

    def _setup(self, _stage: str | None = None) -> None:
        problems = self.check_data()
        raise_if_problems(problems, self.describe())
