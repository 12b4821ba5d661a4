"""Eyecandies (Bonfiglioli et al., ACCV 2022) samples: the layout scan, reading a row as an
organized item with per-anomaly-type masks, and the row's pre-flight header check.

Released layout (one archive per category, extracted under ``root``)::

    <root>/<Category>/{train,val,test_public,test_private}/data/<idx>_<item>.<ext>

(the ``data/`` level is optional here). ``<idx>`` is a zero-padded integer whose width differs
between splits (``000`` in ``train``, ``00`` in ``test_public``), so files are grouped by the
number before the first underscore, never by a fixed width. The items of a sample, the camera
and the pose direction are described in :mod:`anomalib_3d.data.io.eyecandies`.

Splits: ``train`` (1000 normal) → our ``train``; ``val`` (100 normal) → ``validation`` (kept in
the samples table, not used by the default validation mode); ``test_public`` (25 good + 25
anomalous, with GT) → ``test``; ``test_private`` (no GT) → ``predict``.

Rows have ``kind == "eyecandies"`` and, besides the columns of every samples table
(:mod:`anomalib_3d.data.datasets`), the paths of the sample's other items and its reading options
(:data:`EYECANDIES_COLUMNS`), so a dataset mixing sources reads each row the way its source asks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from anomalib_3d.data.adapters import organized_to_item, resize_nearest, resize_organized
from anomalib_3d.data.background import remove_background_plane
from anomalib_3d.data.dataclasses import PointCloudBatch, PointCloudItem
from anomalib_3d.data.io.eyecandies import (
    FOCAL_LENGTH,
    decode_normals,
    depth_png_format_error,
    depth_to_xyz,
    read_depth_info,
    read_depth_png,
    read_mask_of_size,
    read_metadata_label,
    read_png_header,
    read_png_size,
    read_pose,
    require_sample_file,
)
from anomalib_3d.data.layouts import COLUMNS
from anomalib_3d.data.validation import report_problem
from anomalib_3d.errors import DatasetRootNotFoundError, GroundTruthMismatchError, PointCloudError, UnknownCategoryError

EYECANDIES_CATEGORIES = (
    "CandyCane", "ChocolateCookie", "ChocolatePraline", "Confetto", "GummyBear",
    "HazelnutTruffle", "LicoriceSandwich", "Lollipop", "Marshmallow", "PeppermintCandy",
)
# folder name -> our split name
EYECANDIES_SPLITS = {"train": "train", "val": "validation", "test_public": "test", "test_private": "predict"}
ANOMALY_TYPES = ("bumps", "dents", "colors", "normals")
DEFAULT_IMAGE_INDEX = 4
FRAMES = ("world", "camera")
# The columns every samples table has, then ours.
EYECANDIES_COLUMNS = [
    *COLUMNS,
    "sample_id", "source_split", "info_path", "pose_path", "normals_path", "metadata_path",
    *(f"{t}_mask_path" for t in ANOMALY_TYPES),
    "focal_length", "frame", "use_normals",
]
_DOWNLOAD_FIX = ("download the category from https://eyecan-ai.github.io/eyecandies/download and extract it "
                 "under root (root/<Category>/{train,val,test_public,test_private}/data)")
_SAMPLE_FILE = re.compile(r"^(\d+)_depth\.png$")


def normalise_category(name: str) -> str:
    """A category name without case, spaces, underscores or hyphens (``candy_cane`` → ``candycane``)."""
    return re.sub(r"[\s_\-]", "", name).lower()


def resolve_category(root: str | Path, category: str) -> Path:
    """The category folder; names are case-, space- and underscore-insensitive (``candy_cane``).

    Raises:
        UnknownCategoryError: not one of the ten categories (and no such folder).
        DatasetRootNotFoundError: a known category that is not under ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetRootNotFoundError("the Eyecandies root does not exist.", path=root, fix=_DOWNLOAD_FIX)
    folders = {normalise_category(p.name): p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if (root / category).is_dir():
        return root / category
    if normalise_category(category) in folders:
        return folders[normalise_category(category)]
    if normalise_category(category) not in {normalise_category(c) for c in EYECANDIES_CATEGORIES}:
        raise UnknownCategoryError(
            f"'{category}' is not an Eyecandies category.",
            path=root,
            fix=f"choose one of {', '.join(EYECANDIES_CATEGORIES)}",
        )
    raise DatasetRootNotFoundError(f"category '{category}' is not under the Eyecandies root.", path=root,
                                   fix=_DOWNLOAD_FIX)


def _split_folder(cat_dir: Path, split: str) -> Path | None:
    folder = cat_dir / split
    if (folder / "data").is_dir():
        return folder / "data"
    return folder if folder.is_dir() else None


def scan_eyecandies(
    root: str | Path,
    category: str,
    *,
    image_index: int = DEFAULT_IMAGE_INDEX,
    focal_length: float = FOCAL_LENGTH,
    frame: str = "world",
    use_normals: bool = False,
    splits: Sequence[str] = tuple(EYECANDIES_SPLITS),
) -> pd.DataFrame:
    """Samples table of one category (columns of :mod:`anomalib_3d.data.datasets` + ours).

    ``train`` and ``test_public`` must exist; ``val`` and ``test_private`` are taken when
    present. Labels of ``test_public`` come from ``metadata.yaml`` and are checked against the
    mask; ``defect_type`` is ``good`` or the ``+``-joined anomaly types whose mask is non-empty.
    Reading options (``focal_length``, ``frame``, ``use_normals``) travel as columns, so any
    dataset mixing sources (:class:`ZeroShot3D`) reads each row the way its source asks.

    Args:
        root: the folder holding the category folders.
        category: e.g. ``CandyCane`` (``candy_cane``, ``Candy Cane`` work too).
        image_index: which of ``image_0`` … ``image_5`` is the RGB.
        focal_length: pixels.
        frame: ``world`` (pose applied) or ``camera``.
        use_normals: read the normal maps as per-point normals.
        splits: folder names to scan.
    """
    if not 0 <= int(image_index) <= 5:
        msg = f"image_index must be 0..5 (image_0 … image_5), got {image_index}."
        raise ValueError(msg)
    if frame not in FRAMES:
        msg = f"frame must be one of {FRAMES}, got {frame!r}."
        raise ValueError(msg)
    unknown = [s for s in splits if s not in EYECANDIES_SPLITS]
    if unknown:
        msg = f"unknown Eyecandies splits {unknown}; choose from {list(EYECANDIES_SPLITS)}."
        raise ValueError(msg)
    cat_dir = resolve_category(root, category)
    name = next((c for c in EYECANDIES_CATEGORIES if normalise_category(c) == normalise_category(cat_dir.name)), cat_dir.name)
    rows = []
    for split in splits:
        folder = _split_folder(cat_dir, split)
        if folder is None:
            if split in {"train", "test_public"}:
                raise DatasetRootNotFoundError(f"Eyecandies '{name}' has no {split} folder.", path=cat_dir / split,
                                               fix=_DOWNLOAD_FIX)
            continue
        ids = sorted((m.group(1) for p in folder.iterdir() if (m := _SAMPLE_FILE.match(p.name))), key=int)
        if not ids:
            raise DatasetRootNotFoundError(f"no <idx>_depth.png in the {split} folder.", path=folder, fix=_DOWNLOAD_FIX)
        for idx in ids:
            try:
                rows.append(_scan_sample(folder, idx, split, name, image_index))
            except PointCloudError as err:  # collected by the pre-flight check, else raised
                report_problem(err)
    frame_table = pd.DataFrame(rows, columns=EYECANDIES_COLUMNS[:-3])
    return frame_table.assign(focal_length=float(focal_length), frame=frame, use_normals=bool(use_normals))


def _scan_sample(folder: Path, idx: str, split: str, category: str, image_index: int) -> list:
    def item(suffix: str) -> Path:
        return folder / f"{idx}_{suffix}"

    depth = item("depth.png")
    info = require_sample_file(item("info_depth.yaml"), "info_depth.yaml")
    rgb = require_sample_file(item(f"image_{image_index}.png"), f"image_{image_index}.png")
    optional = {k: item(f) for k, f in (("pose", "pose.txt"), ("normals", "normals.png"), ("metadata", "metadata.yaml"))}
    type_masks = {t: item(f"{t}_mask.png") for t in ANOMALY_TYPES}
    mask = item("mask.png")
    label, defect = 0, "good"
    if split == "test_public":
        label = int(read_metadata_label(require_sample_file(optional["metadata"], "metadata.yaml")))
        union = read_mask_of_size(require_sample_file(mask, "mask.png"), read_png_size(depth), "mask.png")
        if bool(union.any()) != bool(label):
            raise GroundTruthMismatchError(
                f"metadata.yaml says anomalous={bool(label)} but the mask has {int(union.sum())} anomalous pixels.",
                path=optional["metadata"],
                fix="re-extract the sample; label and mask must agree",
            )
        if label:
            present = [t for t, p in type_masks.items() if p.is_file() and read_mask_of_size(p, union.shape, p.name).any()]
            defect = "+".join(present) or "anomaly"
    has_gt = split in {"test_public"}
    return [
        str(depth),
        EYECANDIES_SPLITS[split],
        label if split != "test_private" else -1,
        category,
        defect if split != "test_private" else "unknown",
        "eyecandies",
        str(mask) if has_gt else "",
        str(rgb),
        idx,
        split,
        str(info),
        *(str(p) if p.is_file() else "" for p in optional.values()),
        *(str(p) if has_gt and p.is_file() else "" for p in type_masks.values()),
    ]




@dataclass
class EyecandiesItem(PointCloudItem):
    """A :class:`PointCloudItem` plus ``type_masks``: (4, H, W) bool, one mask per
    :data:`ANOMALY_TYPES` entry (bumps, dents, colors, normals) on the ``pixel_gt_mask`` grid."""

    type_masks: torch.Tensor | None = None


@dataclass
class EyecandiesBatch(PointCloudBatch):
    """A :class:`PointCloudBatch` plus ``type_masks``: (B, 4, H, W) bool (see :class:`EyecandiesItem`).

    Metrics split by anomaly type take, for type ``t``, the pixels of ``type_masks[:, t]`` as
    positives and the pixels outside ``pixel_gt_mask`` as negatives.
    """

    type_masks: torch.Tensor | None = None

    @classmethod
    def collate(cls, items: list[PointCloudItem]) -> EyecandiesBatch:
        """:meth:`PointCloudBatch.collate`, then stack ``type_masks`` (all items or none)."""
        batch = super().collate(items)
        masks = [getattr(item, "type_masks", None) for item in items]
        if any(m is not None for m in masks):
            if any(m is None for m in masks):
                msg = "type_masks is set for some clouds of the batch but not all (mixed Eyecandies / other sources)."
                raise ValueError(msg)
            batch.type_masks = torch.stack(masks)
        return batch


def read_eyecandies_item(
    row: pd.Series,
    *,
    grid_size: tuple[int, int] | None = None,
    remove_background: bool = False,
    background_threshold: float = 0.005,
) -> EyecandiesItem:
    """One ``kind == "eyecandies"`` row as an organized :class:`EyecandiesItem`.

    Depth is back-projected to xyz (see :mod:`anomalib_3d.data.io.eyecandies`), the row's RGB is
    the image and the colours, ``pixel_gt_mask`` / per-point ``gt_mask`` come from ``mask.png``
    and ``type_masks`` from the per-type masks; ``test_private`` rows (``label_index`` −1) carry
    no label and no GT.

    Args:
        row: a samples-table row with :data:`EYECANDIES_COLUMNS`.
        grid_size: nearest-resize every grid to (H, W); ``None`` keeps the native size.
        remove_background: drop the belt plane (BTF's RANSAC on the image border).
        background_threshold: plane distance for rows without their own ``background_threshold``.
    """
    from anomalib_3d.data.io import read_rgb

    depth = read_depth_png(row.image_path, row.info_path)
    shape = depth.shape
    pose = None
    if row.frame == "world":
        if not row.pose_path:
            raise DatasetRootNotFoundError(
                "the sample has no pose.txt, needed for world coordinates.",
                path=Path(row.image_path).with_name(f"{row.sample_id}_pose.txt"),
                fix="restore the pose file, or use frame='camera'",
            )
        pose = read_pose(row.pose_path)
    xyz = torch.from_numpy(depth_to_xyz(depth, float(row.focal_length), pose).astype(np.float32))
    rgb = torch.from_numpy(read_rgb(row.rgb_path).copy()).permute(2, 0, 1).float() / 255.0
    normals = None
    if bool(row.use_normals) and row.normals_path:
        normals_png = read_rgb(row.normals_path)
        if normals_png.shape[:2] != shape:
            raise GroundTruthMismatchError("normal map and depth map differ in size.", path=row.normals_path,
                                           fix="re-extract the sample from the archive")
        normals = torch.from_numpy(decode_normals(normals_png, pose).astype(np.float32))
    labelled = int(row.label_index) >= 0
    gt = type_masks = None
    if labelled:
        gt_np = read_mask_of_size(row.mask_path, shape, "mask.png") if row.mask_path else np.zeros(shape, dtype=bool)
        gt = torch.from_numpy(gt_np)
        type_masks = torch.from_numpy(np.stack([
            read_mask_of_size(getattr(row, f"{t}_mask_path"), shape, f"{t}_mask.png")
            if getattr(row, f"{t}_mask_path") else np.zeros(shape, dtype=bool)
            for t in ANOMALY_TYPES
        ]))
    if grid_size is not None:
        xyz = resize_organized(xyz, grid_size)
        rgb = resize_nearest(rgb, grid_size)
        normals = None if normals is None else resize_organized(normals, grid_size)
        gt = None if gt is None else resize_nearest(gt, grid_size)
        type_masks = None if type_masks is None else resize_nearest(type_masks, grid_size)
    keep = None
    if remove_background:
        threshold = getattr(row, "background_threshold", None)
        threshold = background_threshold if threshold is None or pd.isna(threshold) else float(threshold)
        keep = torch.from_numpy(remove_background_plane(xyz.numpy(), distance_threshold=threshold))
    item = organized_to_item(
        xyz,
        rgb=rgb,
        pixel_gt_mask=gt,
        valid=keep,
        gt_label=int(row.label_index) if labelled else None,
        category=str(row.category),
        point_path=str(row.image_path),
        image_path=str(row.rgb_path),
        mask_path=str(row.mask_path) if row.mask_path else None,
    )
    kwargs = {f.name: getattr(item, f.name) for f in fields(item) if f.init}
    if normals is not None:
        kwargs["normals"] = normals.reshape(-1, 3)[item.grid_index]
    return EyecandiesItem(**kwargs, type_masks=type_masks)


def check_eyecandies_row(row: pd.Series) -> list[PointCloudError]:
    """Header-level problems of one Eyecandies sample (nothing decoded but two small YAMLs).

    The pre-flight check (:func:`~anomalib_3d.data.validation.check_samples`) runs it on
    ``kind == "eyecandies"`` rows: 16-bit depth PNG, depth info, a pose where world coordinates
    need one, and every PNG of the sample the depth map's size.
    """
    problems: list[PointCloudError] = []
    try:
        depth = require_sample_file(Path(row.image_path), "depth PNG")
        problem = depth_png_format_error(depth, "use the original <idx>_depth.png of the archive")
        if problem is not None:
            problems.append(problem)
        read_depth_info(row.info_path)
        if row.frame == "world" and not row.pose_path:
            problems.append(DatasetRootNotFoundError(
                "the sample has no pose.txt, needed for world coordinates.",
                path=depth.with_name(f"{row.sample_id}_pose.txt"), fix="restore it, or use frame='camera'"))
        size = read_png_size(depth)
        companions = [("rgb_path", "RGB image"), ("mask_path", "GT mask"),
                      *((f"{t}_mask_path", f"{t} mask") for t in ANOMALY_TYPES)]
        for column, what in companions:
            path = getattr(row, column, "")
            if not path:
                continue
            read_png_header(require_sample_file(Path(path), what))
            if read_png_size(Path(path)) != size:
                h, w = read_png_size(Path(path))
                problems.append(GroundTruthMismatchError(
                    f"{what} is {h}x{w} (HxW) but the depth map is {size[0]}x{size[1]}.", path=path,
                    fix="use the file of this sample from the archive (all items of a sample have one size)"))
    except PointCloudError as err:
        problems.append(err)
    return problems
