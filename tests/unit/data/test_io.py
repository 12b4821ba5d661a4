"""Readers/writers of anomalib_3d.data.io: round trips, independent references, named errors."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from anomalib_3d.data.errors import (
    CorruptFileError,
    DatasetRootNotFoundError,
    EmptyPointCloudError,
    GroundTruthMismatchError,
    InvalidPointsError,
    UnsupportedFormatError,
)
from anomalib_3d.data.io import (
    lzf_decompress,
    read_gt_txt,
    read_mask_png,
    read_organized_xyz,
    read_point_cloud,
    read_rgb,
    validate_points,
    write_gt_txt,
    write_mask_png,
    write_organized_xyz,
    write_pcd,
    write_ply,
    write_rgb_png,
)


@pytest.fixture
def cloud() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    points = (rng.normal(size=(500, 3)) * [10.0, 0.01, 1e-4]).astype(np.float32)  # awkward scales
    colors = rng.integers(0, 256, size=(500, 3)).astype(np.uint8)
    normals = rng.normal(size=(500, 3)).astype(np.float32)
    return points, colors, normals


def _names_file(err: pytest.ExceptionInfo, path: Path) -> bool:
    return str(path) in str(err.value)


# ----------------------------------------------------------------------------------------------
# PCD
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
def test_pcd_round_trip_is_exact_in_float32(tmp_path, cloud, binary):
    points, colors, normals = cloud
    path = tmp_path / "c.pcd"
    write_pcd(path, points, colors, binary=binary, normals=normals)
    data = read_point_cloud(path)
    assert data.points.dtype == np.float32
    np.testing.assert_array_equal(data.points, points)
    np.testing.assert_array_equal(np.round(data.colors * 255).astype(np.uint8), colors)
    np.testing.assert_array_equal(data.normals, normals)


@pytest.mark.parametrize("binary", [False, True])
def test_open3d_reads_our_pcd(tmp_path, cloud, binary):
    o3d = pytest.importorskip("open3d")
    points, colors, _ = cloud
    path = tmp_path / "c.pcd"
    write_pcd(path, points, colors, binary=binary)
    pcd = o3d.io.read_point_cloud(str(path))
    np.testing.assert_allclose(np.asarray(pcd.points), points, rtol=1e-7, atol=0)
    np.testing.assert_allclose(np.asarray(pcd.colors) * 255, colors, atol=1e-6)


@pytest.mark.parametrize("options", [{"write_ascii": True}, {}, {"compressed": True}])
def test_we_read_open3d_pcd_including_binary_compressed(tmp_path, cloud, options):
    o3d = pytest.importorskip("open3d")
    points, colors, normals = cloud
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    pcd.colors = o3d.utility.Vector3dVector(colors / 255.0)
    pcd.normals = o3d.utility.Vector3dVector(normals.astype(np.float64))
    path = tmp_path / "o3d.pcd"
    assert o3d.io.write_point_cloud(str(path), pcd, **options)
    data = read_point_cloud(path)
    np.testing.assert_array_equal(data.points, points)
    np.testing.assert_array_equal(data.normals, normals)
    np.testing.assert_allclose(data.colors * 255, colors, atol=1e-4)


def test_lzf_decompress_hand_made_stream():
    # literal "abc" (ctrl 2 = 3 bytes), then back reference length 4 (ctrl (2 << 5) | 0, offset 2
    # -> distance 3): copies "abca" -> "abcabca".
    stream = bytes([2]) + b"abc" + bytes([(2 << 5) | 0, 2])
    assert lzf_decompress(stream, 7) == b"abcabca"
    with pytest.raises(ValueError):
        lzf_decompress(stream, 8)


def _pcd_header(num_points: int, data: str) -> bytes:
    return (
        "VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
        f"WIDTH {num_points}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {num_points}\nDATA {data}\n"
    ).encode()


def test_truncated_binary_pcd_raises_corrupt_naming_file(tmp_path):
    path = tmp_path / "cut.pcd"
    path.write_bytes(_pcd_header(100, "binary") + np.zeros((60, 3), np.float32).tobytes())
    with pytest.raises(CorruptFileError, match="POINTS 100") as err:
        read_point_cloud(path)
    assert _names_file(err, path)


def test_ascii_pcd_row_count_mismatch_raises(tmp_path):
    path = tmp_path / "short.pcd"
    path.write_bytes(_pcd_header(5, "ascii") + b"0 0 0\n1 1 1\n")
    with pytest.raises(CorruptFileError, match="POINTS 5 but the ASCII body has 2 rows") as err:
        read_point_cloud(path)
    assert _names_file(err, path)
    path.write_bytes(_pcd_header(2, "ascii") + b"0 0 0\n1 1\n")
    with pytest.raises(CorruptFileError, match="row 1 has 2 values"):
        read_point_cloud(path)


def test_open3d_silently_returns_empty_where_we_raise(tmp_path):
    o3d = pytest.importorskip("open3d")
    path = tmp_path / "cut.pcd"
    path.write_bytes(_pcd_header(100, "binary") + b"\x00" * 10)
    assert len(o3d.io.read_point_cloud(str(path)).points) == 0  # the behaviour we guard against
    with pytest.raises(CorruptFileError):
        read_point_cloud(path)


def test_garbage_pcd_header_raises(tmp_path):
    path = tmp_path / "bad.pcd"
    path.write_bytes(b"this is not a point cloud\n")
    with pytest.raises(CorruptFileError) as err:
        read_point_cloud(path)
    assert _names_file(err, path)


def test_nan_points_raise_with_count_or_are_dropped_on_request(tmp_path):
    points = np.arange(30, dtype=np.float32).reshape(10, 3)
    points[[2, 7], 1] = np.nan
    path = tmp_path / "nan.pcd"
    path.write_bytes(_pcd_header(10, "binary") + points.tobytes())
    with pytest.raises(InvalidPointsError, match="2 of 10 points") as err:
        read_point_cloud(path)
    assert _names_file(err, path)
    kept = read_point_cloud(path, drop_nonfinite=True).points
    np.testing.assert_array_equal(kept, points[[0, 1, 3, 4, 5, 6, 8, 9]])


def test_missing_file_raises_file_not_found_family(tmp_path):
    path = tmp_path / "nope.pcd"
    with pytest.raises(DatasetRootNotFoundError, match="does not exist") as err:
        read_point_cloud(path)
    assert isinstance(err.value, FileNotFoundError)
    assert _names_file(err, path)
    for reader, name in [(read_gt_txt, "g.txt"), (read_organized_xyz, "x.tiff"), (read_mask_png, "m.png"), (read_rgb, "r.png")]:
        with pytest.raises(FileNotFoundError):
            reader(tmp_path / name)


def test_unsupported_extension_lists_supported(tmp_path):
    path = tmp_path / "cloud.las"
    path.write_bytes(b"x")
    with pytest.raises(UnsupportedFormatError, match=r"\.pcd") as err:
        read_point_cloud(path)
    assert _names_file(err, path)


def test_directory_instead_of_file(tmp_path):
    folder = tmp_path / "d.pcd"
    folder.mkdir()
    with pytest.raises(CorruptFileError, match="directory"):
        read_point_cloud(folder)


# ----------------------------------------------------------------------------------------------
# validate_points
# ----------------------------------------------------------------------------------------------


def test_validate_points_shape_empty_and_nan():
    validate_points(np.zeros((4, 3)))
    with pytest.raises(InvalidPointsError, match=r"shape \(N, 3\)"):
        validate_points(np.zeros((4, 2)), path="a.pcd")
    with pytest.raises(EmptyPointCloudError):
        validate_points(np.zeros((0, 3)))
    bad = np.zeros((5, 3))
    bad[1, 0], bad[3, 2] = np.inf, np.nan
    with pytest.raises(InvalidPointsError, match=r"2 of 5 points .*\(first at row 1\)") as err:
        validate_points(bad, path="scan.pcd")
    assert "scan.pcd" in str(err.value)


def test_validate_points_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    validate_points(torch.zeros(3, 3))
    with pytest.raises(InvalidPointsError, match="1 of 3"):
        validate_points(torch.tensor([[0.0, 0, 0], [float("nan"), 0, 0], [1, 1, 1]]))


# ----------------------------------------------------------------------------------------------
# Text, npy, PLY
# ----------------------------------------------------------------------------------------------


def test_text_clouds_columns(tmp_path):
    xyz = np.array([[0.5, 1.0, 2.0], [3.0, 4.0, 5.0]])
    (tmp_path / "a.xyz").write_text("0.5 1.0 2.0\n3 4 5\n")
    np.testing.assert_array_equal(read_point_cloud(tmp_path / "a.xyz").points, xyz.astype(np.float32))
    (tmp_path / "b.txt").write_text("0.5,1.0,2.0,255,0,128\n3,4,5,0,255,0\n")
    data = read_point_cloud(tmp_path / "b.txt")
    np.testing.assert_allclose(data.colors, [[1, 0, 128 / 255], [0, 1, 0]], atol=1e-7)
    (tmp_path / "c.xyz").write_text("0.5 1.0 2.0 0 0 -1\n3 4 5 0.6 0.8 0\n")
    np.testing.assert_allclose(read_point_cloud(tmp_path / "c.xyz").normals, [[0, 0, -1], [0.6, 0.8, 0]], atol=1e-7)
    (tmp_path / "d.pts").write_text("2\n0.5 1.0 2.0\n3 4 5\n")  # Leica count line
    np.testing.assert_array_equal(read_point_cloud(tmp_path / "d.pts").points, xyz.astype(np.float32))


def test_text_cloud_errors(tmp_path):
    ambiguous = tmp_path / "amb.xyz"  # unit vectors with components in [0, 1]: colours or normals?
    ambiguous.write_text("0 0 0 1 0 0\n1 1 1 0 1 0\n")
    with pytest.raises(CorruptFileError, match="ambiguous") as err:
        read_point_cloud(ambiguous)
    assert _names_file(err, ambiguous)
    assert read_point_cloud(ambiguous, columns="xyznormal").normals is not None
    ragged = tmp_path / "ragged.xyz"
    ragged.write_text("0 0 0\n1 1\n")
    with pytest.raises(CorruptFileError, match="row 1 has 2 values"):
        read_point_cloud(ragged)
    four = tmp_path / "four.txt"
    four.write_text("0 0 0 1\n")
    with pytest.raises(CorruptFileError, match="read_gt_txt"):
        read_point_cloud(four)
    count = tmp_path / "count.pts"
    count.write_text("3\n0 0 0\n1 1 1\n")
    with pytest.raises(CorruptFileError, match="declares 3 points"):
        read_point_cloud(count)


def test_npy_clouds(tmp_path):
    points = np.random.default_rng(1).normal(size=(20, 3))
    np.save(tmp_path / "p.npy", points)
    np.testing.assert_array_equal(read_point_cloud(tmp_path / "p.npy").points, points.astype(np.float32))
    np.save(tmp_path / "bad.npy", np.zeros((4, 3, 2)))
    with pytest.raises(InvalidPointsError, match=r"\(4, 3, 2\)") as err:
        read_point_cloud(tmp_path / "bad.npy")
    assert _names_file(err, tmp_path / "bad.npy")


@pytest.mark.parametrize("binary", [False, True])
def test_ply_round_trip_with_score_scalar(tmp_path, cloud, binary):
    points, colors, normals = cloud
    scores = np.linspace(0, 1, len(points)).astype(np.float32)
    path = tmp_path / "scores.ply"
    write_ply(path, points, colors, {"score": scores}, binary=binary, normals=normals)
    header = path.read_bytes()[:400].decode("ascii", errors="replace")
    assert "property float scalar_score" in header
    data = read_point_cloud(path)
    np.testing.assert_array_equal(data.points, points)
    np.testing.assert_array_equal(data.normals, normals)
    np.testing.assert_array_equal(data.scalars["scalar_score"], scores)
    np.testing.assert_array_equal(np.round(data.colors * 255).astype(np.uint8), colors)


def test_open3d_tensor_io_reads_our_ply_scalars(tmp_path, cloud):
    o3d = pytest.importorskip("open3d")
    points, colors, _ = cloud
    scores = np.arange(len(points), dtype=np.float32)
    path = tmp_path / "s.ply"
    write_ply(path, points, colors, {"score": scores}, binary=True)
    tensor_cloud = o3d.t.io.read_point_cloud(str(path))
    np.testing.assert_array_equal(tensor_cloud.point.positions.numpy(), points)
    np.testing.assert_array_equal(tensor_cloud.point["scalar_score"].numpy().ravel(), scores)


def test_truncated_binary_ply_raises(tmp_path, cloud):
    path = tmp_path / "cut.ply"
    write_ply(path, cloud[0], binary=True)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptFileError, match="500 vertices") as err:
        read_point_cloud(path)
    assert _names_file(err, path)


# ----------------------------------------------------------------------------------------------
# Organized xyz, gt, images
# ----------------------------------------------------------------------------------------------


def test_organized_xyz_round_trip_and_reference(tmp_path):
    import tifffile

    xyz = np.random.default_rng(2).normal(size=(12, 17, 3)).astype(np.float32)
    xyz[:3] = 0.0  # no-point pixels stay zeros
    path = tmp_path / "000.tiff"
    write_organized_xyz(path, xyz)
    np.testing.assert_array_equal(read_organized_xyz(path), xyz)
    np.testing.assert_array_equal(tifffile.imread(path), xyz)


def test_organized_xyz_errors(tmp_path):
    import tifffile

    flat = tmp_path / "flat.tiff"
    tifffile.imwrite(flat, np.zeros((8, 8), np.float32))
    with pytest.raises(CorruptFileError, match=r"\(H, W, 3\)") as err:
        read_organized_xyz(flat)
    assert _names_file(err, flat)
    ints = tmp_path / "ints.tiff"
    tifffile.imwrite(ints, np.zeros((8, 8, 3), np.uint16), photometric="rgb")
    with pytest.raises(CorruptFileError, match="uint16"):
        read_organized_xyz(ints)
    nan = tmp_path / "nan.tiff"
    values = np.zeros((4, 4, 3), np.float32)
    values[1, 2, 0] = np.nan
    tifffile.imwrite(nan, values, photometric="rgb")
    with pytest.raises(InvalidPointsError, match="1 of 16 pixels"):
        read_organized_xyz(nan)
    garbage = tmp_path / "garbage.tiff"
    garbage.write_bytes(b"II*\x00garbage")
    with pytest.raises(CorruptFileError, match="TIFF"):
        read_organized_xyz(garbage)
    with pytest.raises(UnsupportedFormatError):
        read_organized_xyz(tmp_path / "x.png")


def test_gt_txt_round_trip_and_separators(tmp_path):
    points = np.random.default_rng(3).normal(size=(50, 3)).astype(np.float32)
    labels = (np.arange(50) % 7 == 0).astype(np.uint8)
    path = tmp_path / "0_bulge.txt"
    write_gt_txt(path, points, labels)
    got_points, got_labels = read_gt_txt(path)
    np.testing.assert_array_equal(got_points, points)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_labels.dtype == np.uint8
    comma = tmp_path / "comma.txt"
    comma.write_text("1.5,2,3,1.0\n4, 5, 6, 0.000000\n")
    p, lab = read_gt_txt(comma)
    np.testing.assert_array_equal(p, np.array([[1.5, 2, 3], [4, 5, 6]], np.float32))
    np.testing.assert_array_equal(lab, [1, 0])


def test_gt_txt_errors(tmp_path):
    three = tmp_path / "three.txt"
    three.write_text("0 0 0 1\n0 0 0\n")
    with pytest.raises(CorruptFileError, match="line 2 has 3 columns") as err:
        read_gt_txt(three)
    assert _names_file(err, three)
    labels = tmp_path / "labels.txt"
    labels.write_text("0 0 0 0\n0 0 0 2\n0 0 0 0.5\n")
    with pytest.raises(CorruptFileError, match=r"labels must be 0 or 1 .*line 2") as err:
        read_gt_txt(labels)
    assert _names_file(err, labels)
    with pytest.raises(GroundTruthMismatchError, match="3 labels for 2 points"):
        write_gt_txt(tmp_path / "w.txt", np.zeros((2, 3)), [0, 1, 0])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(EmptyPointCloudError):
        read_gt_txt(empty)


def test_mask_and_rgb_round_trip(tmp_path):
    from PIL import Image

    mask = np.zeros((9, 11), bool)
    mask[2:5, 3:7] = True
    write_mask_png(tmp_path / "m.png", mask)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "m.png")), mask.astype(np.uint8) * 255)
    np.testing.assert_array_equal(read_mask_png(tmp_path / "m.png"), mask)
    rgb_mask = np.zeros((4, 4, 3), np.uint8)
    rgb_mask[1, 1, 2] = 7
    Image.fromarray(rgb_mask).save(tmp_path / "rgbmask.png")
    assert read_mask_png(tmp_path / "rgbmask.png").sum() == 1

    rgb = np.random.default_rng(4).integers(0, 256, (9, 11, 3)).astype(np.uint8)
    write_rgb_png(tmp_path / "r.png", rgb)
    np.testing.assert_array_equal(read_rgb(tmp_path / "r.png"), rgb)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    gray = read_rgb(tmp_path / "gray.png")
    assert gray.shape == (9, 11, 3) and np.array_equal(gray[..., 1], rgb[..., 0])


def test_corrupt_image_raises(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR garbage")
    with pytest.raises(CorruptFileError) as err:
        read_mask_png(path)
    assert _names_file(err, path)
    with pytest.raises(UnsupportedFormatError):
        read_rgb(tmp_path / "image.webp")


# ----------------------------------------------------------------------------------------------
# where the readers and the errors live
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "write"), [(".pcd", write_pcd), (".ply", write_ply)])
def test_header_and_cloud_readers_dispatch_by_extension_case_insensitively(tmp_path, cloud, suffix, write):
    from anomalib_3d.data.io import read_point_cloud_header

    points, colors, normals = cloud
    path = tmp_path / f"c{suffix.upper()}"
    write(path, points, colors, binary=True, normals=normals)
    header = read_point_cloud_header(path)
    assert (header.num_points, header.has_colors, header.has_normals) == (len(points), True, True)
    np.testing.assert_array_equal(read_point_cloud(path).points, points)


def test_error_family_lives_at_the_package_root_and_keeps_its_data_paths():
    import subprocess
    import sys

    import anomalib_3d.data.errors as data_errors
    import anomalib_3d.errors as root_errors
    from anomalib_3d.data import scenes

    for name in data_errors.__all__:
        assert getattr(data_errors, name) is getattr(root_errors, name), name
    for name in ("InvalidSceneError", "MissingViewError", "InvalidPoseError", "InvalidBoxError", "UnknownSplitError"):
        assert getattr(scenes, name) is getattr(root_errors, name), name
        assert issubclass(getattr(root_errors, name), root_errors.PointCloudError)
    # the renderer and the point ops raise these errors without loading the data layer
    code = ("import sys, anomalib_3d.render, anomalib_3d.ops; "
            "print(sorted(m for m in sys.modules if m.startswith('anomalib_3d.data')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip().splitlines()[-1] == "[]"
