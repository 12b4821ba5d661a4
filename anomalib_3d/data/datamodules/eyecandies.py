"""Eyecandies (Bonfiglioli et al., ACCV 2022) datamodule: organized point clouds with RGB.

The sample files and the camera are read by :mod:`anomalib_3d.data.io.eyecandies`, the layout
is scanned and rows are read by :mod:`anomalib_3d.data.eyecandies`, and the pose
direction is checked on downloaded data by :func:`anomalib_3d.data.diagnostics.pose_convention_report`.

The image used as RGB defaults to ``image_4`` (left spotlight): M3DM's
``preprocess_eyecandies.py`` copies ``image_4`` as the RGB of its MVTec-style conversion, and the
multimodal Eyecandies numbers we compare with (M3DM, CPMF, PointAD) come from that conversion.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from torch.utils.data import DataLoader

from anomalib_3d.data.datamodules.base import PointCloudDataModule
from anomalib_3d.data.eyecandies import (
    ANOMALY_TYPES,
    DEFAULT_IMAGE_INDEX,
    EYECANDIES_CATEGORIES,
    EYECANDIES_SPLITS,
    FRAMES,
    EyecandiesBatch,
    EyecandiesItem,
    normalise_category,
    resolve_category,
    scan_eyecandies,
)
from anomalib_3d.data.datasets import EyecandiesDataset, MultiSourceDataset
from anomalib_3d.data.diagnostics import pose_convention_report
from anomalib_3d.data.io.eyecandies import (
    FOCAL_LENGTH,
    decode_normals,
    depth_to_xyz,
    read_depth_info,
    read_depth_png,
    read_metadata_label,
    read_pose,
)
from anomalib_3d.data.validation import check_samples
from anomalib_3d.errors import DatasetRootNotFoundError, PointCloudError, UnknownCategoryError

# metres: the rendered belt is exactly flat and 16-bit depth is micrometre-accurate, while
# MVTec's 5 mm would cut flat candies such as the cookie
BACKGROUND_THRESHOLD = 0.001


def check_samples_with_eyecandies(
    samples: pd.DataFrame,
    mode: str = "header",
    read_item: Callable[[int], object] | None = None,
) -> list[PointCloudError]:
    """:func:`~anomalib_3d.data.validation.check_samples` with the Eyecandies row check
    (:meth:`MultiSourceDataset.check_row_header`); kept for callers of the former name."""
    return check_samples(samples, mode, read_item=read_item, check_row=MultiSourceDataset.check_row_header)


def check_datamodule_data(datamodule: PointCloudDataModule, validate: str | None = None) -> list[PointCloudError]:
    """:meth:`PointCloudDataModule.check_data`, which runs the Eyecandies row check through the
    dataset's ``check_row_header``; kept for callers of the former name."""
    return PointCloudDataModule.check_data(datamodule, validate)


