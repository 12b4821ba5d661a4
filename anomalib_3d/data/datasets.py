"""Point-cloud datasets: one :class:`PointCloudDataset` that reads rows of a samples table, and
one *layout scanner* per public dataset that builds that table from the real on-disk layout.

A samples table (pandas) has anomalib's columns plus ours:

============  =================================================================================
column        meaning
============  =================================================================================
image_path    the sample's main file (``.pcd`` or ``xyz/*.tiff``); anomalib sorts / checks on it
split         ``train`` | ``test`` (``validation`` for MVTec's own validation folder)
label_index   0 good, 1 anomalous
category      object category
defect_type   ``good`` or the defect name parsed from the layout
kind          ``cloud`` (unorganized file) or ``organized`` (xyz grid)
mask_path     GT: Real3D-AD/Anomaly-ShapeNet ``.txt`` (``x y z label``) or MVTec ``gt/*.png``; "" if none
rgb_path      MVTec ``rgb/*.png``; "" if none
============  =================================================================================

Layouts (documented in the README):

* Real3D-AD: ``<root>/<cat>/train/*.pcd`` (templates), ``<cat>/test/*.pcd``, ``<cat>/gt/<stem>.txt``;
  a test sample without a GT file is good.
* Anomaly-ShapeNet (v2 release, ``dataset/pcd``): ``<root>/<cat>/train/*template*.pcd``,
  ``<cat>/test/<cat>_<defect><k>.pcd`` (``positive`` = good), ``<cat>/GT/<stem>.txt``.
* MVTec 3D-AD: ``<root>/<cat>/{train,validation}/good/{rgb,xyz}/NNN.{png,tiff}``,
  ``<cat>/test/<defect>/{rgb,xyz,gt}/NNN.{png,tiff,png}``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from anomalib.data.datasets.base.image import AnomalibDataset

from anomalib_3d.data.adapters import organized_to_item, resize_organized, valid_pixel_mask
from anomalib_3d.data.dataclasses import PointCloudBatch, PointCloudItem
from anomalib_3d.data.errors import (
    CorruptFileError,
    DatasetRootNotFoundError,
    EmptySplitError,
    GroundTruthMismatchError,
    MisalignedFileError,
    PointCloudError,
    UnknownCategoryError,
)
from anomalib_3d.data.validation import report_problem

logger = logging.getLogger(__name__)

CLOUD_SUFFIXES = (".pcd", ".ply", ".xyz", ".txt", ".pts", ".npy")
DEFECT_WORDS = ("bulge", "concavity", "sink", "hole", "break", "broken", "bending", "bend", "crack", "scratch")
_GOOD_WORDS = ("good", "positive", "normal", "template", "prototype")
COLUMNS = ["image_path", "split", "label_index", "category", "defect_type", "kind", "mask_path", "rgb_path"]


# --------------------------------------------------------------------------------------------
# layout scanners
# --------------------------------------------------------------------------------------------
def _require_dir(path: Path, what: str, fix: str) -> Path:
    if path.is_file():
        raise DatasetRootNotFoundError(f"{what} is a file, not a folder.", path=path, fix=fix)
    if not path.is_dir():
        raise DatasetRootNotFoundError(f"{what} does not exist.", path=path, fix=fix)
    return path


def check_category_name(category: object, root: str | Path | None = None) -> str:
    """A category must be a plain folder name (not empty, not ``.``/``..``, no path separator)."""
    if not isinstance(category, str) or not category.strip() or category in {".", ".."} or "/" in category or "\\" in category:
        raise UnknownCategoryError(
            f"category {category!r} is not a category name.",
            path=root,
            fix="pass the name of one category folder under the root (e.g. category='duck'), or a list of them.",
        )
    return category


def _require_category(root: Path, category: str, dataset: str, fix: str) -> Path:
    check_category_name(category, root)
    _require_dir(root, f"the {dataset} root", fix)
    folder = root / category
    if not folder.is_dir():
        available = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise UnknownCategoryError(
            f"category '{category}' is not in the {dataset} root (found: {', '.join(available) or 'nothing'}).",
            path=root,
            fix="pass one of the listed categories, or point root at the folder holding the category folders",
        )
    return folder


def parse_defect_type(stem: str, category: str = "") -> str:
    """Defect name from a file stem like ``12_bulge``, ``ashtray0_concavity3`` or ``482_bulge_cut``.

    Returns the defect word, ``"good"`` for a good word (``good``, ``positive``, ``normal``,
    ``template``, ``prototype``), or ``"anomaly"`` when the name says neither.
    """
    text = stem.lower()
    if category:
        text = text.replace(category.lower(), " ")
    for word in DEFECT_WORDS:
        if re.search(rf"(^|[^a-z]){word}", text):
            return {"broken": "break", "bend": "bending", "sink": "concavity"}.get(word, word)
    if any(w in text for w in _GOOD_WORDS):
        return "good"
    return "anomaly"


def list_sample_files(folder: Path, suffixes: Sequence[str], what: str = "sample") -> list[Path]:
    """The sample files of ``folder`` (suffix matched case-insensitively), sorted.

    Entries named like a sample that cannot be one — a dangling symbolic link, a symbolic-link
    loop, a directory called ``x.pcd`` — are reported (:func:`report_problem`), never skipped;
    other visible files are logged once per folder as ignored.
    """
    files: list[Path] = []
    ignored: list[str] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.suffix.lower() not in suffixes:
            if not entry.is_dir():
                ignored.append(entry.name)
            continue
        try:
            entry.stat()
        except OSError as err:
            loop = "loop" in str(err).lower() or getattr(err, "errno", None) == 40
            target = entry.readlink() if entry.is_symlink() else "?"
            report_problem(DatasetRootNotFoundError(
                f"is a {'symbolic-link loop' if loop else 'dangling symbolic link'} (-> {target}); "
                f"the {what} file cannot be read.",
                path=entry,
                fix="point the link at the real file (or remove it, if the sample should not be used).",
            ))
            continue
        if entry.is_dir():
            report_problem(CorruptFileError(
                f"is a directory named like a {what} file.",
                path=entry,
                fix="move the real file here or rename the folder (it is not a sample).",
            ))
            continue
        files.append(entry)
    if ignored:
        logger.info("%s: ignoring %d non-%s file(s): %s", folder, len(ignored), what, ", ".join(ignored[:5]))
    return files


def _cloud_files(folder: Path) -> list[Path]:
    return list_sample_files(folder, CLOUD_SUFFIXES, "point-cloud")


def _gt_file(gt_dir: Path | None, stem: str) -> Path | None:
    if gt_dir is None:
        return None
    for entry in (gt_dir / f"{stem}.txt", gt_dir / f"{stem}.TXT"):
        if entry.is_file():
            return entry
        if entry.is_symlink() or entry.is_dir():
            report_problem(DatasetRootNotFoundError(
                "ground-truth entry is a broken link or a directory.", path=entry,
                fix="restore the GT .txt from the dataset archive.",
            ))
            return None
    return None


def gt_cloud_label(stem: str, category: str, gt: Path | None, cloud: Path, gt_dirs: Sequence[Path]) -> tuple[int, str] | None:
    """Label rule of the Real3D-AD / Anomaly-ShapeNet layouts, for one test cloud.

    * GT file present: the label comes from its content (any point labelled 1 → anomalous,
      none → good). The file name, where it says something (a defect word, or good /
      positive / normal), must agree: checked when the GT is read (load time, and
      ``validate="full"``), else :class:`GroundTruthMismatchError`. A name that says nothing
      (``23.pcd``) is decided by reading its GT here.
    * No GT file: the name must say good; a defect word or a name that says nothing is a
      :class:`GroundTruthMismatchError` (the label is never guessed).

    Returns ``(label_index, defect_type)``, or ``None`` after reporting a problem.
    """
    defect = parse_defect_type(stem, category)
    if gt is None:
        if defect == "good":
            return 0, "good"
        looked = ", ".join(str(d) for d in gt_dirs) or "(no gt folder)"
        if defect == "anomaly":
            report_problem(GroundTruthMismatchError(
                f"test sample has no GT file and its name says neither good nor a defect "
                f"({', '.join(DEFECT_WORDS)}); its label is unknown (looked in {looked}).",
                path=cloud,
                fix=f"add its GT file ({stem}.txt, 'x y z label' rows; all labels 0 for a good sample), "
                    "or rename it with 'good' / a defect word.",
            ))
        else:
            report_problem(GroundTruthMismatchError(
                f"test sample looks defective ('{defect}') but has no GT file in {looked}.",
                path=cloud,
                fix="restore the GT .txt from the dataset archive (same stem as the .pcd)",
            ))
        return None
    if defect == "anomaly":
        from anomalib_3d.data.io import read_gt_txt

        try:
            _, labels = read_gt_txt(gt)
        except PointCloudError as err:
            report_problem(err)
            return None
        return (1, "anomaly") if labels.any() else (0, "good")
    return (0, "good") if defect == "good" else (1, defect)


def scan_gt_cloud_layout(
    root: str | Path,
    category: str,
    *,
    dataset: str,
    gt_dirs: Sequence[str] = ("gt", "GT"),
    train_pattern: str = "*",
) -> pd.DataFrame:
    """Samples of a Real3D-AD-style layout (``train/``, ``test/``, GT ``.txt`` beside ``test``).

    Labels follow :func:`gt_cloud_label`. Per-file problems (unlabelled samples, broken links,
    empty folders) are reported through :func:`~anomalib_3d.data.validation.report_problem`.

    Args:
        root: dataset root (the folder that holds the category folders).
        category: the category folder name.
        dataset: dataset name, for messages.
        gt_dirs: names the GT folder may have.
        train_pattern: glob restricting the training files.
    """
    root = Path(root)
    fix = f"download {dataset} and pass its extracted folder as root (see README: Datasets)"
    cat_dir = _require_category(root, category, dataset, fix)
    train_dir = _require_dir(cat_dir / "train", f"{dataset} '{category}' has no train folder; it", fix)
    test_dir = _require_dir(cat_dir / "test", f"{dataset} '{category}' has no test folder; it", fix)
    found_gt_dirs = [cat_dir / d for d in dict.fromkeys(gt_dirs) if (cat_dir / d).is_dir()]
    gt_dir = found_gt_dirs[0] if found_gt_dirs else None

    rows = []
    all_train = _cloud_files(train_dir)
    train_files = [p for p in all_train if p.match(train_pattern)] or all_train
    for path in train_files:
        rows.append([str(path), "train", 0, category, "good", "cloud", "", ""])
    test_files = _cloud_files(test_dir)
    for path in test_files:
        gt = _gt_file(gt_dir, path.stem)
        decided = gt_cloud_label(path.stem, category, gt, path, found_gt_dirs)
        if decided is None:
            continue
        label, defect = decided
        rows.append([str(path), "test", label, category, defect, "cloud", str(gt) if gt else "", ""])
    if not all_train:
        report_problem(EmptySplitError("no point-cloud files in the train folder.", path=train_dir, fix=fix))
    if not test_files:
        report_problem(EmptySplitError("no point-cloud files in the test folder.", path=test_dir, fix=fix))
    return pd.DataFrame(rows, columns=COLUMNS)


def scan_real3d_ad(root: str | Path, category: str) -> pd.DataFrame:
    """Real3D-AD layout (``<cat>/train``, ``<cat>/test``, ``<cat>/gt``)."""
    return scan_gt_cloud_layout(root, category, dataset="Real3D-AD")


def scan_anomaly_shapenet(root: str | Path, category: str) -> pd.DataFrame:
    """Anomaly-ShapeNet layout (``<cat>/train/*template*``, ``<cat>/test``, ``<cat>/GT``)."""
    return scan_gt_cloud_layout(root, category, dataset="Anomaly-ShapeNet", gt_dirs=("GT", "gt"),
                                train_pattern="*template*")


_TIFF_SUFFIXES = (".tiff", ".tif")


def _companion(folder: Path, stem: str, suffixes: Sequence[str]) -> Path | None:
    """The file ``<folder>/<stem><suffix>`` (suffix case-insensitive), if any."""
    if not folder.is_dir():
        return None
    for entry in folder.iterdir():
        if entry.stem == stem and entry.suffix.lower() in suffixes and entry.is_file():
            return entry
    return None


def scan_mvtec3d(root: str | Path, category: str) -> pd.DataFrame:
    """MVTec 3D-AD layout: organized ``xyz`` tiffs with ``rgb`` and ``gt`` PNGs.

    Label rule: the defect folder decides (``good`` → 0, any other → 1); a defective test
    sample needs its GT mask, and the mask's content must agree (some anomalous pixel for a
    defect, none under ``good``: checked when read). File suffixes match case-insensitively.
    RGB images are optional for the whole dataset, but one missing among present ones is a
    problem (a batch cannot mix coloured and colourless clouds without losing colours).
    """
    root = Path(root)
    fix = "download MVTec 3D-AD (mvtec_3d_anomaly_detection.tar.xz) and pass its extracted folder as root"
    cat_dir = _require_category(root, category, "MVTec 3D-AD", fix)
    rows = []
    for split in ("train", "validation", "test"):
        split_dir = cat_dir / split
        if not split_dir.is_dir():
            if split == "validation":
                continue
            raise DatasetRootNotFoundError(f"MVTec 3D-AD '{category}' has no {split} folder.", path=split_dir, fix=fix)
        split_rows = 0
        for defect_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            xyz_dir = defect_dir / "xyz"
            if not xyz_dir.is_dir():
                report_problem(DatasetRootNotFoundError("expected an xyz folder here.", path=xyz_dir, fix=fix))
                continue
            good = defect_dir.name == "good"
            for xyz in list_sample_files(xyz_dir, _TIFF_SUFFIXES, "xyz TIFF"):
                rgb = _companion(defect_dir / "rgb", xyz.stem, (".png",))
                gt = _companion(defect_dir / "gt", xyz.stem, (".png",))
                if split == "test" and not good and gt is None:
                    report_problem(GroundTruthMismatchError(
                        "defective test sample has no gt mask.", path=defect_dir / "gt" / f"{xyz.stem}.png",
                        fix="restore the gt PNG from the MVTec 3D-AD archive",
                    ))
                    continue
                rows.append([
                    str(xyz), split, 0 if good else 1, category, defect_dir.name, "organized",
                    str(gt) if gt is not None else "", str(rgb) if rgb is not None else "",
                ])
                split_rows += 1
        if split_rows == 0 and split != "validation":
            report_problem(EmptySplitError(
                f"MVTec 3D-AD '{category}' has no xyz/*.tiff samples in its {split} split.", path=split_dir, fix=fix,
            ))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if len(frame) and (frame.rgb_path != "").any():
        for row in frame[frame.rgb_path == ""].itertuples(index=False):
            xyz = Path(row.image_path)
            report_problem(MisalignedFileError(
                "sample has no RGB image while the other samples of the category have one.",
                path=xyz.parent.parent / "rgb" / f"{xyz.stem}.png",
                fix="restore the rgb PNG from the MVTec 3D-AD archive (colours cannot be batched "
                    "for some clouds only).",
            ))
        frame = frame[frame.rgb_path != ""].reset_index(drop=True)
    return frame


SCANNERS: dict[str, Callable[[str | Path, str], pd.DataFrame]] = {
    "real3d_ad": scan_real3d_ad,
    "anomaly_shapenet": scan_anomaly_shapenet,
    "mvtec3d": scan_mvtec3d,
}


# --------------------------------------------------------------------------------------------
# background removal (BTF)
# --------------------------------------------------------------------------------------------
def remove_background_plane(
    xyz: np.ndarray,
    *,
    distance_threshold: float = 0.005,
    border: int = 10,
    seed: int = 0,
) -> np.ndarray:
    """Mask of the pixels that are *not* the support plane, as in BTF's preprocessing.

    The plane is fitted robustly (RANSAC) on the valid pixels of a ``border``-pixel frame around
    the image, where MVTec 3D-AD shows only the support surface; every pixel within
    ``distance_threshold`` (metres) of that plane is background. A plain least-squares fit would
    be dragged by the object; a RANSAC on all pixels can lock onto a flat object top.

    Args:
        xyz: (H, W, 3) float organized grid.

    Returns:
        (H, W) bool: True = keep (valid and off the plane).
    """
    valid = valid_pixel_mask(torch.from_numpy(xyz)).numpy()
    frame = np.zeros_like(valid)
    frame[:border], frame[-border:], frame[:, :border], frame[:, -border:] = True, True, True, True
    candidates = xyz[valid & frame]
    if candidates.shape[0] < 3:
        return valid
    rng = np.random.default_rng(seed)
    best_inliers, best = -1, None
    for _ in range(200):
        p = candidates[rng.choice(candidates.shape[0], 3, replace=False)]
        normal = np.cross(p[1] - p[0], p[2] - p[0])
        norm = np.linalg.norm(normal)
        if norm < 1e-12:
            continue
        normal /= norm
        inliers = int((np.abs((candidates - p[0]) @ normal) < distance_threshold).sum())
        if inliers > best_inliers:
            best_inliers, best = inliers, (normal, p[0])
    if best is None:
        return valid
    # Refine on the inliers with least squares (SVD of the centred inliers).
    normal, origin = best
    inl = candidates[np.abs((candidates - origin) @ normal) < distance_threshold]
    centre = inl.mean(axis=0)
    normal = np.linalg.svd(inl - centre, full_matrices=False)[2][-1]
    distance = np.abs((xyz - centre) @ normal)
    return valid & (distance > distance_threshold)


# --------------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------------
class PointCloudDataset(AnomalibDataset):
    """Reads the rows of a samples table into :class:`PointCloudItem` objects.

    Args:
        samples: the samples table (see module docstring).
        split: keep only rows of this split (``None`` keeps all).
        remove_background: organized samples: drop the support plane (BTF preprocessing).
        background_threshold: distance to the plane under which a point is background.
        grid_size: organized samples: nearest-resize the xyz grid (and RGB/GT) to (H, W) first;
            ``None`` keeps the native resolution.
        align_gt: unorganized samples: when the GT file's coordinates are a permutation of the
            cloud's, re-order the labels by exact nearest match (some releases store them
            in a different order); otherwise a mismatch raises.
        columns: text/``.npy`` clouds: the column layout (see
            :func:`~anomalib_3d.data.io.read_point_cloud`); ``None`` infers it.

    Label rule: a sample's label must agree with its GT content (``GroundTruthMismatchError``
    otherwise), checked whenever a GT file is read: see :func:`gt_cloud_label` and
    :func:`scan_mvtec3d`.
    """

    def __init__(
        self,
        samples: pd.DataFrame,
        split: str | None = None,
        *,
        remove_background: bool = False,
        background_threshold: float = 0.005,
        grid_size: tuple[int, int] | None = None,
        align_gt: bool = True,
        name: str = "point_cloud",
        columns: str | None = None,
    ) -> None:
        super().__init__(augmentations=None)
        if split is not None:
            samples = samples[samples.split == split].reset_index(drop=True)
        samples = samples.copy()
        samples.attrs["task"] = "segmentation"
        self.samples = samples
        self.remove_background = remove_background
        self.background_threshold = background_threshold
        self.grid_size = tuple(grid_size) if grid_size is not None else None
        self.align_gt = align_gt
        self.columns = columns
        self._name = name
        categories = sorted(set(samples.category)) if len(samples) else []
        self.category = "+".join(categories)

    @property
    def name(self) -> str:
        return self._name

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
        if self.grid_size is not None:
            from anomalib_3d.data.adapters import resize_nearest

            xyz_t = resize_organized(xyz_t, self.grid_size)
            rgb_t = None if rgb_t is None else resize_nearest(rgb_t, self.grid_size)
            gt_t = resize_nearest(gt_t, self.grid_size)
        keep = None
        if self.remove_background:
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


__all__ = [
    "COLUMNS",
    "PointCloudDataset",
    "SCANNERS",
    "check_category_name",
    "gt_cloud_label",
    "list_sample_files",
    "parse_defect_type",
    "remove_background_plane",
    "scan_anomaly_shapenet",
    "scan_mvtec3d",
    "scan_real3d_ad",
]
