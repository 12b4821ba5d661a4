"""Point-cloud datasets: they read the rows of a *samples table*, which one *layout scanner* per
public dataset builds from the real on-disk layout.

A samples table (pandas) has anomalib's columns plus ours:

============  =================================================================================
column        meaning
============  =================================================================================
image_path    the sample's main file (``.pcd`` or ``xyz/*.tiff``); anomalib sorts / checks on it
split         ``train`` | ``test`` (``validation`` for MVTec's own validation folder)
label_index   0 good, 1 anomalous
category      object category
defect_type   ``good`` or the defect name parsed from the layout
kind          ``cloud`` (unorganized file), ``organized`` (xyz grid) or ``eyecandies`` (depth sample)
mask_path     GT: Real3D-AD/Anomaly-ShapeNet ``.txt`` (``x y z label``) or MVTec ``gt/*.png``; "" if none
rgb_path      MVTec ``rgb/*.png``; "" if none
============  =================================================================================

The scanners are in :mod:`anomalib_3d.data.layouts` (Real3D-AD, Anomaly-ShapeNet, MVTec 3D-AD)
and :mod:`anomalib_3d.data.eyecandies`, BTF's background-plane removal in
:mod:`anomalib_3d.data.background`; all are importable from here as well.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from anomalib.data.datasets.base.image import AnomalibDataset

from anomalib_3d.data.adapters import organized_to_item, resize_organized
from anomalib_3d.data.background import clean_organized_scan, remove_background_plane
from anomalib_3d.data.dataclasses import PointCloudBatch, PointCloudItem
from anomalib_3d.data.eyecandies import EyecandiesBatch, check_eyecandies_row, read_eyecandies_item
from anomalib_3d.data.layouts import (
    CLOUD_SUFFIXES,
    COLUMNS,
    DEFECT_WORDS,
    SCANNERS,
    check_category_name,
    gt_cloud_label,
    list_sample_files,
    parse_defect_type,
    scan_anomaly_shapenet,
    scan_gt_cloud_layout,
    scan_mvtec3d,
    scan_real3d_ad,
)
from anomalib_3d.errors import GroundTruthMismatchError, PointCloudError


class SamplesTableDataset(AnomalibDataset):
    """An anomalib dataset over (one split of) a samples table: the base of our datasets.

    Args:
        samples: the samples table (anomalib's columns; see the module docstring).
        split: keep only rows of this split (``None`` keeps all).
        task: anomalib's task stored in ``samples.attrs["task"]`` (``"segmentation"`` |
            ``"classification"``).
        name: the dataset's name (anomalib uses it in logs and result paths).
    """

    def __init__(self, samples: pd.DataFrame, split: str | None, task: str, name: str) -> None:
        super().__init__(augmentations=None)
        if split is not None:
            samples = samples[samples.split == split].reset_index(drop=True)
        # A copy: the attrs below and later column edits must not leak into the caller's table.
        samples = samples.copy()
        samples.attrs["task"] = task
        self.samples = samples
        self._name = name

    @property
    def name(self) -> str:
        return self._name


class PointCloudDataset(SamplesTableDataset):
    """Reads the rows of a samples table into :class:`PointCloudItem` objects.

    Args:
        samples: the samples table (see the module docstring).
        split: keep only rows of this split (``None`` keeps all).
        remove_background: organized samples: drop the support plane (BTF preprocessing).
        background_threshold: distance to the plane under which a point is background.
        keep_largest_cluster: organized samples with ``remove_background``: also drop every
            fragment outside the largest DBSCAN cluster (eps 6 mm, 30 points), plane and clusters
            found at the native resolution before any resizing, as the PointAD authors clean
            MVTec 3D-AD (:func:`~anomalib_3d.data.background.clean_organized_scan`).
        grid_size: organized samples: nearest-resize the xyz grid (and RGB/GT) to (H, W) first;
            ``None`` keeps the native resolution.
        align_gt: unorganized samples: when the GT file's coordinates are a permutation of the
            cloud's, re-order the labels by exact nearest match (some releases store them
            in a different order); otherwise a mismatch raises.
        columns: text/``.npy`` clouds: the column layout (see
            :func:`~anomalib_3d.data.io.read_point_cloud`); ``None`` infers it.

    Label rule: a sample's label must agree with its GT content (``GroundTruthMismatchError``
    otherwise), checked whenever a GT file is read: see
    :func:`~anomalib_3d.data.layouts.gt_cloud_label` and
    :func:`~anomalib_3d.data.layouts.scan_mvtec3d`.
    """

    def __init__(
        self,
        samples: pd.DataFrame,
        split: str | None = None,
        *,
        remove_background: bool = False,
        background_threshold: float = 0.005,
        keep_largest_cluster: bool = False,
        grid_size: tuple[int, int] | None = None,
        align_gt: bool = True,
        name: str = "point_cloud",
        columns: str | None = None,
    ) -> None:
        super().__init__(samples, split, "segmentation", name)
        self.remove_background = remove_background
        self.background_threshold = background_threshold
        self.keep_largest_cluster = keep_largest_cluster
        self.grid_size = tuple(grid_size) if grid_size is not None else None
        self.align_gt = align_gt
        self.columns = columns
        categories = sorted(set(self.samples.category)) if len(self.samples) else []
        self.category = "+".join(categories)

    @property
    def collate_fn(self) -> Callable[[list[PointCloudItem]], PointCloudBatch]:
        return PointCloudBatch.collate

    def __getitem__(self, index: int) -> PointCloudItem:
        row = self.samples.iloc[index]
        if row.kind == "organized":
            return self._organized_item(row)
        return self._cloud_item(row)

    # -- unorganized ------------------------------------------------------------------------
    def _cloud_item(self, row: pd.Series) -> PointCloudItem:
        from anomalib_3d.data.io import read_gt_txt, read_point_cloud

        cloud = read_point_cloud(row.image_path, columns=self.columns)
        points = cloud.points
        n = points.shape[0]
        label = int(row.label_index)
        if row.mask_path:
            gt_points, labels = read_gt_txt(row.mask_path)
            labels = self._labels_for(points, gt_points, labels, row)
            label = self._label_agrees(label, int(labels.sum()), row, row.mask_path, "points")
        else:
            labels = np.zeros(n, dtype=bool)
        return PointCloudItem(
            points=torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)),
            colors=None if cloud.colors is None else torch.from_numpy(np.asarray(cloud.colors, dtype=np.float32)),
            normals=None if cloud.normals is None else torch.from_numpy(np.asarray(cloud.normals, dtype=np.float32)),
            gt_mask=torch.from_numpy(labels.astype(bool)),
            gt_label=label,
            category=str(row.category),
            point_path=str(row.image_path),
            mask_path=str(row.mask_path) if row.mask_path else None,
        )

    @staticmethod
    def _label_agrees(label: int, num_positive: int, row: pd.Series, gt_path: str, unit: str) -> int:
        """The sample label must agree with its GT content (the layout's label rule)."""
        if label == 0 and num_positive > 0:
            raise GroundTruthMismatchError(
                f"the sample is good ('{row.defect_type}') but its GT marks {num_positive} {unit} anomalous.",
                path=gt_path,
                fix="move the sample to its defect's folder / name, or replace the GT with the right one "
                    "(all zeros for a good sample).",
            )
        if label == 1 and num_positive == 0:
            raise GroundTruthMismatchError(
                f"the sample is defective ('{row.defect_type}') but its GT marks no {unit} anomalous.",
                path=gt_path,
                fix="restore the GT file from the dataset archive, or move the sample to the good ones.",
            )
        return label

    def _labels_for(self, points: np.ndarray, gt_points: np.ndarray, labels: np.ndarray, row: pd.Series) -> np.ndarray:
        if gt_points.shape[0] != points.shape[0]:
            raise GroundTruthMismatchError(
                f"GT has {gt_points.shape[0]} rows but the cloud {row.image_path} has {points.shape[0]} points.",
                path=row.mask_path,
                fix="use the GT file that belongs to this cloud (same stem), from the same dataset release",
            )
        # Robust scale: the median per-axis extent of the cloud, so a single far outlier cannot
        # widen the tolerance until a GT of another cloud passes.
        extent = np.percentile(points, 95, axis=0) - np.percentile(points, 5, axis=0)
        scale = max(float(np.median(extent)), 1e-6)
        if np.allclose(gt_points, points, rtol=0.0, atol=1e-5 * scale):
            return labels.astype(bool)
        if not self.align_gt:
            raise GroundTruthMismatchError("GT coordinates differ from the cloud's.", path=row.mask_path,
                                           fix="pass align_gt=True to match labels by coordinates")
        from scipy.spatial import cKDTree

        dist, idx = cKDTree(gt_points).query(points, k=1)
        if float(dist.max()) > 1e-4 * scale:
            raise GroundTruthMismatchError(
                f"GT coordinates do not match the cloud {row.image_path} (max distance {dist.max():.3g}, "
                f"tolerance {1e-4 * scale:.3g}).",
                path=row.mask_path,
                fix="the GT file does not describe this cloud; check the dataset release",
            )
        if len(np.unique(idx)) != len(idx):
            raise GroundTruthMismatchError(
                f"GT coordinates match the cloud {row.image_path} only with repeated rows "
                "(several points share one GT row).",
                path=row.mask_path,
                fix="the GT file does not describe this cloud; check the dataset release",
            )
        return labels[idx].astype(bool)

    # -- organized --------------------------------------------------------------------------
    def _organized_item(self, row: pd.Series) -> PointCloudItem:
        from anomalib_3d.data.io import read_mask_png, read_organized_xyz, read_rgb
        from anomalib_3d.data.validation import _size_mismatch

        xyz = read_organized_xyz(row.image_path)
        grid = tuple(xyz.shape[:2])
        rgb = read_rgb(row.rgb_path) if row.rgb_path else None
        if rgb is not None and tuple(rgb.shape[:2]) != grid:
            raise _size_mismatch(row.rgb_path, "RGB image", tuple(rgb.shape[:2]), grid, row.image_path)
        label = int(row.label_index)
        if row.mask_path:
            gt = read_mask_png(row.mask_path)
            if tuple(gt.shape) != grid:
                raise _size_mismatch(row.mask_path, "GT mask", tuple(gt.shape), grid, row.image_path)
            label = self._label_agrees(label, int(gt.sum()), row, row.mask_path, "pixels")
        else:
            gt = np.zeros(grid, dtype=bool)
        xyz_t = torch.from_numpy(np.ascontiguousarray(xyz, dtype=np.float32))
        rgb_t = None if rgb is None else torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1).float() / 255.0
        gt_t = torch.from_numpy(gt.astype(bool))
        cleaned = self.remove_background and self.keep_largest_cluster
        if cleaned:
            # Plane and fragments at the native resolution, then the resize sees only the object.
            on_object = clean_organized_scan(xyz_t.numpy(), distance_threshold=self.background_threshold,
                                             largest_cluster=True)
            xyz_t = torch.where(torch.from_numpy(on_object).unsqueeze(-1), xyz_t, torch.zeros_like(xyz_t))
        if self.grid_size is not None:
            from anomalib_3d.data.adapters import resize_nearest

            xyz_t = resize_organized(xyz_t, self.grid_size)
            rgb_t = None if rgb_t is None else resize_nearest(rgb_t, self.grid_size)
            gt_t = resize_nearest(gt_t, self.grid_size)
        keep = None
        if self.remove_background and not cleaned:
            keep = torch.from_numpy(
                remove_background_plane(xyz_t.numpy(), distance_threshold=self.background_threshold),
            )
        return organized_to_item(
            xyz_t,
            rgb=rgb_t,
            pixel_gt_mask=gt_t,
            valid=keep,
            gt_label=label,
            category=str(row.category),
            point_path=str(row.image_path),
            image_path=str(row.rgb_path) if row.rgb_path else None,
            mask_path=str(row.mask_path) if row.mask_path else None,
        )


