"""Eyecandies (Bonfiglioli et al., ACCV 2022) read as organized point clouds.

Released layout (one archive per category, extracted under ``root``)::

    <root>/<Category>/{train,val,test_public,test_private}/data/<idx>_<item>.<ext>

(the ``data/`` level is optional here). ``<idx>`` is a zero-padded integer whose width differs
between splits (``000`` in ``train``, ``00`` in ``test_public``), so files are grouped by the
number before the first underscore, never by a fixed width. Items of a sample:

=====================  ===================================================================
item                   meaning
=====================  ===================================================================
``image_0`` … ``_5``   RGB under six lightings (0 all spots, 1 bottom, 2 right, 3 top,
                       4 left, 5 global light box)
``depth.png``          16-bit grey PNG, depth normalised to 0 … 65535
``info_depth.yaml``    ``normalization: {min, max}``: metres = png / 65535 · (max − min) + min
``normals.png``        RGB normal map, n = png / 127.5 − 1, Y and Z flipped w.r.t. the camera
``pose.txt``           4 × 4 camera pose relative to the world (camera → world)
``metadata.yaml``      ``anomalous: 0 | 1`` (not in ``test_private``)
``mask.png``           GT: union of the per-type masks (not in ``test_private``)
``{bumps,dents,colors,normals}_mask.png``  GT per anomaly type (not in ``test_private``)
=====================  ===================================================================

Splits: ``train`` (1000 normal) → our ``train``; ``val`` (100 normal) → ``validation`` (kept in
the samples table, not used by the default validation mode); ``test_public`` (25 good + 25
anomalous, with GT) → ``test``; ``test_private`` (no GT) → ``predict``.

Geometry. A pixel ``(u, v)`` (column, row) with metric depth ``d`` is, in the camera frame,
``d · ((u − W/2) / f, (v − H/2) / f, 1)`` with the published focal length ``f = 711.11`` px and
the principal point at the image centre. In the world frame it is ``pose · (that, 1)``.

*Pose direction.* The two official snippets disagree: the website's ``depth_to_pointcloud``
applies ``inv(K · pose)`` (pose = world → camera) while the shipped ``depth2pc`` stage and the
website's normal-map snippet apply ``pose`` (camera → world, which is also what the format table
says: "camera pose relative to the world"). We use camera → world. The decision is a geometric
one: the conveyor belt is fixed in the world while the camera pose changes from sample to
sample, so only the right direction maps the belt of *every* sample onto the *same* world plane;
:func:`pose_convention_report` measures exactly that on any downloaded category (and the tests
check it on a hand-written scene whose belt is the plane z = 0). M3DM's preprocessing, which
uses the other direction, has to rotate each cloud afterwards to level the belt — a symptom
of the same thing.

The image used as RGB defaults to ``image_4`` (left spotlight): M3DM's
``preprocess_eyecandies.py`` copies ``image_4`` as the RGB of its MVTec-style conversion, and the
multimodal Eyecandies numbers we compare with (M3DM, CPMF, PointAD) come from that conversion.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from anomalib_3d.data.adapters import organized_to_item, resize_nearest, resize_organized
from anomalib_3d.data.datamodules.base import PointCloudDataModule
from anomalib_3d.data.dataclasses import PointCloudBatch, PointCloudItem
from anomalib_3d.data.datasets import PointCloudDataset, remove_background_plane
from anomalib_3d.data.validation import check_mode, check_samples, collect_problems, report_problem
from anomalib_3d.data.errors import (
    CorruptFileError,
    DatasetRootNotFoundError,
    GroundTruthMismatchError,
    PointCloudError,
    UnknownCategoryError,
    UnsupportedFormatError,
)

EYECANDIES_CATEGORIES = (
    "CandyCane", "ChocolateCookie", "ChocolatePraline", "Confetto", "GummyBear",
    "HazelnutTruffle", "LicoriceSandwich", "Lollipop", "Marshmallow", "PeppermintCandy",
)
# folder name -> our split name
EYECANDIES_SPLITS = {"train": "train", "val": "validation", "test_public": "test", "test_private": "predict"}
ANOMALY_TYPES = ("bumps", "dents", "colors", "normals")
FOCAL_LENGTH = 711.11
DEFAULT_IMAGE_INDEX = 4
# metres: the rendered belt is exactly flat and 16-bit depth is micrometre-accurate, while
# MVTec's 5 mm would cut flat candies such as the cookie
BACKGROUND_THRESHOLD = 0.001
FRAMES = ("world", "camera")
# The columns every samples table has (see anomalib_3d.data.datasets), then ours.
EYECANDIES_COLUMNS = [
    "image_path", "split", "label_index", "category", "defect_type", "kind", "mask_path", "rgb_path",
    "sample_id", "source_split", "info_path", "pose_path", "normals_path", "metadata_path",
    *(f"{t}_mask_path" for t in ANOMALY_TYPES),
    "focal_length", "frame", "use_normals",
]
_DOWNLOAD_FIX = ("download the category from https://eyecan-ai.github.io/eyecandies/download and extract it "
                 "under root (root/<Category>/{train,val,test_public,test_private}/data)")
_SAMPLE_FILE = re.compile(r"^(\d+)_depth\.png$")


# --------------------------------------------------------------------------------------------
# file readers
# --------------------------------------------------------------------------------------------
def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetRootNotFoundError(
            f"the sample's {what} is missing.",
            path=path,
            fix="restore it from the Eyecandies archive (every sample has it in this split)",
        )
    return path


def _load_yaml(path: str | Path) -> dict:
    import yaml

    path = _require(Path(path), "YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise CorruptFileError(f"is not valid YAML ({err}).", path=path, fix="re-extract it from the archive") from err
    if not isinstance(data, dict):
        raise CorruptFileError("holds no YAML mapping.", path=path, fix="re-extract it from the archive")
    return data


def read_depth_info(path: str | Path) -> tuple[float, float]:
    """``(min, max)`` depth in metres of ``<idx>_info_depth.yaml`` (``normalization.min/max``)."""
    data = _load_yaml(path)
    norm = data.get("normalization")
    try:
        lo, hi = float(norm["min"]), float(norm["max"])
    except (TypeError, KeyError, ValueError) as err:
        raise CorruptFileError(
            "has no numeric normalization.min / normalization.max.",
            path=path,
            fix="re-extract the info_depth.yaml of this sample from the archive",
        ) from err
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        raise CorruptFileError(f"normalization bounds ({lo}, {hi}) are not an interval.", path=path,
                               fix="re-extract the info_depth.yaml of this sample from the archive")
    return lo, hi


def read_metadata_label(path: str | Path) -> bool:
    """``anomalous`` of ``<idx>_metadata.yaml`` as a bool."""
    data = _load_yaml(path)
    if "anomalous" not in data:
        raise CorruptFileError("has no 'anomalous' key.", path=path, fix="re-extract it from the archive")
    value = data["anomalous"]
    if isinstance(value, str):
        value = value.strip().lower() in {"1", "true", "yes"}
    return bool(value)


def _png_header(path: Path) -> tuple[int, int]:
    """``(bit depth, colour type)`` from the PNG IHDR chunk (Pillow hides the bit depth)."""
    with path.open("rb") as handle:
        head = handle.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise CorruptFileError("is not a PNG file.", path=path, fix="re-extract the depth PNG from the archive")
    return head[24], head[25]


def read_depth_png(path: str | Path, info_path: str | Path) -> np.ndarray:
    """Metric depth of ``<idx>_depth.png``.

    Args:
        path: the 16-bit grey PNG.
        info_path: its ``<idx>_info_depth.yaml``.

    Returns:
        (H, W) float64 metres: ``png / 65535 · (max − min) + min``.

    Raises:
        UnsupportedFormatError: the PNG is not 16-bit greyscale (an 8-bit export has lost the
            depth resolution and would be scaled 257× wrong).
    """
    from PIL import Image

    path = _require(Path(path), "depth PNG")
    bit_depth, colour_type = _png_header(path)
    if bit_depth != 16 or colour_type != 0:
        raise UnsupportedFormatError(
            f"depth PNG has bit depth {bit_depth} and colour type {colour_type}; Eyecandies depth is 16-bit greyscale.",
            path=path,
            fix="use the original <idx>_depth.png of the archive, not a converted / 8-bit preview",
        )
    with Image.open(path) as image:
        raw = np.asarray(image).astype(np.float64)
    lo, hi = read_depth_info(info_path)
    return raw / 65535.0 * (hi - lo) + lo


def read_pose(path: str | Path) -> np.ndarray:
    """(4, 4) float64 camera → world pose of ``<idx>_pose.txt``."""
    path = _require(Path(path), "pose")
    try:
        pose = np.loadtxt(path, dtype=np.float64)
    except ValueError as err:
        raise CorruptFileError(f"cannot be read as a matrix ({err}).", path=path, fix="re-extract it") from err
    if pose.shape != (4, 4) or not np.isfinite(pose).all():
        raise CorruptFileError(f"holds a {pose.shape} matrix; a pose is a finite 4 × 4 matrix.", path=path,
                               fix="re-extract it from the archive")
    return pose


def depth_to_xyz(
    depth: np.ndarray,
    focal_length: float = FOCAL_LENGTH,
    pose: np.ndarray | None = None,
) -> np.ndarray:
    """Back-project a metric depth map with the Eyecandies camera.

    Args:
        depth: (H, W) metres (z along the optical axis); ``<= 0`` = no point.
        focal_length: pixels (711.11 for the released 512 × 512 images).
        pose: (4, 4) camera → world; ``None`` keeps camera coordinates.

    Returns:
        (H, W, 3) float64; pixels without depth are all-zero (the "no point" convention of the
        organized grids, see :mod:`anomalib_3d.data.adapters`).
    """
    height, width = depth.shape
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    xyz = np.stack([(cols - width / 2) / focal_length * depth, (rows - height / 2) / focal_length * depth, depth], -1)
    if pose is not None:
        xyz = xyz @ pose[:3, :3].T + pose[:3, 3]
    xyz[depth <= 0] = 0.0
    return xyz


def decode_normals(normals_png: np.ndarray, pose: np.ndarray | None = None) -> np.ndarray:
    """Normal map → unit normals in the camera (OpenCV) or world frame.

    Args:
        normals_png: (H, W, 3) uint8, n = png / 127.5 − 1 with Y and Z flipped w.r.t. the camera.
        pose: (4, 4) camera → world; ``None`` keeps camera coordinates.

    Returns:
        (H, W, 3) float64 unit vectors.
    """
    normals = normals_png.astype(np.float64) / 127.5 - 1.0
    normals /= np.clip(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12, None)
    normals = normals * np.array([1.0, -1.0, -1.0])
    if pose is not None:
        normals = normals @ pose[:3, :3].T
    return normals


def _read_mask(path: str | Path, shape: tuple[int, int], what: str) -> np.ndarray:
    from anomalib_3d.data.io import read_mask_png

    mask = read_mask_png(path)
    if mask.shape != shape:
        raise GroundTruthMismatchError(
            f"{what} is {mask.shape[1]}x{mask.shape[0]} but the depth map is {shape[1]}x{shape[0]}.",
            path=path,
            fix="masks must have the depth map's size; re-extract the sample from the archive",
        )
    return mask


# --------------------------------------------------------------------------------------------
# layout scanner
# --------------------------------------------------------------------------------------------
def _normalise(name: str) -> str:
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
    folders = {_normalise(p.name): p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if (root / category).is_dir():
        return root / category
    if _normalise(category) in folders:
        return folders[_normalise(category)]
    if _normalise(category) not in {_normalise(c) for c in EYECANDIES_CATEGORIES}:
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
    name = next((c for c in EYECANDIES_CATEGORIES if _normalise(c) == _normalise(cat_dir.name)), cat_dir.name)
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
    info = _require(item("info_depth.yaml"), "info_depth.yaml")
    rgb = _require(item(f"image_{image_index}.png"), f"image_{image_index}.png")
    optional = {k: item(f) for k, f in (("pose", "pose.txt"), ("normals", "normals.png"), ("metadata", "metadata.yaml"))}
    type_masks = {t: item(f"{t}_mask.png") for t in ANOMALY_TYPES}
    mask = item("mask.png")
    label, defect = 0, "good"
    if split == "test_public":
        label = int(read_metadata_label(_require(optional["metadata"], "metadata.yaml")))
        union = _read_mask(_require(mask, "mask.png"), _png_size(depth), "mask.png")
        if bool(union.any()) != bool(label):
            raise GroundTruthMismatchError(
                f"metadata.yaml says anomalous={bool(label)} but the mask has {int(union.sum())} anomalous pixels.",
                path=optional["metadata"],
                fix="re-extract the sample; label and mask must agree",
            )
        if label:
            present = [t for t, p in type_masks.items() if p.is_file() and _read_mask(p, union.shape, p.name).any()]
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


def _png_size(path: Path) -> tuple[int, int]:
    """(H, W) from the PNG header, without decoding."""
    with path.open("rb") as handle:
        head = handle.read(24)
    return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")


# --------------------------------------------------------------------------------------------
# items and batches with the per-type masks
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------------
class EyecandiesDataset(PointCloudDataset):
    """:class:`PointCloudDataset` that also reads ``kind == "eyecandies"`` rows (others as usual).

    An Eyecandies row becomes an organized :class:`EyecandiesItem`: depth back-projected to xyz
    (see the module docstring), the chosen RGB, ``pixel_gt_mask`` / per-point ``gt_mask`` from
    ``mask.png`` and ``type_masks`` from the per-type masks; ``test_private`` rows carry no
    label and no GT. ``grid_size`` and ``remove_background`` act as for MVTec 3D-AD.
    """

    @property
    def collate_fn(self) -> Callable[[list[PointCloudItem]], PointCloudBatch]:
        return EyecandiesBatch.collate

    def __getitem__(self, index: int) -> PointCloudItem:
        row = self.samples.iloc[index]
        if row.kind == "eyecandies":
            return self._eyecandies_item(row)
        return super().__getitem__(index)

    def _eyecandies_item(self, row: pd.Series) -> EyecandiesItem:
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
            gt_np = _read_mask(row.mask_path, shape, "mask.png") if row.mask_path else np.zeros(shape, dtype=bool)
            gt = torch.from_numpy(gt_np)
            type_masks = torch.from_numpy(np.stack([
                _read_mask(getattr(row, f"{t}_mask_path"), shape, f"{t}_mask.png")
                if getattr(row, f"{t}_mask_path") else np.zeros(shape, dtype=bool)
                for t in ANOMALY_TYPES
            ]))
        if self.grid_size is not None:
            xyz = resize_organized(xyz, self.grid_size)
            rgb = resize_nearest(rgb, self.grid_size)
            normals = None if normals is None else resize_organized(normals, self.grid_size)
            gt = None if gt is None else resize_nearest(gt, self.grid_size)
            type_masks = None if type_masks is None else resize_nearest(type_masks, self.grid_size)
        keep = None
        if self.remove_background:
            threshold = getattr(row, "background_threshold", None)
            threshold = self.background_threshold if threshold is None or pd.isna(threshold) else float(threshold)
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


# --------------------------------------------------------------------------------------------
# pose direction check on real data
# --------------------------------------------------------------------------------------------
def _fit_plane(points: np.ndarray) -> tuple[np.ndarray, float]:
    centre = points.mean(axis=0)
    normal = np.linalg.svd(points - centre, full_matrices=False)[2][-1]
    if normal[np.argmax(np.abs(normal))] < 0:
        normal = -normal
    return normal, float(normal @ centre)


def pose_convention_report(
    root: str | Path,
    category: str,
    split: str = "train",
    num_samples: int = 10,
    border: int = 16,
    focal_length: float = FOCAL_LENGTH,
) -> dict[str, float]:
    """How well each pose direction puts the belt of every sample on one world plane.

    The border of every image shows the conveyor belt only. For each direction the belt pixels
    of ``num_samples`` samples are back-projected to the world, a plane is fitted per sample, and
    the spread of those planes is measured: the largest angle (degrees) between their normals
    plus the spread of their offsets (metres). The belt does not move, so the right direction
    gives ~0; the wrong one gives as much as the camera poses vary.

    Returns:
        ``{"camera_to_world": spread, "world_to_camera": spread}`` (smaller is right).
    """
    frame = scan_eyecandies(root, category, splits=(split,)).head(num_samples)
    planes: dict[str, list[tuple[np.ndarray, float]]] = {"camera_to_world": [], "world_to_camera": []}
    for row in frame.itertuples():
        depth = read_depth_png(row.image_path, row.info_path)
        pose = read_pose(row.pose_path)
        ring = np.ones(depth.shape, dtype=bool)
        ring[border:-border, border:-border] = False
        for name, matrix in (("camera_to_world", pose), ("world_to_camera", np.linalg.inv(pose))):
            xyz = depth_to_xyz(depth, focal_length, matrix)
            planes[name].append(_fit_plane(xyz[ring & (depth > 0)]))
    report = {}
    for name, fitted in planes.items():
        normals = np.stack([n for n, _ in fitted])
        offsets = np.array([o for _, o in fitted])
        cosines = np.clip(np.abs(normals @ normals.T), -1.0, 1.0)
        report[name] = float(np.degrees(np.arccos(cosines.min()))) + float(offsets.max() - offsets.min())
    return report


# --------------------------------------------------------------------------------------------
# pre-flight check of Eyecandies rows
# --------------------------------------------------------------------------------------------
def _check_eyecandies_row(row: pd.Series) -> list[PointCloudError]:
    """Header-level problems of one Eyecandies sample (nothing decoded but two small YAMLs)."""
    problems: list[PointCloudError] = []
    try:
        depth = _require(Path(row.image_path), "depth PNG")
        bit_depth, colour_type = _png_header(depth)
        if bit_depth != 16 or colour_type != 0:
            problems.append(UnsupportedFormatError(
                f"depth PNG has bit depth {bit_depth} and colour type {colour_type}; Eyecandies depth is "
                "16-bit greyscale.", path=depth, fix="use the original <idx>_depth.png of the archive"))
        read_depth_info(row.info_path)
        if row.frame == "world" and not row.pose_path:
            problems.append(DatasetRootNotFoundError(
                "the sample has no pose.txt, needed for world coordinates.",
                path=depth.with_name(f"{row.sample_id}_pose.txt"), fix="restore it, or use frame='camera'"))
        size = _png_size(depth)
        companions = [("rgb_path", "RGB image"), ("mask_path", "GT mask"),
                      *((f"{t}_mask_path", f"{t} mask") for t in ANOMALY_TYPES)]
        for column, what in companions:
            path = getattr(row, column, "")
            if not path:
                continue
            _png_header(_require(Path(path), what))
            if _png_size(Path(path)) != size:
                h, w = _png_size(Path(path))
                problems.append(GroundTruthMismatchError(
                    f"{what} is {h}x{w} (HxW) but the depth map is {size[0]}x{size[1]}.", path=path,
                    fix="use the file of this sample from the archive (all items of a sample have one size)"))
    except PointCloudError as err:
        problems.append(err)
    return problems


def check_samples_with_eyecandies(
    samples: pd.DataFrame,
    mode: str = "header",
    read_item: Callable[[int], object] | None = None,
) -> list[PointCloudError]:
    """:func:`anomalib_3d.data.validation.check_samples` for tables that may hold Eyecandies rows.

    Other rows go to ``check_samples``; Eyecandies rows get their own header check (16-bit depth
    PNG, depth info, pose, every PNG of the sample the depth map's size) and, in ``"full"`` mode,
    are read with ``read_item`` (row ``i`` of ``samples``).
    """
    mode = check_mode(mode)
    is_eyecandies = (samples.kind == "eyecandies").to_numpy() if len(samples) else np.zeros(0, dtype=bool)
    problems: list[PointCloudError] = []
    others = np.flatnonzero(~is_eyecandies)
    if len(others):
        reader = None if read_item is None else (lambda i: read_item(int(others[i])))
        problems += check_samples(samples.iloc[others].reset_index(drop=True), mode, read_item=reader)
    if mode == "off":
        return problems
    for i in np.flatnonzero(is_eyecandies):
        row_problems = _check_eyecandies_row(samples.iloc[i])
        problems += row_problems
        if mode == "full" and not row_problems and read_item is not None:
            try:
                read_item(int(i))
            except PointCloudError as err:
                problems.append(err)
    return problems


def check_datamodule_data(datamodule: PointCloudDataModule, validate: str | None = None) -> list[PointCloudError]:
    """``PointCloudDataModule.check_data`` for datamodules whose tables may hold Eyecandies rows."""
    mode = check_mode(validate or datamodule.validate)
    with collect_problems() as problems:
        samples = datamodule.scan()
    datamodule.samples = samples
    datamodule.train_data = datamodule.make_dataset(samples, "train")
    datamodule.test_data = datamodule.make_dataset(samples, "test")
    for dataset in (datamodule.train_data, datamodule.test_data):
        problems.extend(check_samples_with_eyecandies(dataset.samples, mode, read_item=dataset.__getitem__))
    return problems


# --------------------------------------------------------------------------------------------
# datamodule
# --------------------------------------------------------------------------------------------
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
            if _normalise(category_name) not in {_normalise(c) for c in EYECANDIES_CATEGORIES}:
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

    def make_dataset(self, samples: pd.DataFrame, split: str) -> EyecandiesDataset:
        return EyecandiesDataset(
            samples,
            split,
            remove_background=self.remove_background,
            background_threshold=self.background_threshold,
            grid_size=self.grid_size,
            name=self.name,
        )

    def check_data(self, validate: str | None = None) -> list[PointCloudError]:
        """Scan and pre-flight check (see :func:`check_samples_with_eyecandies`)."""
        return check_datamodule_data(self, validate)

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
