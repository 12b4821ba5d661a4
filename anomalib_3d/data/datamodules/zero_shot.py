"""Zero-shot protocols: fit on some categories/datasets, test on others.

PointAD fits on an *auxiliary* annotated set — e.g. one MVTec 3D-AD category's **test** split,
which contains anomalies — and is tested on every other category (one-vs-rest) or on another
dataset (cross-dataset). 3DzAL fits on the target category's normal **train** split plus
task-irrelevant categories that exclude the test category. Both are a list of *fit sources* and
a list of *test sources*; this datamodule takes exactly that, so a YAML config expresses each
protocol (see ``configs/experiments/``).

A source is a :class:`DataSource` (one slice of one dataset), given as a dataclass, a dict or a
namespace (:func:`source_dict` turns each into a checkpoint-safe dict) and read by our datamodules'
scanners (:meth:`DataSource.samples`). :func:`check_zero_shot` is **the** leak check of the
project: no fitting sample may be a target sample (by file) nor, where the protocol asks for it,
hold a target category. :class:`ZeroShot3D`, PointAD's auxiliary set and 3DzAL's task-irrelevant
samples (:mod:`anomalib_3d.data.zero_shot`) all pass it: that is the zero-shot guarantee.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from anomalib_3d.data.datamodules.base import PointCloudDataModule, as_category_list
from anomalib_3d.data.datasets import SCANNERS, MultiSourceDataset

#: Fields of a :class:`DataSource`, in order.
SOURCE_KEYS = ("dataset", "root", "categories", "split", "exclude", "options")


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

    def kept_categories(self) -> list[str]:
        """``categories`` without ``exclude``, in order."""
        return [c for c in as_category_list(self.categories) if c not in set(self.exclude)]

    def samples(self) -> pd.DataFrame:
        """The samples table of this slice (a ``source`` column names the dataset)."""
        categories = self.kept_categories()
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


# ----------------------------------------------------------------------------------------------
# any spelling of a source -> checkpoint-safe dicts -> DataSource -> samples
def source_dict(source: object) -> dict[str, Any]:
    """A :class:`DataSource`, dict or namespace as a plain dict with only DataSource's keys.

    Raises:
        TypeError: ``source`` is none of those.
        ValueError: unknown keys, or ``dataset`` / ``root`` / ``categories`` missing.
    """
    if is_dataclass(source) and not isinstance(source, type):
        data = asdict(source)
    elif isinstance(source, dict):
        data = dict(source)
    elif hasattr(source, "__dict__"):
        data = {k: v for k, v in vars(source).items() if not k.startswith("_")}
    else:
        msg = f"a data source must be a DataSource or a dict, got {type(source).__name__}."
        raise TypeError(msg)
    unknown = sorted(set(data) - set(SOURCE_KEYS))
    if unknown:
        msg = f"data source has unknown keys {unknown}; a DataSource takes {list(SOURCE_KEYS)}."
        raise ValueError(msg)
    for key in ("dataset", "root", "categories"):
        if key not in data:
            msg = f"data source {data} lacks '{key}'."
            raise ValueError(msg)
    data["root"] = str(data["root"])
    data["categories"] = [data["categories"]] if isinstance(data["categories"], str) else list(data["categories"])
    return data


def source_dicts(sources: object) -> list[dict[str, Any]] | None:
    """``None`` | one source | a list of sources → ``None`` | plain dicts (safe as hyper-parameters)."""
    if sources is None:
        return None
    if isinstance(sources, dict) or (is_dataclass(sources) and not isinstance(sources, type)):
        return [source_dict(sources)]
    return [source_dict(s) for s in sources]


def as_sources(sources: Iterable[object]) -> list[DataSource]:
    """Every source as a :class:`DataSource`."""
    return [s if isinstance(s, DataSource) else DataSource(**source_dict(s)) for s in sources]


def read_sources(sources: Iterable[object]) -> pd.DataFrame:
    """The samples tables of ``sources``, concatenated (empty when there is none)."""
    frames = [source.samples() for source in as_sources(sources)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ----------------------------------------------------------------------------------------------
# the one leak check
def _sample_files(frame: pd.DataFrame) -> set[str]:
    """Resolved paths of a samples table's cloud / image files (``image_path``, ``depth_path``)."""
    files: set[str] = set()
    for column in ("image_path", "depth_path"):
        if column in frame:
            files.update(str(Path(p).resolve()) for p in frame[column] if isinstance(p, str) and p)
    return files


