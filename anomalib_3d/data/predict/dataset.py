"""The scans of a predict path as :class:`~anomalib_3d.data.PointCloudItem` objects, read exactly as
the model's test data was read, with every bad file set aside under its named error.

Why an iterable dataset: a bad scan must not stop the others, and Lightning's predict loop hands
every batch to the model. The dataset therefore yields only the scans that read (and that the model
can take: organized grids for models that need them, clouds within the model's point budget) and
keeps ``(file, error)`` for the rest, which :class:`~anomalib_3d.visualization.PredictionWriter`
writes to ``predictions.csv`` next to the scores. Headers are checked when the dataset is built, so
the progress bar counts the scans that will be read.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from anomalib_3d.data.dataclasses import PointCloudBatch, PointCloudItem
from anomalib_3d.data.predict.inputs import PredictInput, PredictInputs, list_predict_inputs
from anomalib_3d.data.predict.options import DEFAULT_PREPROCESSING, READ_OPTIONS
from anomalib_3d.errors import (
    CorruptFileError,
    DatasetRootNotFoundError,
    NoScanScoredError,
    PointCloudError,
    UnsupportedFormatError,
)

logger = logging.getLogger(__name__)


def _sample_row(scan: PredictInput, category: str) -> dict[str, Any]:
    """One samples-table row (:mod:`anomalib_3d.data.datasets`) of a scan without ground truth."""
    return {
        "image_path": str(scan.path),
        "split": "predict",
        "label_index": 0,
        "category": category,
        "defect_type": "unknown",
        "kind": scan.kind,
        "mask_path": "",
        "rgb_path": "" if scan.rgb_path is None else str(scan.rgb_path),
    }


def _as_read_error(error: OSError, path: Path) -> CorruptFileError:
    return CorruptFileError(f"cannot be read ({error}).", path, "check the file's permissions and copy it again.")


class PointCloudPredictDataset(IterableDataset):
    """The scans of a file, a folder (recursive) or a glob, for ``anomalib predict``.

    Formats: ``.pcd .ply .xyz .txt .pts .npy`` clouds and organized xyz ``.tiff`` scans with the RGB
    ``.png`` of the same stem (or MVTec 3D-AD's ``rgb/`` folder); see
    :func:`~anomalib_3d.data.predict.list_predict_inputs`.

    The reading options (support-plane removal, grid size, text columns, category) come from the
    model: its pre-processor calls :meth:`configure` with what the checkpoint recorded when the
    predict run starts. ``preprocessing`` overrides single options (e.g. for a checkpoint that
    records none); an override that differs from the record is logged, since scores then differ
    from ``anomalib test``.

    Items carry no ground truth (``gt_label``, ``gt_mask`` are ``None``). Iterate in the main
    process (``num_workers=0``, as anomalib's ``Engine.predict`` does), so that every failure
    reaches :attr:`failures`.

    Args:
        path: a scan, a folder of scans or a glob pattern.
        preprocessing: overrides of the recorded options; keys of
            :data:`~anomalib_3d.data.predict.DEFAULT_PREPROCESSING`.

    Raises:
        DatasetRootNotFoundError, EmptySplitError, UnsupportedFormatError: see
            :func:`~anomalib_3d.data.predict.list_predict_inputs`.
        NoScanScoredError: no scan passes the header check (each file's error is listed).
        ValueError: an unknown ``preprocessing`` key.

    Example:
        ``anomalib predict --model BTF --ckpt_path model.ckpt --data anomalib_3d.data.PointCloudPredictDataset
        --data.path scans/``
    """

    def __init__(self, path: str | Path, preprocessing: dict[str, Any] | None = None) -> None:
        super().__init__()
        overrides = dict(preprocessing or {})
        unknown = sorted(set(overrides) - set(DEFAULT_PREPROCESSING))
        if unknown:
            msg = f"unknown preprocessing option(s) {unknown}; choose from {sorted(DEFAULT_PREPROCESSING)}."
            raise ValueError(msg)
        self.path = str(path)
        self.overrides = overrides
        inputs = list_predict_inputs(path)
        self.root = inputs.root
        self.rejected: list[tuple[Path, PointCloudError]] = list(inputs.rejected)
        self.scans: list[PredictInput] = []
        for scan in inputs.scans:
            problem = self._header_problem(scan)
            if problem is None:
                self.scans.append(scan)
            else:
                self.rejected.append((scan.path, problem))
        self.read_failures: list[tuple[Path, PointCloudError]] = []
        self.preprocessing: dict[str, Any] | None = None
        self._requires_organized = False
        self._model: object | None = None
        self._log_listing(inputs)
        # Lightning warns that __len__ can be wrong with several loader workers; this dataset refuses them.
        warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")
        if not self.scans:
            raise NoScanScoredError(
                [error for _, error in self.rejected],
                f"the scans at {self.path}",
                fix="fix the files listed (each line says how); nothing was predicted.",
            )

    # -- listing ------------------------------------------------------------------------------
    @staticmethod
    def _header_problem(scan: PredictInput) -> PointCloudError | None:
        import pandas as pd

        from anomalib_3d.data.validation import check_samples

        table = pd.DataFrame([_sample_row(scan, "")])
        problems = check_samples(table, "header")
        return problems[0] if problems else None

    def _log_listing(self, inputs: PredictInputs) -> None:
        logger.info("predict: %d scans under %s (%d organized).", len(self.scans), self.root,
                    sum(scan.kind == "organized" for scan in self.scans))
        for path, error in self.rejected:
            logger.warning("predict: skipping %s: %s: %s", path, type(error).__name__, error)
        if inputs.companions:
            logger.info("predict: %d RGB images / ground-truth masks belong to organized scans (not predicted).",
                        len(inputs.companions))
        if inputs.hidden:
            logger.info("predict: %d hidden files passed over (e.g. %s).", len(inputs.hidden), inputs.hidden[0])

    @property
    def failures(self) -> list[tuple[Path, PointCloudError]]:
        """``(file, error)`` of every file that was not scored: not a scan, bad header, bad body, or
        not something the model can take."""
        return [*self.rejected, *self.read_failures]

    def relative_name(self, path: str | Path) -> Path:
        """``path`` relative to the predict root (output files are named after it)."""
        path = Path(path)
        return path.relative_to(self.root) if path.is_relative_to(self.root) else Path(path.name)

    # -- configuration ------------------------------------------------------------------------
    def configure(self, record: dict[str, Any] | None, model: object | None = None) -> None:
        """Take the reading options a checkpoint recorded (``None``: it records none) and the model.

        Args:
            record: :func:`~anomalib_3d.data.predict.describe_preprocessing` output or ``None``.
            model: the model that will score the scans: a model that needs organized grids
                (``requires_organized``) gets unorganized clouds refused, and clouds beyond its
                point budget (:func:`~anomalib_3d.runtime.memory.cloud_budget`) are refused by name.
        """
        name = type(model).__name__ if model is not None else "the model"
        if record is None:
            logger.warning(
                "predict: the checkpoint of %s records no input preprocessing (written before anomalib-3d recorded "
                "it); scans are read with the defaults %s%s.", name, DEFAULT_PREPROCESSING,
                f" and the overrides {self.overrides}" if self.overrides else "",
            )
            options = dict(DEFAULT_PREPROCESSING)
        else:
            options = {key: record.get(key, DEFAULT_PREPROCESSING[key]) for key in DEFAULT_PREPROCESSING}
            logger.info("predict: reading scans as %s's %s test data was read: %s.", name,
                        record.get("datamodule", "fitted"), {k: options[k] for k in READ_OPTIONS})
            if record.get("depth_batches"):
                logger.info("predict: %s was fitted on anomalib depth batches; scans are read as organized point "
                            "clouds (pixels without a point dropped), as the depth adapter does.", name)
            changed = {k: v for k, v in self.overrides.items() if options.get(k) != v}
            if changed:
                logger.warning("predict: overriding the checkpoint's %s with %s: scores will differ from `anomalib "
                               "test`.", {k: options.get(k) for k in changed}, changed)
        options.update(self.overrides)
        self.preprocessing = options
        self._requires_organized = bool(getattr(model, "requires_organized", False))
        self._model = model

    # -- reading ------------------------------------------------------------------------------
    def _category(self) -> str:
        categories = (self.preprocessing or {}).get("categories") or []
        # One fitted category names the scans (PointAD's prompts use it); several cannot be told apart.
        return str(categories[0]) if len(categories) == 1 else ""

    def _reader(self) -> tuple[Any, dict[str, int]]:  # noqa: ANN401
        """The test split's own dataset class over the scans (so predict and test see the same points),
        and the row of each scan (it sorts its table)."""
        import pandas as pd

        from anomalib_3d.data.datasets import PointCloudDataset

        if self.preprocessing is None:  # iterated without a predict run: no checkpoint to take options from
            self.preprocessing = {**DEFAULT_PREPROCESSING, **self.overrides}
            logger.info("predict: no model configured this dataset; reading scans with %s.", self.preprocessing)
        options = self.preprocessing
        grid = options["grid_size"]
        existing = [scan for scan in self.scans if scan.path.is_file()]
        if not existing:
            return None, {}
        table = pd.DataFrame([_sample_row(scan, self._category()) for scan in existing])
        reader = PointCloudDataset(
            table,
            remove_background=bool(options["remove_background"]),
            background_threshold=float(options["background_threshold"]),
            keep_largest_cluster=bool(options["keep_largest_cluster"]),
            grid_size=None if grid is None else (int(grid[0]), int(grid[1])),
            columns=options["columns"],
            name="predict",
        )
        return reader, {path: row for row, path in enumerate(reader.samples.image_path)}

    def _check_for_model(self, item: PointCloudItem, scan: PredictInput) -> None:
        from anomalib_3d.runtime.memory import check_cloud_sizes

        if self._requires_organized and item.grid_index is None:
            model = type(self._model).__name__
            raise UnsupportedFormatError(
                f"is an unorganized cloud; {model} scores organized scans only (xyz grids).",
                scan.path,
                "pass the organized scan (an xyz .tiff as in MVTec 3D-AD), or use a model that takes unorganized "
                "clouds (BTF, PatchCore3D, Reg3DAD, IMRNet, PointAD).",
            )
        if self._model is not None:
            sizes = SimpleNamespace(num_points=torch.tensor([item.num_points]), points=item.points,
                                    point_path=[str(scan.path)])
            check_cloud_sizes(sizes, self._model)

    @staticmethod
    def _without_ground_truth(item: PointCloudItem, category: str) -> PointCloudItem:
        item.gt_label = None
        item.gt_mask = None
        item.pixel_gt_mask = None
        item.mask_path = None
        item.category = category or None
        return item

    def __len__(self) -> int:
        """Scans whose header is readable (the progress bar's total)."""
        return len(self.scans)

    def __iter__(self) -> Iterator[PointCloudItem]:
        if get_worker_info() is not None:
            msg = ("PointCloudPredictDataset reads in the main process (DataLoader num_workers=0), so that every "
                   "failed scan reaches predictions.csv; anomalib's Engine.predict does so.")
            raise RuntimeError(msg)
        reader, rows = self._reader()
        category = self._category()
        self.read_failures = []
        for scan in self.scans:
            if str(scan.path) not in rows:
                self._fail(scan.path, DatasetRootNotFoundError(
                    "was listed for predict but no longer exists.", scan.path, "keep the scans in place until predict ends."
                ))
                continue
            try:
                item = self._without_ground_truth(reader[rows[str(scan.path)]], category)
                self._check_for_model(item, scan)
            except PointCloudError as error:
                self._fail(scan.path, error)
                continue
            except OSError as error:
                self._fail(scan.path, _as_read_error(error, scan.path))
                continue
            yield item

    def _fail(self, path: Path, error: PointCloudError) -> None:
        logger.warning("predict: %s not scored: %s: %s", path, type(error).__name__, error)
        self.read_failures.append((path, error))

    @property
    def collate_fn(self) -> Callable[[list[PointCloudItem]], PointCloudBatch]:
        return PointCloudBatch.collate


__all__ = ["PointCloudPredictDataset"]