class MultiSourceDataset(PointCloudDataset):
    """:class:`PointCloudDataset` that also reads ``kind == "eyecandies"`` rows (others as usual).

    An Eyecandies row becomes an organized :class:`~anomalib_3d.data.eyecandies.EyecandiesItem`
    (see :func:`~anomalib_3d.data.eyecandies.read_eyecandies_item`); ``grid_size`` and
    ``remove_background`` act as for MVTec 3D-AD. Batches are
    :class:`~anomalib_3d.data.eyecandies.EyecandiesBatch` objects, which carry the
    per-anomaly-type masks when every cloud of the batch has them. The pre-flight check reads
    Eyecandies headers through :meth:`check_row_header`.
    """

    @property
    def collate_fn(self) -> Callable[[list[PointCloudItem]], PointCloudBatch]:
        return EyecandiesBatch.collate

    def __getitem__(self, index: int) -> PointCloudItem:
        row = self.samples.iloc[index]
        if row.kind == "eyecandies":
            return read_eyecandies_item(
                row,
                grid_size=self.grid_size,
                remove_background=self.remove_background,
                background_threshold=self.background_threshold,
            )
        return super().__getitem__(index)

    @staticmethod
    def check_row_header(row: pd.Series) -> list[PointCloudError]:
        """Header problems of a row whose ``kind`` the generic pre-flight check does not read
        (Eyecandies samples; see :func:`~anomalib_3d.data.eyecandies.check_eyecandies_row`)."""
        return check_eyecandies_row(row) if row.kind == "eyecandies" else []


EyecandiesDataset = MultiSourceDataset
"""The former name of :class:`MultiSourceDataset` (kept importable)."""


__all__ = [
    "CLOUD_SUFFIXES",
    "COLUMNS",
    "DEFECT_WORDS",
    "MultiSourceDataset",
    "PointCloudDataset",
    "SCANNERS",
    "SamplesTableDataset",
    "check_category_name",
    "gt_cloud_label",
    "list_sample_files",
    "parse_defect_type",
    "remove_background_plane",
    "scan_anomaly_shapenet",
    "scan_gt_cloud_layout",
    "scan_mvtec3d",
    "scan_real3d_ad",
]