def check_zero_shot(
    fitting: pd.DataFrame | Sequence[DataSource],
    target: pd.DataFrame | None = None,
    *,
    target_categories: Iterable[str] = (),
    role: str = "fitting",
) -> None:
    """Refuse fitting data that overlaps the target: the zero-shot guarantee.

    Args:
        fitting: the fitting samples table, or (before reading any file) its sources, which are
            then checked by category only.
        target: the target's samples table: no fitting sample may be one of its files (paths
            compared after resolving; ``image_path`` and ``depth_path`` on both sides, so
            anomalib's depth tables compare with ours).
        target_categories: categories the fitting data may not hold (empty: not checked).
        role: what the fitting data is, for the message (``fitting``, ``auxiliary``, ``task-irrelevant``).

    Raises:
        ValueError: the fitting data holds a target category or a target file ("not zero-shot").
    """
    forbidden = set(target_categories)
    if isinstance(fitting, pd.DataFrame):
        categories = set(fitting.category) if "category" in fitting and len(fitting) else set()
    else:
        categories = {c for source in fitting for c in source.kept_categories()}
    shared = sorted(categories & forbidden)
    if shared:
        msg = (f"the {role} data holds the target categories {shared}: not zero-shot. "
               f"Exclude them from the {role} sources (their exclude list) or choose other categories.")
        raise ValueError(msg)
    if target is None or not isinstance(fitting, pd.DataFrame) or not len(fitting):
        return
    leaked = sorted(_sample_files(fitting) & _sample_files(target))
    if leaked:
        msg = (f"{len(leaked)} {role} samples are also target samples (e.g. {leaked[0]}): not zero-shot. "
               f"Use another split, category or dataset as {role} data.")
        raise ValueError(msg)



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
        keep_largest_cluster: organized sources: after the plane, also drop every fragment outside
            the largest DBSCAN cluster, at the native resolution (the PointAD authors' cleaning).
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
        keep_largest_cluster: bool = False,
        **kwargs,
    ) -> None:
        self.fit_sources = as_sources(fit_sources)
        self.test_sources = as_sources(test_sources)
        self.task_irrelevant_sources = as_sources(task_irrelevant_sources)
        if not self.fit_sources or not self.test_sources:
            msg = "ZeroShot3D needs at least one fit source and one test source."
            raise ValueError(msg)
        test_categories = [c for s in self.test_sources for c in s.categories if c not in s.exclude]
        root = self.test_sources[0].root
        super().__init__(root=root, category=test_categories, **kwargs)
        self.remove_background = remove_background
        self.keep_largest_cluster = keep_largest_cluster
        self.grid_size = grid_size

    def test_categories(self) -> set[str]:
        """Categories of the test sources (after their ``exclude``)."""
        return {c for s in self.test_sources for c in s.categories if c not in s.exclude}

    def task_irrelevant_samples(self) -> pd.DataFrame:
        """The samples table of the task-irrelevant sources (never overlapping the test data)."""
        if not self.task_irrelevant_sources:
            return pd.DataFrame()
        check_zero_shot(self.task_irrelevant_sources, target_categories=self.test_categories(), role="task-irrelevant")
        frame = read_sources(self.task_irrelevant_sources)
        check_zero_shot(frame, read_sources(self.test_sources), role="task-irrelevant")
        return frame

    def task_irrelevant_dataset(self, grid_size: tuple[int, int] | None = None) -> MultiSourceDataset:
        """The task-irrelevant samples as a dataset (background removed, grids resized like the fit data)."""
        return self._dataset(self.task_irrelevant_samples(), None, "task_irrelevant", grid_size or self.grid_size)

    def scan(self) -> pd.DataFrame:
        if self.task_irrelevant_sources:
            # 3DzAL's protocol: the fitting category must not be a test category either.
            for sources, role in ((self.fit_sources, "fit"), (self.task_irrelevant_sources, "task-irrelevant")):
                check_zero_shot(sources, target_categories=self.test_categories(), role=role)
        fit = read_sources(self.fit_sources)
        test = read_sources(self.test_sources)
        check_zero_shot(fit, test, role="fit")
        fit = fit.assign(split="train")
        test = test.assign(split="test")
        return pd.concat([fit, test], ignore_index=True)

    def make_dataset(self, samples: pd.DataFrame, split: str) -> MultiSourceDataset:
        return self._dataset(samples, split, self.name, self.grid_size)

    def _dataset(
        self, samples: pd.DataFrame, split: str | None, name: str, grid_size: tuple[int, int] | None
    ) -> MultiSourceDataset:
        # reads every kind of row (Eyecandies rows included); collates to a PointCloudBatch
        # subclass that also carries Eyecandies' per-type masks when all clouds have them
        return MultiSourceDataset(
            samples,
            split,
            remove_background=self.remove_background,
            keep_largest_cluster=self.keep_largest_cluster,
            grid_size=grid_size,
            name=name,
            columns=getattr(self, "columns", None),
        )


__all__ = [
    "SOURCE_KEYS",
    "DataSource",
    "ZeroShot3D",
    "as_sources",
    "check_zero_shot",
    "read_sources",
    "source_dict",
    "source_dicts",
]
