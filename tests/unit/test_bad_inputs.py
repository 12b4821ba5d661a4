"""Every bad input of issue #10 as a test: a named error naming the right file, or a documented
deliberate behaviour. The cases also generate ``docs/bad_inputs.md`` (bad input → error → message):
``UPDATE_DOCS=1 pytest tests/unit/test_bad_inputs.py`` rewrites it, a plain run checks it is
up to date.

Files are written byte by byte here (not with our writers), so a writer bug cannot hide a reader bug.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from doubles.doc_tables import DOC, case_dirs, doc_message, table_head
from doubles.mvtec3d import noisy_plane_scan, write_mvtec3d_sample

from anomalib_3d.data.errors import (
    CorruptFileError,
    DatasetRootNotFoundError,
    DatasetValidationError,
    DegeneratePointCloudError,
    EmptySplitError,
    GroundTruthMismatchError,
    InvalidPointsError,
    MisalignedFileError,
    PointCloudError,
    UnknownCategoryError,
)
from anomalib_3d.data.io import read_gt_txt, read_point_cloud


# ----------------------------------------------------------------------------------------------
# hand-made files
# ----------------------------------------------------------------------------------------------
def pcd_header(n: int, data: str, *, fields="x y z", size="4 4 4", type_="F F F", count="1 1 1",
               width: int | None = None, height: int = 1) -> bytes:
    return (
        f"# .PCD v0.7\nVERSION 0.7\nFIELDS {fields}\nSIZE {size}\nTYPE {type_}\nCOUNT {count}\n"
        f"WIDTH {n if width is None else width}\nHEIGHT {height}\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {data}\n"
    ).encode()


def ascii_rows(points: np.ndarray) -> bytes:
    return "".join(f"{x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in points).encode()


def sphere(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def ply_ascii(header_vertex_line: str, body: str, props: str = "property float x\nproperty float y\nproperty float z\n") -> bytes:
    return f"ply\nformat ascii 1.0\n{header_vertex_line}\n{props}end_header\n{body}".encode()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_pcd(path: Path, points: np.ndarray) -> Path:
    return write(path, pcd_header(len(points), "ascii") + ascii_rows(points))


def real3d_tree(root: Path, *, gt_for_good: bool = False) -> Path:
    """<root>/duck/{train,test,gt}: 2 templates, 1 good + 1 bulge test cloud."""
    for i in range(2):
        write_pcd(root / "duck" / "train" / f"{i}_template.pcd", sphere(64, i))
    write_pcd(root / "duck" / "test" / "10_good.pcd", sphere(64, 10))
    pts = sphere(64, 20)
    write_pcd(root / "duck" / "test" / "20_bulge.pcd", pts)
    (root / "duck" / "gt").mkdir(parents=True, exist_ok=True)
    np.savetxt(root / "duck" / "gt" / "20_bulge.txt", np.c_[pts, pts[:, 2] > 0.5], fmt="%.6f %.6f %.6f %d")
    if gt_for_good:
        good = sphere(64, 10)
        np.savetxt(root / "duck" / "gt" / "10_good.txt", np.c_[good, np.zeros(64)], fmt="%.6f %.6f %.6f %d")
    return root


def mvtec_tree(root: Path, h: int = 16, w: int = 16) -> Path:
    """<root>/bagel/{train/good, test/good, test/crack} with xyz, rgb and gt."""
    rng = np.random.default_rng(0)

    def sample(split: str, defect: str, idx: int, gt: bool) -> None:
        xyz, rgb = noisy_plane_scan(h, w, rng)
        mask = None
        if gt:
            mask = np.zeros((h, w), bool)
            mask[4:8, 4:8] = defect != "good"
        write_mvtec3d_sample(root / "bagel" / split / defect, idx, xyz, rgb, mask)

    for i in range(2):
        sample("train", "good", i, False)
    sample("test", "good", 0, True)
    sample("test", "crack", 0, True)
    return root


def real3d(root: Path, **kwargs) -> Callable[[], object]:
    from anomalib_3d.data.datamodules import Real3DAD

    return lambda: Real3DAD(root=root, category=kwargs.pop("category", "duck"), **kwargs).setup()


def mvtec(root: Path, **kwargs) -> Callable[[], object]:
    from anomalib_3d.data.datamodules import MVTec3DPointCloud

    return lambda: MVTec3DPointCloud(root=root, category="bagel", remove_background=False, grid_size=None, **kwargs).setup()


def load_all(root: Path, module: str = "real3d") -> Callable[[], object]:
    """Set up with the header check off, then read every sample (load-time checks)."""
    from anomalib_3d.data.datamodules import MVTec3DPointCloud, Real3DAD

    def run() -> None:
        if module == "real3d":
            dm = Real3DAD(root=root, category="duck", validate="off")
        else:
            dm = MVTec3DPointCloud(root=root, category="bagel", remove_background=False, grid_size=None, validate="off")
        dm.setup()
        for data in (dm.train_data, dm.test_data):
            for i in range(len(data)):
                data[i]

    return run


# ----------------------------------------------------------------------------------------------
# the cases: (bad input, build(tmp) -> action, error class, message regex, file the message names)
# ----------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    what: str
    build: Callable[[Path], tuple[Callable[[], object], str]]
    error: type[PointCloudError]
    match: str


def _reader(path: Path, reader: Callable = read_point_cloud) -> tuple[Callable[[], object], str]:
    return (lambda: reader(path)), path.name


def _pcd_binary_over_ascii(tmp: Path):
    return _reader(write(tmp / "c.pcd", pcd_header(2048, "binary") + ascii_rows(sphere(2048))))


def _pcd_type_i(tmp: Path):
    return _reader(write(tmp / "c.pcd", pcd_header(64, "binary", type_="I I I") + sphere(64).tobytes()))


def _pcd_u1(tmp: Path):
    body = np.random.default_rng(0).integers(0, 255, (64, 3), dtype=np.uint8).tobytes()
    return _reader(write(tmp / "c.pcd", pcd_header(64, "binary", size="1 1 1", type_="U U U") + body))


def _pcd_width(tmp: Path):
    return _reader(write(tmp / "c.pcd", pcd_header(64, "ascii", width=60) + ascii_rows(sphere(64))))


def _pcd_trailing_binary(tmp: Path):
    return _reader(write(tmp / "c.pcd", pcd_header(64, "binary") + sphere(64).tobytes() + b"garbage!"))


def _pcd_trailing_ascii(tmp: Path):
    return _reader(write(tmp / "c.pcd", pcd_header(64, "ascii") + ascii_rows(sphere(64)) + b"1 2 3\n"))


def _pcd_trailing_text(tmp: Path):
    return _reader(write(tmp / "c.pcd", pcd_header(64, "ascii") + ascii_rows(sphere(64)) + b"end of file\n"))


def _pcd_count0(tmp: Path):
    return _reader(write(tmp / "c.pcd", pcd_header(8, "ascii", count="1 1 0") + ascii_rows(sphere(8))))


def _pcd_compressed_huge(tmp: Path):
    n = 333_000_000
    body = struct.pack("<II", 12, n * 12) + bytes(range(12))
    path = write(tmp / "c.pcd", pcd_header(n, "binary_compressed") + body)
    return _reader(path)


def _pcd_cut_in_last_number(tmp: Path):
    body = ascii_rows(sphere(64))
    return _reader(write(tmp / "c.pcd", pcd_header(64, "ascii") + body[:-4]))


def _pcd_rgb_float_integers(tmp: Path):
    rows = "".join(f"{x:.6f} {y:.6f} {z:.6f} 4210752\n" for x, y, z in sphere(8))
    return _reader(write(tmp / "c.pcd", pcd_header(8, "ascii", fields="x y z rgb", size="4 4 4 4", type_="F F F F",
                                                   count="1 1 1 1") + rows.encode()))


def _single_point(tmp: Path):
    return _reader(write(tmp / "c.pcd", pcd_header(1, "ascii") + b"0.5 0.5 0.5\n"))


def _identical(tmp: Path):
    return _reader(write(tmp / "c.pcd", pcd_header(2048, "ascii") + b"0.1 0.2 0.3\n" * 2048))


def _huge(tmp: Path):
    pts = sphere(64)
    body = ascii_rows(pts[:-1]) + b"1e30 0 0\n"
    return _reader(write(tmp / "c.pcd", pcd_header(64, "ascii") + body))


def _overflow(tmp: Path):
    body = ascii_rows(sphere(63)) + b"1e39 0 0\n"
    return _reader(write(tmp / "c.pcd", pcd_header(64, "ascii") + body))


def _ply_ten(tmp: Path):
    return _reader(write(tmp / "c.ply", ply_ascii("element vertex ten", "0 0 0\n1 1 1\n")))


def _ply_no_count(tmp: Path):
    return _reader(write(tmp / "c.ply", ply_ascii("element vertex", "0 0 0\n1 1 1\n")))


def _ply_token(tmp: Path):
    return _reader(write(tmp / "c.ply", ply_ascii("element vertex 2", "0 0 0\n1 abc 1\n")))


def _ply_trailing(tmp: Path):
    return _reader(write(tmp / "c.ply", ply_ascii("element vertex 2", "0 0 0\n1 1 1\n2 2 2\n")))


def _decimal_comma(tmp: Path):
    return _reader(write(tmp / "c.xyz", b"15,68 21,31 11,08\n16,01 20,99 11,10\n"))


def _npy_huge(tmp: Path):
    path = tmp / "c.npy"
    np.save(path, sphere(4))
    raw = path.read_bytes()
    header_end = raw.index(b"\n") + 1
    header = raw[:header_end].replace(b"(4, 3)", b"(999999999999, 3)")
    # keep the header's padded length a multiple of 64 so numpy parses it
    header = header[:-1].rstrip(b" ")
    pad = (-(len(header) + 1)) % 64
    header = header[:8] + struct.pack("<H", len(header) + pad + 1 - 10) + header[10:] + b" " * pad + b"\n"
    return _reader(write(path, header + raw[header_end:]))


def _gt_decimal_comma(tmp: Path):
    return _reader(write(tmp / "g.txt", b"0,5 0,5 0,5 1\n"), read_gt_txt)


def _six_ambiguous(tmp: Path):
    return _reader(write(tmp / "c.xyz", b"0 0 0 1 0 0\n1 1 1 0 1 0\n"))


def _dangling(tmp: Path):
    link = tmp / "c.pcd"
    link.symlink_to(tmp / "nowhere.pcd")
    return _reader(link)


def _loop(tmp: Path):
    link = tmp / "c.pcd"
    link.symlink_to(link)
    return _reader(link)


def _dir_pcd(tmp: Path):
    (tmp / "c.pcd").mkdir()
    return _reader(tmp / "c.pcd")


# dataset-level cases ---------------------------------------------------------------------------
def _gt_positive_on_good(tmp: Path):
    root = real3d_tree(tmp / "r")
    pts = sphere(64, 10)
    np.savetxt(root / "duck" / "gt" / "10_good.txt", np.c_[pts, pts[:, 0] > 0.5], fmt="%.6f %.6f %.6f %d")
    return load_all(root), "10_good.txt"


def _gt_zero_on_defect(tmp: Path):
    root = real3d_tree(tmp / "r")
    gt = np.loadtxt(root / "duck" / "gt" / "20_bulge.txt")
    gt[:, 3] = 0
    np.savetxt(root / "duck" / "gt" / "20_bulge.txt", gt, fmt="%.6f %.6f %.6f %d")
    return load_all(root), "20_bulge.txt"


def _test_cloud_without_gt(stem: str, seed: int) -> Callable[[Path], tuple[Callable[[], object], str]]:
    """Case builder: an extra test cloud ``<stem>.pcd`` with no GT file next to it."""

    def build(tmp: Path) -> tuple[Callable[[], object], str]:
        root = real3d_tree(tmp / "r")
        write_pcd(root / "duck" / "test" / f"{stem}.pcd", sphere(64, seed))
        return real3d(root), f"{stem}.pcd"

    return build


_no_gt_neutral = _test_cloud_without_gt("23", 23)
_no_gt_unknown_word = _test_cloud_without_gt("22_dent", 22)


def _no_gt_defect(tmp: Path):
    root = real3d_tree(tmp / "r")
    (root / "duck" / "gt" / "20_bulge.txt").unlink()
    return real3d(root), "20_bulge.pcd"


def _gt_other_cloud_outlier(tmp: Path):
    root = real3d_tree(tmp / "r")
    pts = sphere(64, 20)
    other = sphere(64, 99) * 1e-3 + pts  # another cloud: ~1e-3 away everywhere
    pts[0] = other[0] = (1e6, 0, 0)  # one shared far outlier (within MAX_ABS_COORDINATE)
    write_pcd(root / "duck" / "test" / "20_bulge.pcd", pts)
    np.savetxt(root / "duck" / "gt" / "20_bulge.txt", np.c_[other, other[:, 2] > 0.5], fmt="%.6f %.6f %.6f %d")
    return load_all(root), "20_bulge.txt"


def _train_lying_header(tmp: Path):
    root = real3d_tree(tmp / "r")
    write(root / "duck" / "train" / "0_template.pcd", pcd_header(64, "binary") + ascii_rows(sphere(64)))
    return real3d(root), "0_template.pcd"


def _test_lying_header(tmp: Path):
    root = real3d_tree(tmp / "r")
    write(root / "duck" / "test" / "20_bulge.pcd", pcd_header(64, "binary", type_="I I I") + sphere(64, 20).tobytes())
    return real3d(root), "20_bulge.pcd"


def _test_dangling(tmp: Path):
    root = real3d_tree(tmp / "r")
    (root / "duck" / "test" / "30_good.pcd").symlink_to(root / "nowhere.pcd")
    return real3d(root), "30_good.pcd"


def _test_loop(tmp: Path):
    root = real3d_tree(tmp / "r")
    link = root / "duck" / "test" / "31_good.pcd"
    link.symlink_to(link)
    return real3d(root), "31_good.pcd"


def _test_dir_pcd(tmp: Path):
    root = real3d_tree(tmp / "r")
    (root / "duck" / "test" / "32_good.pcd").mkdir()
    return real3d(root), "32_good.pcd"


def _emptied_split(split: str) -> Callable[[Path], tuple[Callable[[], object], str]]:
    """Case builder: every file of ``duck/<split>`` deleted (the folder stays)."""

    def build(tmp: Path) -> tuple[Callable[[], object], str]:
        root = real3d_tree(tmp / "r")
        for p in (root / "duck" / split).iterdir():
            p.unlink()
        return real3d(root), split

    return build


_empty_test = _emptied_split("test")
_empty_train = _emptied_split("train")


def _category_empty_list(tmp: Path):
    return real3d(real3d_tree(tmp / "r"), category=[]), ""


def _category_empty(tmp: Path):
    return real3d(real3d_tree(tmp / "r"), category=""), ""


def _category_dotdot(tmp: Path):
    return real3d(real3d_tree(tmp / "r") / "duck", category=".."), ""


def _root_is_file(tmp: Path):
    write(tmp / "file.zip", b"PK")
    return real3d(tmp / "file.zip"), "file.zip"


def _mvtec_good_gt_positive(tmp: Path):
    from PIL import Image

    root = mvtec_tree(tmp / "m")
    mask = np.zeros((16, 16), np.uint8)
    mask[2:10, 2:10] = 255
    Image.fromarray(mask).save(root / "bagel" / "test" / "good" / "gt" / "000.png")
    return load_all(root, "mvtec"), "000.png"


def _mvtec_gt_size(tmp: Path):
    from PIL import Image

    root = mvtec_tree(tmp / "m")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(root / "bagel" / "test" / "crack" / "gt" / "000.png")
    return mvtec(root), "crack/gt/000.png"


def _mvtec_rgb_size(tmp: Path):
    from PIL import Image

    root = mvtec_tree(tmp / "m")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "bagel" / "train" / "good" / "rgb" / "001.png")
    return mvtec(root), "rgb/001.png"


def _mvtec_missing_rgb(tmp: Path):
    root = mvtec_tree(tmp / "m")
    (root / "bagel" / "train" / "good" / "rgb" / "001.png").unlink()
    return mvtec(root), "rgb/001.png"


def _mvtec_empty_train(tmp: Path):
    root = mvtec_tree(tmp / "m")
    for p in (root / "bagel" / "train" / "good" / "xyz").iterdir():
        p.unlink()
    return mvtec(root), "train"


def _mvtec_zero_gt_defect(tmp: Path):
    from PIL import Image

    root = mvtec_tree(tmp / "m")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "bagel" / "test" / "crack" / "gt" / "000.png")
    return load_all(root, "mvtec"), "crack/gt/000.png"


def _many_problems(tmp: Path):
    root = real3d_tree(tmp / "r")
    write(root / "duck" / "train" / "1_template.pcd", pcd_header(64, "binary") + b"\0" * 10)
    write_pcd(root / "duck" / "test" / "23.pcd", sphere(64, 23))
    return real3d(root), "1_template.pcd"


CASES = [
    Case("pcd_binary_over_ascii", "PCD `DATA binary` header over an ASCII body", _pcd_binary_over_ascii, CorruptFileError, "body is ASCII text"),
    Case("pcd_type_i", "PCD `TYPE I I I` over float32 data", _pcd_type_i, CorruptFileError, "coordinates must be floats"),
    Case("pcd_type_u1", "PCD `TYPE U` `SIZE 1` coordinates", _pcd_u1, CorruptFileError, "coordinates must be floats"),
    Case("pcd_width", "PCD `WIDTH × HEIGHT ≠ POINTS`", _pcd_width, CorruptFileError, "WIDTH 60 x HEIGHT 1"),
    Case("pcd_trailing_binary", "PCD binary body with trailing bytes", _pcd_trailing_binary, CorruptFileError, "bytes too many"),
    Case("pcd_trailing_rows", "PCD ASCII body with extra rows", _pcd_trailing_ascii, CorruptFileError, "POINTS 64 but the ASCII body has 65 rows"),
    Case("pcd_trailing_text", "PCD ASCII body with trailing text", _pcd_trailing_text, CorruptFileError, "'end' , which is not a number|'end', which is not a number"),
    Case("pcd_count0", "PCD `COUNT 0`", _pcd_count0, CorruptFileError, "COUNT 0"),
    Case("pcd_compressed_huge", "189-byte `binary_compressed` PCD claiming 333 M points", _pcd_compressed_huge, CorruptFileError, "more than LZF can expand"),
    Case("pcd_cut_last_number", "ASCII PCD cut inside its last number", _pcd_cut_in_last_number, CorruptFileError, "does not end with a newline"),
    Case("pcd_rgb_float_integers", "PCD `rgb` declared `TYPE F` holding integers", _pcd_rgb_float_integers, CorruptFileError, "colours are ambiguous"),
    Case("single_point", "a cloud of a single point", _single_point, DegeneratePointCloudError, "a single point"),
    Case("identical_points", "2048 identical points", _identical, DegeneratePointCloudError, "same position"),
    Case("huge_coordinate", "a 1e30 coordinate", _huge, DegeneratePointCloudError, "beyond 1e\\+12"),
    Case("overflow_coordinate", "a 1e39 coordinate (beyond float32)", _overflow, InvalidPointsError, "beyond the float32 range"),
    Case("ply_count_word", "PLY `element vertex ten`", _ply_ten, CorruptFileError, "'ten' is not an integer"),
    Case("ply_no_count", "PLY `element vertex` without a count", _ply_no_count, CorruptFileError, "has no element count"),
    Case("ply_token", "PLY body with a non-numeric token", _ply_token, CorruptFileError, "'abc', which is not a number"),
    Case("ply_trailing", "PLY ASCII body longer than its vertex count", _ply_trailing, CorruptFileError, "declares 2 vertices but the ASCII body has 3 rows"),
    Case("xyz_decimal_comma", "decimal-comma `.xyz` (`15,68 21,31 11,08`)", _decimal_comma, CorruptFileError, "decimal comma"),
    Case("gt_decimal_comma", "decimal-comma GT `.txt`", _gt_decimal_comma, CorruptFileError, "decimal comma"),
    Case("xyz_ambiguous", "6-column `.xyz` (colours or normals?)", _six_ambiguous, CorruptFileError, "datamodule's columns= option"),
    Case("npy_huge", "`.npy` header claiming 10^12 rows", _npy_huge, CorruptFileError, "declares shape"),
    Case("dangling_link", "a dangling symbolic link", _dangling, DatasetRootNotFoundError, "dangling symbolic link"),
    Case("link_loop", "a symbolic-link loop", _loop, DatasetRootNotFoundError, "symbolic-link loop"),
    Case("dir_named_pcd", "a directory named `*.pcd`", _dir_pcd, CorruptFileError, "is a directory"),
    Case("train_lying_header", "lying PCD header in `train/` (setup)", _train_lying_header, CorruptFileError, "body is ASCII text"),
    Case("test_lying_header", "lying PCD header in `test/` (setup; blamed on the cloud, not the GT)", _test_lying_header, CorruptFileError, "must be floats"),
    Case("gt_positive_on_good", "GT with anomalous points next to a good-named sample", _gt_positive_on_good, GroundTruthMismatchError, "is good .* marks [0-9]+ points anomalous"),
    Case("gt_zero_on_defect", "all-zero GT on a defect", _gt_zero_on_defect, GroundTruthMismatchError, "marks no points anomalous"),
    Case("no_gt_neutral_name", "test cloud `23.pcd` without GT", _no_gt_neutral, GroundTruthMismatchError, "label is unknown"),
    Case("no_gt_unknown_word", "test cloud `22_dent.pcd` without GT (unknown defect word)", _no_gt_unknown_word, GroundTruthMismatchError, "label is unknown"),
    Case("no_gt_defect", "defect-named test cloud without GT", _no_gt_defect, GroundTruthMismatchError, "looks defective"),
    Case("gt_other_cloud_outlier", "GT of another cloud sharing one far outlier", _gt_other_cloud_outlier, GroundTruthMismatchError, "do not match the cloud"),
    Case("test_dangling", "dangling symbolic link in `test/`", _test_dangling, DatasetRootNotFoundError, "dangling symbolic link"),
    Case("test_loop", "symbolic-link loop in `test/`", _test_loop, DatasetRootNotFoundError, "symbolic-link loop"),
    Case("test_dir_pcd", "directory named `*.pcd` in `test/`", _test_dir_pcd, CorruptFileError, "directory named like"),
    Case("empty_test", "empty `test/`", _empty_test, EmptySplitError, "no point-cloud files in the test folder"),
    Case("empty_train", "empty `train/`", _empty_train, EmptySplitError, "no point-cloud files in the train folder"),
    Case("category_empty_list", "`category=[]`", _category_empty_list, UnknownCategoryError, "at least one category"),
    Case("category_empty", "`category=\"\"`", _category_empty, UnknownCategoryError, "is not a category name"),
    Case("category_dotdot", "`category=\"..\"`", _category_dotdot, UnknownCategoryError, "is not a category name"),
    Case("root_is_file", "a file given as `root`", _root_is_file, DatasetRootNotFoundError, "is a file, not a folder"),
    Case("mvtec_good_gt_positive", "MVTec `test/good/gt/000.png` with defect pixels", _mvtec_good_gt_positive, GroundTruthMismatchError, "is good .* marks 64 pixels anomalous"),
    Case("mvtec_zero_gt_defect", "MVTec all-zero GT mask on a defect", _mvtec_zero_gt_defect, GroundTruthMismatchError, "marks no pixels anomalous"),
    Case("mvtec_gt_size", "MVTec GT PNG of another size than the xyz grid", _mvtec_gt_size, GroundTruthMismatchError, "GT mask is 8x8"),
    Case("mvtec_rgb_size", "MVTec RGB PNG of another size than the xyz grid", _mvtec_rgb_size, MisalignedFileError, "RGB image is 8x8"),
    Case("mvtec_missing_rgb", "one missing MVTec RGB PNG", _mvtec_missing_rgb, MisalignedFileError, "no RGB image"),
    Case("mvtec_empty_train", "MVTec `train/` without TIFFs", _mvtec_empty_train, EmptySplitError, "no xyz/\\*.tiff samples in its train split"),
    Case("many_problems", "several bad files at once (pre-flight)", _many_problems, DatasetValidationError, "2 problem\\(s\\)"),
]


def _run(case: Case, tmp: Path) -> PointCloudError:
    action, names = case.build(tmp)
    with pytest.raises(case.error, match=case.match) as info:
        action()
    error = info.value
    assert type(error).__name__ != "PointCloudError" or case.error is PointCloudError
    if names:  # the message names the right file (or folder)
        assert names in str(error), f"{case.name}: message does not name {names}: {error}"
    return error


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_raises_named_error_naming_the_file(tmp_path: Path, case: Case) -> None:
    _run(case, tmp_path)


def test_bad_inputs_table_is_up_to_date(tmp_path: Path) -> None:
    lines = [
        "# Bad inputs and what they raise",
        "",
        "Generated by `tests/unit/test_bad_inputs.py` (`UPDATE_DOCS=1 pytest tests/unit/test_bad_inputs.py`",
        "rewrites it; a plain run fails when it is out of date). Every error is a",
        "`anomalib_3d.data.errors.PointCloudError` (a `ValueError`) whose message names the file, the",
        "problem and the fix. Paths are relative to the dataset folder of each case.",
        "",
        "Deliberate behaviours that are not errors: a GT file with all-zero labels next to a good",
        "sample keeps it good; upper-case suffixes (`.PCD`, `.TIFF`) are accepted; clouds with and",
        "without colours in one batch lose their colours for that batch (one warning naming the files",
        "without; the pre-flight check warns about the dataset once).",
        "",
        "When: every datamodule runs a pre-flight check at `setup()` (`validate=\"header\"`, default: the",
        "layout scan plus every file's header and binary body size, seconds for a Real3D-AD-size tree;",
        "`validate=\"full\"`: every sample read as in training, which adds the body and GT-content rows",
        "below; `validate=\"off\"`). All problems come at once in one `DatasetValidationError` listing",
        "every file (a single problem is raised as itself). Stand-alone:",
        "`python -m anomalib_3d check-data --data Real3DAD --data.root R --data.category C [--validate full]`.",
        "Errors raised in DataLoader workers keep their `.path` and `.fix`.",
        "",
        "Label rules: Real3D-AD / Anomaly-ShapeNet: a GT file decides by its content (any point labelled 1",
        "= anomalous) and a name that says good or a defect must agree; without GT the name must say good.",
        "MVTec 3D-AD: the defect folder decides and the GT mask must agree (no anomalous pixel under",
        "`good`, some under a defect).",
        "",
        *table_head("bad input"),
    ]
    for case, tmp in case_dirs(tmp_path, CASES, "case"):
        error = _run(case, tmp)
        message = doc_message(str(error), tmp)
        if isinstance(error, DatasetValidationError):
            first = doc_message(str(error.problems[0]), tmp)
            message = message.split(" - ")[0] + f" - {type(error.problems[0]).__name__}: {first} - … (one line per file)"
        lines.append(f"| {case.what} | `{type(error).__name__}` | {message} |")
    text = "\n".join(lines) + "\n"
    # The "Faults during work" section below the table belongs to tests/integration/test_faults.py.
    faults = DOC.read_text().partition("\n## Faults during work")[1:] if DOC.is_file() else ("", "")
    if os.environ.get("UPDATE_DOCS") == "1":
        DOC.write_text(text + "".join(faults))
    assert DOC.is_file(), "docs/bad_inputs.md is missing: run with UPDATE_DOCS=1"
    assert DOC.read_text().partition("\n## Faults during work")[0] == text, "docs/bad_inputs.md is out of date: run with UPDATE_DOCS=1"


# ----------------------------------------------------------------------------------------------
# deliberate behaviours (not errors)
# ----------------------------------------------------------------------------------------------
def test_all_zero_gt_next_to_good_sample_keeps_it_good(tmp_path: Path) -> None:
    from anomalib_3d.data.datamodules import Real3DAD

    root = real3d_tree(tmp_path / "r", gt_for_good=True)
    dm = Real3DAD(root=root, category="duck", validate="full")
    dm.setup()
    rows = dm.test_data.samples.set_index(dm.test_data.samples.image_path.map(lambda p: Path(p).name))
    assert int(rows.loc["10_good.pcd"].label_index) == 0 and int(rows.loc["20_bulge.pcd"].label_index) == 1
    for i in range(len(dm.test_data)):
        item = dm.test_data[i]
        assert int(item.gt_label) == int(item.gt_mask.any())


def test_neutral_name_with_gt_is_labelled_by_its_gt_content(tmp_path: Path) -> None:
    from anomalib_3d.data.datamodules import Real3DAD

    root = real3d_tree(tmp_path / "r")
    for stem, positive in (("40", False), ("41", True)):
        pts = sphere(64, int(stem))
        write_pcd(root / "duck" / "test" / f"{stem}.pcd", pts)
        np.savetxt(root / "duck" / "gt" / f"{stem}.txt", np.c_[pts, (pts[:, 0] > 0.5) & positive], fmt="%.6f %.6f %.6f %d")
    dm = Real3DAD(root=root, category="duck", validate="full")
    dm.setup()
    labels = dict(zip(dm.test_data.samples.image_path.map(lambda p: Path(p).stem), dm.test_data.samples.label_index))
    assert labels["40"] == 0 and labels["41"] == 1


def test_upper_case_suffixes_are_accepted(tmp_path: Path) -> None:
    from anomalib_3d.data.datamodules import MVTec3DPointCloud, Real3DAD

    root = real3d_tree(tmp_path / "r")
    (root / "duck" / "test" / "10_good.pcd").rename(root / "duck" / "test" / "10_good.PCD")
    dm = Real3DAD(root=root, category="duck")
    dm.setup()
    assert len(dm.test_data) == 2
    mroot = mvtec_tree(tmp_path / "m")
    xyz = mroot / "bagel" / "train" / "good" / "xyz"
    (xyz / "000.tiff").rename(xyz / "000.TIFF")
    dm = MVTec3DPointCloud(root=mroot, category="bagel", remove_background=False, grid_size=None, validate="full")
    dm.setup()
    assert len(dm.train_data) == 2


def test_mixed_colours_in_a_batch_drop_colours_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import torch

    from anomalib_3d.data import dataclasses as dc
    from anomalib_3d.data.dataclasses import PointCloudBatch, PointCloudItem

    dc._WARNED_DROPPED.discard("colors")
    pts = torch.from_numpy(sphere(8))
    items = [
        PointCloudItem(points=pts, colors=torch.rand(8, 3), point_path="a.pcd"),
        PointCloudItem(points=pts, point_path="b.pcd"),
    ]
    with caplog.at_level(logging.WARNING):
        batch = PointCloudBatch.collate(items)
    assert batch.colors is None and batch.points.shape == (16, 3)
    warnings = [r for r in caplog.records if "colors" in r.getMessage()]
    assert len(warnings) == 1 and "b.pcd" in warnings[0].getMessage() and "a.pcd" not in warnings[0].getMessage()


def test_other_partial_fields_raise_a_named_error(tmp_path: Path) -> None:
    import torch

    from anomalib_3d.data.dataclasses import PointCloudBatch, PointCloudItem

    pts = torch.from_numpy(sphere(8))
    items = [PointCloudItem(points=pts, anomaly_map=torch.zeros(8), point_path="a.pcd"), PointCloudItem(points=pts, point_path="b.pcd")]
    with pytest.raises(PointCloudError, match="b.pcd"):
        PointCloudBatch.collate(items)


def test_datamodule_columns_option_resolves_the_ambiguity_it_suggests(tmp_path: Path) -> None:
    from anomalib_3d.data.datamodules import Real3DAD

    root = tmp_path / "r"
    rng = np.random.default_rng(0)
    for split, name in (("train", "0_template.xyz"), ("train", "1_template.xyz"), ("test", "10_good.xyz")):
        table = np.c_[sphere(32, len(name)), np.eye(3)[rng.integers(0, 3, 32)]]  # unit vectors: ambiguous
        write(root / "duck" / split / name, "".join(" ".join(f"{v:g}" for v in r) + "\n" for r in table).encode())
    dm = Real3DAD(root=root, category="duck", validate="full")
    with pytest.raises(DatasetValidationError, match="columns=") as info:
        dm.setup()
    assert all(isinstance(p, CorruptFileError) for p in info.value.problems)
    dm = Real3DAD(root=root, category="duck", validate="full", columns="xyznormal")
    dm.setup()
    assert dm.train_data[0].normals is not None


# ----------------------------------------------------------------------------------------------
# pickling (num_workers > 0) and memory
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", [c for c in CASES if c.name in {"pcd_type_i", "many_problems", "root_is_file", "mvtec_rgb_size"}],
                         ids=lambda c: c.name)
def test_errors_survive_pickling_with_their_attributes(tmp_path: Path, case: Case) -> None:
    error = _run(case, tmp_path)
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert str(clone) == str(error)
    assert clone.path == error.path and clone.fix == error.fix and clone.problem == error.problem
    if isinstance(error, DatasetValidationError):
        assert [str(p) for p in clone.problems] == [str(p) for p in error.problems]
        assert all(p.path is not None for p in clone.problems)


def test_errors_survive_a_dataloader_worker(tmp_path: Path) -> None:
    from anomalib_3d.data.datamodules import Real3DAD

    root = real3d_tree(tmp_path / "r")
    write(root / "duck" / "train" / "1_template.pcd", pcd_header(64, "ascii") + ascii_rows(sphere(63)) + b"nan 0 0\n")
    dm = Real3DAD(root=root, category="duck", num_workers=1, train_batch_size=2)
    dm.setup()  # header check passes: the NaN is in the body
    with pytest.raises(InvalidPointsError) as info:
        next(iter(dm.train_dataloader()))
    assert info.value.path is not None and info.value.path.name == "1_template.pcd"
    assert info.value.fix and "remove those points" in info.value.fix


def test_ascii_pcd_parser_memory_is_a_small_multiple_of_the_output(tmp_path: Path) -> None:
    n = 100_000
    pts = np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)
    path = write(tmp_path / "big.pcd", pcd_header(n, "ascii") + ascii_rows(pts))
    tracemalloc.start()
    try:
        data = read_point_cloud(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    output = data.points.nbytes
    file_size = path.stat().st_size
    # float64 parse table (2x the float32 output) + float32 copy + small buffers; the former
    # list-of-strings parser peaked at ~18x the *file* size (≈ 60x the output here).
    assert peak < 4.5 * output, f"peak {peak / 1e6:.1f} MB for a {output / 1e6:.1f} MB cloud ({file_size / 1e6:.1f} MB file)"
    np.testing.assert_allclose(data.points, pts, atol=1e-6)
