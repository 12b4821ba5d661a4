"""Zero-shot protocols: fit on some categories/datasets, test on others.

PointAD fits on an *auxiliary* annotated set — e.g. one MVTec 3D-AD category's **test** split,
which contains anomalies — and is tested on every other category (one-vs-rest) or on another
dataset (cross-dataset). 3DzAL fits on the target category's normal **train** split plus
task-irrelevant categories that exclude the test category. Both are a list of *fit sources* and
a list of *test sources*; this datamodule takes exactly that, so a YAML config expresses each
protocol (see ``configs/experiments/``).

A sample file may never be in both the fit and the test data (checked): that is the zero-shot
guarantee.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from anomalib_3d.data.datamodules.base import PointCloudDataModule, as_category_list
from anomalib_3d.data.datasets import PointCloudDataset, SCANNERS


@dataclass
class DataSource:
    """One slice of one dataset.

    Attributes:
        dataset: ``real3d_ad`` | ``anomaly_shapenet`` | ``mvtec3d`` | ``eyecandies`` | ``synthetic3d``.
        root: dataset root (for ``synthetic3d``: the cache root; the data is generated there).
        categories: categories to take.
        split: ``train``, ``test`` or ``all`` (both). For Eyecandies ``test`` is ``test_public``;
            ``val`` and ``test_private`` (no ground truth) are never taken.
        exclude: categories to drop from ``categories`` (e.g. the test category in 3DzAL).
        options: ``synthetic3d``: keyword arguments of :class:`Synthetic3D` (layout, sizes...);
            ``eyecandies``: keyword arguments of
            :func:`~anomalib_3d.data.datamodules.eyecandies.scan_eyecandies` (``image_index``,
            ``frame``, ``focal_length``, ``use_normals``) and ``background_threshold``.
    """

    dataset: str
    root: str
    categories: list[str]
    split: str = "test"
    exclude: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)

    def samples(self) -> pd.DataFrame:
        categories = [c for c in as_category_list(self.categories) if c not in set(self.exclude)]
        if not categories:
            msg = f"source {self.dataset}:{self.categories} has no category left after exclude={self.exclude}."
            raise ValueError(msg)
        if self.split not in {"train", "test", "all"}:
            msg = f"split must be 'train', 'test' or 'all', got {self.split!r}."
            raise ValueError(msg)
        if self.dataset == "synthetic3d":
            from anomalib_3d.data.datamodules.synthetic import Synthetic3D

            frame = Synthetic3D(root=self.root, category=categories, **self.options).scan()
        elif self.dataset == "eyecandies":
            from anomalib_3d.data.datamodules.eyecandies import BACKGROUND_THRESHOLD, scan_eyecandies

            options = dict(self.options)
            threshold = float(options.pop("background_threshold", BACKGROUND_THRESHOLD))
            frame = pd.concat(
                [scan_eyecandies(Path(self.root), c, splits=("train", "test_public"), **options) for c in categories],
                ignore_index=True,
            )
            # per row: mixed with MVTec rows (5 mm), Eyecandies keeps its own plane threshold
            frame["background_threshold"] = threshold
        elif self.dataset in SCANNERS:
            frame = pd.concat([SCANNERS[self.dataset](Path(self.root), c) for c in categories], ignore_index=True)
        else:
            msg = f"unknown dataset {self.dataset!r}; choose from {sorted([*SCANNERS, 'eyecandies', 'synthetic3d'])}."
            raise ValueError(msg)
        if self.split != "all":
            frame = frame[frame.split == self.split]
        # validation folders and unlabelled (predict-only) samples are neither fitting nor test data
        frame = frame[frame.split.isin(["train", "test"])].copy()
        frame["source"] = self.dataset
        return frame.reset_index(drop=True)


class ZeroShot3D(PointCloudDataModule):
    """Fit on ``fit_sources`` (labels kept: anomalies in them are training signal), test on
    ``test_sources``; optionally draw material from ``task_irrelevant_sources`` (3DzAL's
    pseudo-anomalies), which a model reads through :meth:`task_irrelevant_dataset`.

    A test category may appear in neither the fitting nor the task-irrelevant sources, by file and
    by category: that is the zero-shot guarantee.

    Args:
        fit_sources: the auxiliary / fitting data.
        test_sources: the target data.
        task_irrelevant_sources: other categories whose samples a model may use as raw material
            (never as normal data of the target).
        remove_background: organized sources: drop the support plane.
        grid_size: organized sources: common (H, W) after nearest resizing.
        **kwargs: batch sizes, workers, split modes (see :class:`PointCloudDataModule`).
    """

    def __init__(
        self,
        fit_sources: Sequence[DataSource],
        test_sources: Sequence[DataSource],
        task_irrelevant_sources: Sequence[DataSource] = (),
        remove_background: bool = True,
        grid_size: tuple[int, int] | None = (224, 224),
        **kwargs,
    ) -> None:
        self.fit_sources = [s if isinstance(s, DataSource) else DataSource(**s) for s in fit_sources]
        self.test_sources = [s if isinstance(s, DataSource) else DataSource(**s) for s in test_sources]
        self.task_irrelevant_sources = [
            s if isinstance(s, DataSource) else DataSource(**s) for s in task_irrelevant_sources
        ]
        if not self.fit_sources or not self.test_sources:
            msg = "ZeroShot3D needs at least one fit source and one test source."
            raise ValueError(msg)
        test_categories = [c for s in self.test_sources for c in s.categories if c not in s.exclude]
        root = self.test_sources[0].root
        super().__init__(root=root, category=test_categories, **kwargs)
        self.remove_background = remove_background
        self.grid_size = grid_size

    def test_categories(self) -> set[str]:
        """Categories of the test sources (after their ``exclude``)."""
        return {c for s in self.test_sources for c in s.categories if c not in s.exclude}

    def _check_categories(self, sources: Sequence[DataSource], role: str) -> None:
        shared = sorted({c for s in sources for c in s.categories if c not in s.exclude} & self.test_categories())
        if shared:
            msg = (f"the {role} sources contain the test categories {shared}: not zero-shot. "
                   f"Add them to the {role} sources' exclude list.")
            raise ValueError(msg)

    def task_irrelevant_samples(self) -> pd.DataFrame:
        """The samples table of the task-irrelevant sources (never overlapping the test data)."""
        if not self.task_irrelevant_sources:
            return pd.DataFrame()
        self._check_categories(self.task_irrelevant_sources, "task-irrelevant")
        frame = pd.concat([s.samples() for s in self.task_irrelevant_sources], ignore_index=True)
        test = pd.concat([s.samples() for s in self.test_sources], ignore_index=True)
        leaked = sorted(set(frame.image_path) & set(test.image_path))
        if leaked:
            msg = f"{len(leaked)} task-irrelevant samples are test samples (e.g. {leaked[0]}): not zero-shot."
            raise ValueError(msg)
        return frame

    def task_irrelevant_dataset(self, grid_size: tuple[int, int] | None = None) -> PointCloudDataset:
        """The task-irrelevant samples as a dataset (background removed, grids resized like the fit data)."""
        return self._dataset(self.task_irrelevant_samples(), None, "task_irrelevant", grid_size or self.grid_size)

    def scan(self) -> pd.DataFrame:
        if self.task_irrelevant_sources:
            # 3DzAL's protocol: the fitting category must not be a test category either.
            self._check_categories(self.fit_sources, "fit")
            self._check_categories(self.task_irrelevant_sources, "task-irrelevant")
        fit = pd.concat([s.samples() for s in self.fit_sources], ignore_index=True)
        test = pd.concat([s.samples() for s in self.test_sources], ignore_index=True)
        leaked = sorted(set(fit.image_path) & set(test.image_path))
        if leaked:
            msg = (f"{len(leaked)} samples are both fitting and test data (e.g. {leaked[0]}): not zero-shot. "
                   "Use another split or exclude the test categories from the fit sources.")
            raise ValueError(msg)
        fit = fit.assign(split="train")
        test = test.assign(split="test")
        return pd.concat([fit, test], ignore_index=True)

    def check_data(self, validate: str | None = None) -> list:
        """Scan and pre-flight check; Eyecandies rows get their own header check."""
        from anomalib_3d.data.datamodules.eyecandies import check_datamodule_data

        return check_datamodule_data(self, validate)

    def make_dataset(self, samples: pd.DataFrame, split: str) -> PointCloudDataset:
        return self._dataset(samples, split, self.name, self.grid_size)

    def _dataset(
        self, samples: pd.DataFrame, split: str | None, name: str, grid_size: tuple[int, int] | None
    ) -> PointCloudDataset:
        from anomalib_3d.data.datamodules.eyecandies import EyecandiesDataset

        # reads every kind of row (Eyecandies rows included); collates to a PointCloudBatch
        # subclass that also carries Eyecandies' per-type masks when all clouds have them
        return EyecandiesDataset(
            samples,
            split,
            remove_background=self.remove_background,
            grid_size=grid_size,
            name=name,
            columns=getattr(self, "columns", None),
        )
