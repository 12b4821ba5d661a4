"""3DzAL's zero-shot protocol on top of :class:`ZeroShot3D`: a third list of sources, the
*task-irrelevant* samples (pseudo-anomaly material), next to the normal fitting data and the test data.

Kept here until ``ZeroShot3D`` grows a ``task_irrelevant_sources`` argument (see the plugin README);
then this class becomes ``ZeroShot3D`` itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from anomalib_3d.data.datamodules.zero_shot import DataSource, ZeroShot3D
from anomalib_3d.data.datasets import PointCloudDataset


class TaskIrrelevantZeroShot3D(ZeroShot3D):
    """Fit on ``fit_sources`` (normal training data of another category), draw pseudo-anomalies from
    ``task_irrelevant_sources``, test on ``test_sources``.

    The test categories may appear in neither the fitting nor the task-irrelevant sources (by file
    *and* by category): that is the zero-shot guarantee of 3DzAL's leave-one-out protocol.

    Args:
        fit_sources, test_sources: as in :class:`ZeroShot3D`.
        task_irrelevant_sources: the task-irrelevant categories (normally their ``train`` split).
        **kwargs: see :class:`ZeroShot3D`.
    """

    def __init__(
        self,
        fit_sources: Sequence[DataSource],
        test_sources: Sequence[DataSource],
        task_irrelevant_sources: Sequence[DataSource] = (),
        **kwargs,
    ) -> None:
        super().__init__(fit_sources=fit_sources, test_sources=test_sources, **kwargs)
        self.task_irrelevant_sources = [s if isinstance(s, DataSource) else DataSource(**s) for s in task_irrelevant_sources]

    def test_categories(self) -> set[str]:
        """Categories of the test sources (after their ``exclude``)."""
        return {c for s in self.test_sources for c in s.categories if c not in s.exclude}

    def _check_categories(self, sources: Sequence[DataSource], role: str) -> None:
        shared = sorted({c for s in sources for c in s.categories if c not in s.exclude} & self.test_categories())
        if shared:
            msg = (f"the {role} sources contain the test categories {shared}: not zero-shot. "
                   f"Add them to the {role} sources' exclude list.")
            raise ValueError(msg)

    def scan(self) -> pd.DataFrame:
        self._check_categories(self.fit_sources, "fit")
        self._check_categories(self.task_irrelevant_sources, "task-irrelevant")
        return super().scan()

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
        """The task-irrelevant samples as a dataset (background removed, grids resized)."""
        return PointCloudDataset(self.task_irrelevant_samples(), None, remove_background=self.remove_background,
                                 grid_size=grid_size or self.grid_size, name="task_irrelevant")


__all__ = ["TaskIrrelevantZeroShot3D"]
