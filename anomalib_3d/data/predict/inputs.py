"""What a predict path names: one file, a folder (searched recursively) or a glob pattern.

Scans are the point-cloud files (``.pcd .ply .xyz .txt .pts .npy``) and organized xyz TIFFs. A
TIFF takes the RGB image of its own stem as colour: ``scan.png`` next to ``scan.tiff``, or, in the
MVTec 3D-AD layout (``.../xyz/000.tiff``), ``.../rgb/000.png``; MVTec's ``gt/`` masks are
recognised and not read (predict has no ground truth). Every other file of a folder is *rejected*
with an :class:`~anomalib_3d.errors.UnsupportedFormatError` that ends up in ``predictions.csv``,
so nothing disappears without a line; hidden files (``.name``) are counted in one log line.

:func:`holds_point_clouds` is the rule that sends a path to our point-cloud dataset rather than to
anomalib's image ``PredictDataset``: at least one cloud file, or one TIFF whose header is an
``(H, W, 3)`` float grid (a TIFF photo stays an image).
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path

from anomalib_3d.data.io import IMAGE_EXTENSIONS, POINT_CLOUD_EXTENSIONS, TIFF_EXTENSIONS
from anomalib_3d.errors import DatasetRootNotFoundError, EmptySplitError, PointCloudError, UnsupportedFormatError

logger = logging.getLogger(__name__)

#: Suffixes read as scans (TIFFs as organized xyz grids).
SCAN_SUFFIXES = (*POINT_CLOUD_EXTENSIONS, *TIFF_EXTENSIONS)
_RGB_SUFFIXES = tuple(s for s in IMAGE_EXTENSIONS if s not in TIFF_EXTENSIONS)
_GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class PredictInput:
    """One scan to predict.

    Attributes:
        path: the scan file.
        kind: ``"cloud"`` (unorganized file) or ``"organized"`` (xyz TIFF).
        rgb_path: the RGB image of an organized scan, if there is one.
        relative: ``path`` relative to the predict root; output files are named after it.
    """

    path: Path
    kind: str
    rgb_path: Path | None
    relative: Path


@dataclass
class PredictInputs:
    """Everything a predict path names.

    Attributes:
        root: the folder that relative names start from (the folder given, a file's folder, or a
            glob's fixed prefix).
        scans: the scans, sorted by path.
        rejected: ``(file, error)`` of the files that are not scans.
        companions: RGB images and MVTec GT masks that belong to a scan (not predicted themselves).
        hidden: hidden files that were passed over.
    """

    root: Path
    scans: list[PredictInput] = field(default_factory=list)
    rejected: list[tuple[Path, PointCloudError]] = field(default_factory=list)
    companions: list[Path] = field(default_factory=list)
    hidden: list[Path] = field(default_factory=list)


def is_glob(path: str | Path) -> bool:
    """Whether ``path`` is a glob pattern (holds ``*``, ``?`` or ``[``)."""
    return any(char in _GLOB_CHARACTERS for char in str(path))


def _glob_root(pattern: str) -> Path:
    """The longest leading part of ``pattern`` without glob characters."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if is_glob(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path()


def _hidden(path: Path, root: Path) -> bool:
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = (path.name,)
    return any(part.startswith(".") for part in parts)


def _candidates(path: str | Path) -> tuple[Path, list[Path]]:
    """``(root, files)`` named by ``path`` (sorted; folders searched recursively).

    Raises:
        DatasetRootNotFoundError: the path (or every match of a pattern) does not exist.
    """
    text = str(path)
    if is_glob(text):
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
        files = sorted({f for m in matches for f in ([m] if m.is_file() else sorted(m.rglob("*")))
                        if f.is_file()})
        if not files:
            raise DatasetRootNotFoundError(
                "the pattern matches no file.", text, "check the pattern (quote it so the shell does not expand it)."
            )
        return _glob_root(text), files
    path = Path(path)
    if path.is_file():
        return path.parent, [path]
    if path.is_dir():
        return path, sorted(f for f in path.rglob("*") if f.is_file())
    raise DatasetRootNotFoundError(
        "no such file or folder to predict.", path, "pass a scan file, a folder of scans or a glob pattern."
    )


def _rgb_of(tiff: Path) -> Path | None:
    """The RGB image that belongs to organized scan ``tiff`` (same stem; MVTec's ``rgb/`` folder)."""
    for suffix in _RGB_SUFFIXES:
        for name in (f"{tiff.stem}{suffix}", f"{tiff.stem}{suffix.upper()}"):
            candidate = tiff.with_name(name)
            if candidate.is_file():
                return candidate
    if tiff.parent.name.lower() == "xyz":
        candidate = tiff.parent.parent / "rgb" / f"{tiff.stem}.png"
        if candidate.is_file():
            return candidate
    return None


def _mvtec_gt_of(tiff: Path) -> Path | None:
    if tiff.parent.name.lower() != "xyz":
        return None
    candidate = tiff.parent.parent / "gt" / f"{tiff.stem}.png"
    return candidate if candidate.is_file() else None


def list_predict_inputs(path: str | Path) -> PredictInputs:
    """Sort the files that ``path`` names into scans, companions, rejected and hidden files.

    Args:
        path: a scan file, a folder (recursive) or a glob pattern (``"scans/**/*.pcd"``).

    Returns:
        :class:`PredictInputs`.

    Raises:
        DatasetRootNotFoundError: nothing exists at ``path``.
        UnsupportedFormatError: ``path`` is a single file that is not a scan.
        EmptySplitError: the folder or pattern holds no scan at all.
    """
    root, files = _candidates(path)
    inputs = PredictInputs(root=root, hidden=[f for f in files if _hidden(f, root)])
    hidden = set(inputs.hidden)
    visible = [f for f in files if f not in hidden]
    companions: set[Path] = set()
    for file in visible:
        if file.suffix.lower() not in SCAN_SUFFIXES:
            continue
        kind = "organized" if file.suffix.lower() in TIFF_EXTENSIONS else "cloud"
        rgb = _rgb_of(file) if kind == "organized" else None
        gt = _mvtec_gt_of(file) if kind == "organized" else None
        companions.update(p for p in (rgb, gt) if p is not None)
        relative = file.relative_to(root) if file.is_relative_to(root) else Path(file.name)
        inputs.scans.append(PredictInput(file, kind, rgb, relative))
    inputs.companions = sorted(companions)
    for file in visible:
        if file.suffix.lower() in SCAN_SUFFIXES or file in companions:
            continue
        inputs.rejected.append((file, UnsupportedFormatError(
            f"not a scan: {file.suffix or 'a file without extension'} is not a point-cloud format"
            + (" (an image without an xyz .tiff of the same stem)." if file.suffix.lower() in IMAGE_EXTENSIONS else "."),
            file,
            f"predict reads {', '.join(POINT_CLOUD_EXTENSIONS)} clouds and organized xyz .tiff scans (with an RGB "
            ".png of the same stem); a folder of images alone goes to anomalib's image models.",
        )))
    if not is_glob(path) and Path(path).is_file() and inputs.rejected:
        raise inputs.rejected[0][1]
    if not inputs.scans:
        raise EmptySplitError(
            f"holds no scan ({len(files)} files, none of them {', '.join(SCAN_SUFFIXES)}).",
            Path(str(path)),
            "point predict at the folder of scans (or at one scan file).",
        )
    return inputs


def holds_point_clouds(path: str | Path) -> bool:
    """Whether ``path`` names point clouds (our predict dataset) rather than images (anomalib's).

    True when some file has a point-cloud suffix, or a TIFF's header is an ``(H, W, 3)`` float
    grid. A path that does not exist is not ours (anomalib's dataset reports it).
    """
    from anomalib_3d.data.io import read_organized_xyz_header

    try:
        root, files = _candidates(path)
    except PointCloudError:
        return False
    tiffs = []
    for file in files:
        if _hidden(file, root):
            continue
        suffix = file.suffix.lower()
        if suffix in POINT_CLOUD_EXTENSIONS:
            return True
        if suffix in TIFF_EXTENSIONS:
            tiffs.append(file)
    for tiff in tiffs:
        try:
            read_organized_xyz_header(tiff)
        except PointCloudError:
            continue
        return True
    return False


__all__ = ["SCAN_SUFFIXES", "PredictInput", "PredictInputs", "holds_point_clouds", "is_glob", "list_predict_inputs"]