class Eyecandies(PointCloudDataModule):
    """Eyecandies as organized point clouds with RGB, like MVTec 3D-AD.

    Every item has the fields of :class:`MVTec3DPointCloud` items (``grid_shape``,
    ``grid_index``, ``image``, ``colors``, ``pixel_gt_mask``, per-point ``gt_mask``) plus
    ``type_masks`` (bumps / dents / colors / normals), so every 3D model uses it unchanged and
    metrics can be split by anomaly type (the samples table's ``defect_type`` names the types of
    each anomalous sample).

    Splits: fit on ``train``, test on ``test_public``; ``engine.predict`` reads ``predict_split``
    (``test_private`` by default, which has no ground truth).

    Args:
        root: folder holding the category folders (``CandyCane``, ...).
        category: one of :data:`EYECANDIES_CATEGORIES` (case / space / underscore-insensitive) or a list.
        image_index: RGB lighting, 0 … 5 (default 4, the left spotlight used by M3DM's conversion).
        frame: ``world`` (pose applied, camera → world) or ``camera``.
        focal_length: pixels; 711.11 for the released 512 × 512 images.
        use_normals: per-point normals from the normal maps (same frame as the points).
        remove_background: drop the belt plane (BTF's RANSAC on the image border).
        background_threshold: metres from that plane under which a point is background (1 mm,
            see :data:`BACKGROUND_THRESHOLD`).
        grid_size: nearest-resize every grid to (H, W); ``None`` keeps 512 × 512.
        predict_split: ``test_private``, ``test_public`` or ``val``.
        **kwargs: see :class:`PointCloudDataModule`.

    Example:
        ``anomalib train --model IMRNet --data Eyecandies --data.root ./datasets/Eyecandies --data.category CandyCane``
    """

    def __init__(
        self,
        root: str | Path = "./datasets/Eyecandies",
        category: str | Sequence[str] = "CandyCane",
        image_index: int = DEFAULT_IMAGE_INDEX,
        frame: str = "world",
        focal_length: float = FOCAL_LENGTH,
        use_normals: bool = False,
        remove_background: bool = True,
        background_threshold: float = BACKGROUND_THRESHOLD,
        grid_size: tuple[int, int] | None = (256, 256),
        predict_split: str = "test_private",
        **kwargs,
    ) -> None:
        super().__init__(root=root, category=category, **kwargs)
        if frame not in FRAMES:
            msg = f"frame must be one of {FRAMES}, got {frame!r}."
            raise ValueError(msg)
        if predict_split not in {"test_private", "test_public", "val"}:
            msg = f"predict_split must be test_private, test_public or val, got {predict_split!r}."
            raise ValueError(msg)
        for category_name in self.categories:
            if normalise_category(category_name) not in {normalise_category(c) for c in EYECANDIES_CATEGORIES}:
                raise UnknownCategoryError(f"'{category_name}' is not an Eyecandies category.",
                                           fix=f"choose one of {', '.join(EYECANDIES_CATEGORIES)}")
        self.image_index = image_index
        self.frame = frame
        self.focal_length = focal_length
        self.use_normals = use_normals
        self.remove_background = remove_background
        self.background_threshold = background_threshold
        self.grid_size = grid_size
        self.predict_split = predict_split

    def scan(self) -> pd.DataFrame:
        return pd.concat(
            [
                scan_eyecandies(self.root, c, image_index=self.image_index, focal_length=self.focal_length,
                                frame=self.frame, use_normals=self.use_normals)
                for c in self.categories
            ],
            ignore_index=True,
        )

    def make_dataset(self, samples: pd.DataFrame, split: str) -> MultiSourceDataset:
        return MultiSourceDataset(
            samples,
            split,
            remove_background=self.remove_background,
            background_threshold=self.background_threshold,
            grid_size=self.grid_size,
            name=self.name,
        )

    def _setup(self, _stage: str | None = None) -> None:
        super()._setup(_stage)
        split = EYECANDIES_SPLITS[self.predict_split]
        self.predict_data = self.make_dataset(self.samples, split)

    def predict_dataloader(self) -> DataLoader:
        """``predict_split`` (``test_private`` by default: no labels, no GT)."""
        if len(self.predict_data) == 0:
            raise DatasetRootNotFoundError(
                f"no {self.predict_split} samples under the Eyecandies root.",
                path=self.root,
                fix="extract the split from the archive, or pass predict_split='test_public'",
            )
        return DataLoader(
            self.predict_data,
            shuffle=False,
            batch_size=self.eval_batch_size,
            num_workers=self.num_workers,
            collate_fn=self.predict_data.collate_fn,
        )


__all__ = [
    "ANOMALY_TYPES",
    "BACKGROUND_THRESHOLD",
    "EYECANDIES_CATEGORIES",
    "FOCAL_LENGTH",
    "Eyecandies",
    "EyecandiesBatch",
    "check_samples_with_eyecandies",
    "EyecandiesDataset",
    "EyecandiesItem",
    "MultiSourceDataset",
    "decode_normals",
    "depth_to_xyz",
    "pose_convention_report",
    "read_depth_info",
    "read_depth_png",
    "read_metadata_label",
    "read_pose",
    "resolve_category",
    "scan_eyecandies",
]
