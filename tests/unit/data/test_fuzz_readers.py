"""Property-based fuzzing of the readers (hypothesis), bounded for CI.

1. Round trip: random valid clouds written in every format read back *exactly*.
2. Mutations: random byte-level changes of valid files either load or raise a
   ``PointCloudError`` — never another exception. What "load" may return depends on the
   mutation (a checksum-free format cannot notice every change):

   * structural mutations (cut the file, append bytes, duplicate / delete a line, delete a
     header line) of self-describing formats (PCD, PLY, ``.npy``): the *identical* cloud or an
     error;
   * value mutations (flip / insert / delete bytes anywhere): an error, or a cloud with the
     same number of finite float32 points (a changed digit inside a number is a valid file
     with another value; no reader can tell);
   * headerless text (``.xyz``, GT ``.txt``): an error or a valid cloud (a deleted row is
     undetectable without a count).

Derandomized (same examples every run) with a fixed budget per test; the whole file runs in
well under a minute on one core. ``FUZZ_EXAMPLES=<n>`` raises the budget for a longer local hunt.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from anomalib_3d.data.errors import PointCloudError  # noqa: E402
from anomalib_3d.data.io import (  # noqa: E402
    PointCloudData,
    read_gt_txt,
    read_organized_xyz,
    read_point_cloud,
    read_point_cloud_header,
    write_gt_txt,
    write_organized_xyz,
    write_pcd,
    write_ply,
)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
MUTATION_EXAMPLES = max(4, EXAMPLES // 3)  # per (format, mutation kind): 56 such tests
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

coordinate = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def clouds(draw: st.DrawFn, max_points: int = 24) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    n = draw(st.integers(min_value=2, max_value=max_points))
    points = draw(hnp.arrays(np.float32, (n, 3), elements=coordinate))
    assume(not (points == points[0]).all())  # a cloud of coincident points is refused on purpose
    points = points + np.float32(0.0)  # -0.0 -> 0.0: text formats need not keep the sign of zero
    colors = draw(st.none() | hnp.arrays(np.uint8, (n, 3)))
    normals = draw(st.none() | hnp.arrays(np.float32, (n, 3), elements=st.floats(-1, 1, width=32)))
    return points, colors, normals


def _lzf_literals(data: bytes) -> bytes:
    """A valid LZF stream made of literal runs only (the simplest legal encoder)."""
    out = bytearray()
    for start in range(0, len(data), 32):
        chunk = data[start : start + 32]
        out.append(len(chunk) - 1)
        out += chunk
    return bytes(out)


def _pcd_compressed(points: np.ndarray, colors: np.ndarray | None, normals: np.ndarray | None) -> bytes:
    fields, columns = ["x", "y", "z"], [points[:, 0], points[:, 1], points[:, 2]]
    if colors is not None:
        c = colors.astype(np.uint32)
        fields.append("rgb")
        columns.append(((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).astype(np.uint32))
    if normals is not None:
        fields += ["normal_x", "normal_y", "normal_z"]
        columns += [normals[:, 0], normals[:, 1], normals[:, 2]]
    types = ["U" if f == "rgb" else "F" for f in fields]
    payload = b"".join(np.ascontiguousarray(c).astype("<u4" if t == "U" else "<f4").tobytes() for c, t in zip(columns, types))
    compressed = _lzf_literals(payload)
    n = len(points)
    header = (
        f"VERSION 0.7\nFIELDS {' '.join(fields)}\nSIZE {' '.join('4' for _ in fields)}\nTYPE {' '.join(types)}\n"
        f"COUNT {' '.join('1' for _ in fields)}\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\n"
        "DATA binary_compressed\n"
    ).encode()
    return header + struct.pack("<II", len(compressed), len(payload)) + compressed


def _write_xyz(path: Path, points: np.ndarray) -> None:
    path.write_text("".join(f"{x:.9g} {y:.9g} {z:.9g}\n" for x, y, z in points.tolist()))


# format name -> (suffix, writer(path, points, colors, normals), supports colours, supports normals)
FORMATS: dict[str, tuple[str, Callable, bool, bool]] = {
    "pcd_ascii": (".pcd", lambda p, x, c, n: write_pcd(p, x, c, binary=False, normals=n), True, True),
    "pcd_binary": (".pcd", lambda p, x, c, n: write_pcd(p, x, c, binary=True, normals=n), True, True),
    "pcd_binary_compressed": (".pcd", lambda p, x, c, n: p.write_bytes(_pcd_compressed(x, c, n)), True, True),
    "ply_ascii": (".ply", lambda p, x, c, n: write_ply(p, x, c, normals=n), True, True),
    "ply_binary": (".ply", lambda p, x, c, n: write_ply(p, x, c, binary=True, normals=n), True, True),
    "npy": (".npy", lambda p, x, c, n: np.save(p, x), False, False),
    "xyz": (".xyz", lambda p, x, c, n: _write_xyz(p, x), False, False),
}
SELF_DESCRIBING = {"pcd_ascii", "pcd_binary", "pcd_binary_compressed", "ply_ascii", "ply_binary", "npy"}
STATS: dict[str, int] = {}


def _count(key: str) -> None:
    STATS[key] = STATS.get(key, 0) + 1


def _write(tmp: Path, fmt: str, cloud: tuple) -> tuple[Path, np.ndarray, np.ndarray | None, np.ndarray | None]:
    suffix, writer, has_c, has_n = FORMATS[fmt]
    points, colors, normals = cloud
    colors = colors if has_c else None
    normals = normals if has_n else None
    path = tmp / f"cloud{suffix}"
    writer(path, points, colors, normals)
    return path, points, colors, normals


def _same(data: PointCloudData, points: np.ndarray, colors: np.ndarray | None, normals: np.ndarray | None) -> bool:
    if data.points.shape != points.shape or not np.array_equal(data.points, points):
        return False
    if (data.colors is None) != (colors is None) or (data.normals is None) != (normals is None):
        return False
    if colors is not None and not np.array_equal(np.round(data.colors * 255).astype(np.uint8), colors):
        return False
    return normals is None or np.array_equal(data.normals, normals)


# ----------------------------------------------------------------------------------------------
# 1. round trips
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", sorted(FORMATS))
@FUZZ
@given(cloud=clouds())
def test_valid_clouds_round_trip_exactly(tmp_path_factory: pytest.TempPathFactory, fmt: str, cloud: tuple) -> None:
    tmp = tmp_path_factory.mktemp(fmt)
    path, points, colors, normals = _write(tmp, fmt, cloud)
    data = read_point_cloud(path)
    assert data.points.dtype == np.float32
    assert _same(data, points, colors, normals)
    header = read_point_cloud_header(path)
    assert header.num_points in (None, len(points))
    _count(f"roundtrip:{fmt}")


@FUZZ
@given(cloud=clouds(), labels=st.data())
def test_gt_txt_round_trips_exactly(tmp_path_factory: pytest.TempPathFactory, cloud: tuple, labels: st.DataObject) -> None:
    points = cloud[0]
    lab = labels.draw(hnp.arrays(np.uint8, (len(points),), elements=st.integers(0, 1)))
    path = tmp_path_factory.mktemp("gt") / "g.txt"
    write_gt_txt(path, points, lab)
    got_points, got_labels = read_gt_txt(path)
    assert np.array_equal(got_points, points) and np.array_equal(got_labels, lab)
    _count("roundtrip:gt_txt")


# ----------------------------------------------------------------------------------------------
# 2. mutations
# ----------------------------------------------------------------------------------------------
STRUCTURAL = ("truncate", "append", "dup_line", "del_line", "del_header_line")
VALUE = ("flip", "insert", "delete")


@st.composite
def mutations(draw: st.DrawFn, kinds: tuple[str, ...] = STRUCTURAL + VALUE) -> tuple:
    kind = draw(st.sampled_from(kinds))
    position = draw(st.floats(0, 1, exclude_max=True))
    if kind in ("truncate", "flip", "insert", "delete") and draw(st.booleans()):
        # half the byte positions near the end: the last row / record is where cuts bite
        position = 1.0 - draw(st.floats(0, 0.1, exclude_min=True))
    payload = draw(st.binary(min_size=1, max_size=8) | st.sampled_from([b"\n", b" ", b"0", b"-", b".", b"e", b"nan", b"1e39", b"\x00"]))
    length = draw(st.integers(1, 16))
    return kind, position, payload, length


def _header_end(raw: bytes, fmt: str) -> int:
    if fmt.startswith("pcd"):
        i = raw.find(b"DATA")
        return raw.find(b"\n", i) + 1
    if fmt.startswith("ply"):
        i = raw.find(b"end_header")
        return raw.find(b"\n", i) + 1
    if fmt == "npy":
        return raw.find(b"\n") + 1
    return 0


def _mutate(raw: bytes, fmt: str, mutation: tuple) -> bytes | None:
    kind, position, payload, length = mutation
    at = min(int(position * len(raw)), len(raw) - 1)
    head_end = _header_end(raw, fmt)
    text_body = fmt in ("pcd_ascii", "ply_ascii", "xyz")
    if kind == "truncate":
        return raw[:at]
    if kind == "append":
        return raw + payload
    if kind == "flip":
        return raw[:at] + bytes([payload[0] if payload[0] != raw[at] else (raw[at] ^ 0x01)]) + raw[at + 1 :]
    if kind == "insert":
        return raw[:at] + payload + raw[at:]
    if kind == "delete":
        return raw[:at] + raw[at + length :]
    if kind == "del_header_line":
        if head_end == 0 or fmt == "npy":
            return None
        lines = raw[:head_end].splitlines(keepends=True)
        k = int(position * len(lines))
        return b"".join(lines[:k] + lines[k + 1 :]) + raw[head_end:]
    if kind in ("dup_line", "del_line"):
        if not text_body:
            # binary bodies: a block of bytes (a record's worth) duplicated / removed
            body_at = head_end + int(position * max(1, len(raw) - head_end))
            block = raw[body_at : body_at + 4 * length]
            if not block:
                return None
            if kind == "dup_line":
                return raw[:body_at] + block + raw[body_at:]
            return raw[:body_at] + raw[body_at + len(block) :]
        lines = raw[head_end:].splitlines(keepends=True)
        if not lines:
            return None
        k = int(position * len(lines))
        if kind == "dup_line":
            return raw[:head_end] + b"".join(lines[: k + 1] + lines[k:])
        return raw[:head_end] + b"".join(lines[:k] + lines[k + 1 :])
    raise AssertionError(kind)


def _read_or_error(path: Path) -> PointCloudData | PointCloudError:
    try:
        return read_point_cloud(path)
    except PointCloudError as err:
        assert err.path is not None and err.path.name == path.name, f"error does not name the file: {err}"
        return err


MUTATION_CASES = [
    (fmt, kind) for fmt in sorted(FORMATS) for kind in STRUCTURAL + VALUE
    if not (kind == "del_header_line" and fmt in ("xyz", "npy"))  # no header lines to delete
]


@pytest.mark.parametrize(("fmt", "kind"), MUTATION_CASES)
@settings(FUZZ, max_examples=MUTATION_EXAMPLES)
@given(cloud=clouds(max_points=12), data=st.data())
def test_mutated_files_load_identically_or_raise_a_named_error(
    tmp_path_factory: pytest.TempPathFactory, fmt: str, kind: str, cloud: tuple, data: st.DataObject
) -> None:
    mutation = data.draw(mutations((kind,)))
    tmp = tmp_path_factory.mktemp(fmt)
    path, points, colors, normals = _write(tmp, fmt, cloud)
    mutated = _mutate(path.read_bytes(), fmt, mutation)
    assume(mutated is not None and mutated != path.read_bytes())
    path.write_bytes(mutated)
    result = _read_or_error(path)  # any exception other than PointCloudError fails the test
    if isinstance(result, PointCloudError):
        _count(f"mutation:{fmt}:error")
        # the header-only check never accepts what the full read refuses for header reasons
        return
    same = _same(result, points, colors, normals)
    _count(f"mutation:{fmt}:{'identical' if same else 'different'}")
    assert result.points.dtype == np.float32 and np.isfinite(result.points).all()
    if fmt in SELF_DESCRIBING:
        if kind in STRUCTURAL:
            assert same, f"{fmt}: structural mutation {mutation} loaded different data without an error"
        else:
            assert len(result) == len(points), f"{fmt}: mutation {mutation} changed the point count silently"


@FUZZ
@given(cloud=clouds(max_points=12), mutation=mutations())
def test_mutated_gt_files_load_or_raise_a_named_error(tmp_path_factory: pytest.TempPathFactory, cloud: tuple, mutation: tuple) -> None:
    path = tmp_path_factory.mktemp("gt") / "g.txt"
    write_gt_txt(path, cloud[0], (cloud[0][:, 0] > 0).astype(np.uint8))
    mutated = _mutate(path.read_bytes(), "xyz", mutation)
    assume(mutated is not None)
    path.write_bytes(mutated)
    try:
        points, labels = read_gt_txt(path)
    except PointCloudError:
        _count("mutation:gt_txt:error")
        return
    _count("mutation:gt_txt:loaded")
    assert points.dtype == np.float32 and np.isfinite(points).all() and set(np.unique(labels)) <= {0, 1}


@settings(FUZZ, max_examples=max(10, EXAMPLES // 3))
@given(mutation=mutations())
def test_mutated_tiffs_load_or_raise_a_named_error(tmp_path_factory: pytest.TempPathFactory, mutation: tuple) -> None:
    path = tmp_path_factory.mktemp("tiff") / "xyz.tiff"
    yy, xx = np.mgrid[0:6, 0:5].astype(np.float32)
    write_organized_xyz(path, np.stack([xx, yy, np.full_like(xx, 0.5)], axis=-1))
    mutated = _mutate(path.read_bytes(), "npy", mutation)  # binary: no line structure
    assume(mutated is not None)
    path.write_bytes(mutated)
    try:
        xyz = read_organized_xyz(path)
    except PointCloudError:
        _count("mutation:tiff:error")
        return
    _count("mutation:tiff:loaded")
    assert xyz.ndim == 3 and xyz.shape[2] == 3 and np.isfinite(xyz).all()


def test_report_fuzz_statistics(capsys: pytest.CaptureFixture) -> None:
    """Prints how many examples ran per property (run last in this file; -s to see it)."""
    with capsys.disabled():
        total = sum(STATS.values())
        print(f"\nfuzz examples: {total}")
        for key in sorted(STATS):
            print(f"  {key}: {STATS[key]}")
