"""Layout scanners: one function per public dataset that builds the samples table (see
:mod:`anomalib_3d.data.datasets`) from the real on-disk layout.

Layouts (documented in the README):

* Real3D-AD: ``<root>/<cat>/train/*.pcd`` (templates), ``<cat>/test/*.pcd``, ``<cat>/gt/<stem>.txt``;
  a test sample without a GT file is good.
* Anomaly-ShapeNet (v2 release, ``dataset/pcd``): ``<root>/<cat>/train/*template*.pcd``,
  ``<cat>/test/<cat>_<defect><k>.pcd`` (``positive`` = good), ``<cat>/GT/<stem>.txt``.
* MVTec 3D-AD: ``<root>/<cat>/{train,validation}/good/{rgb,xyz}/NNN.{png,tiff}``,
  ``<cat>/test/<defect>/{rgb,xyz,gt}/NNN.{png,tiff,png}``.

Per-file problems are reported through :func:`~anomalib_3d.data.validation.report_problem`
(collected by the pre-flight check, else raised at once); nothing is dropped silently.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from anomalib_3d.data.io import POINT_CLOUD_EXTENSIONS, TIFF_EXTENSIONS
from anomalib_3d.data.validation import report_problem
from anomalib_3d.errors import (
    CorruptFileError,
    DatasetRootNotFoundError,
    EmptySplitError,
    GroundTruthMismatchError,
    MisalignedFileError,
    PointCloudError,
    UnknownCategoryError,
)

logger = logging.getLogger(__name__)

CLOUD_SUFFIXES = POINT_CLOUD_EXTENSIONS
DEFECT_WORDS = ("bulge", "concavity", "sink", "hole", "break", "broken", "bending", "bend", "crack", "scratch")
_GOOD_WORDS = ("good", "positive", "normal", "template", "prototype")
COLUMNS = ["image_path", "split", "label_index", "category", "defect_type", "kind", "mask_path", "rgb_path"]
"""The columns every samples table has (see :mod:`anomalib_3d.data.datasets`)."""


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
            for xyz in list_sample_files(xyz_dir, TIFF_EXTENSIONS, "xyz TIFF"):
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
