"""The pre-flight check: every problem of a dataset at setup, at once; and its stand-alone command."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anomalib_3d.cli import main as cli_main
from anomalib_3d.data.datamodules import MVTec3DPointCloud, Real3DAD
from anomalib_3d.data.errors import (
    CorruptFileError,
    DatasetValidationError,
    GroundTruthMismatchError,
    InvalidPointsError,
)


def _lie_binary(path: Path) -> None:
    """Turn the ASCII header of ``path`` into a 'DATA binary' one (body left as text)."""
    path.write_bytes(path.read_bytes().replace(b"DATA ascii", b"DATA binary"))


def _nan_body(path: Path) -> None:
    lines = path.read_text().splitlines()
    lines[-1] = "nan 0 0"
    path.write_text("\n".join(lines) + "\n")


def test_header_check_reports_every_bad_file_at_setup(real3d_root: Path) -> None:
    _lie_binary(real3d_root / "duck" / "train" / "0_template.pcd")
    _lie_binary(real3d_root / "duck" / "test" / "10_good.pcd")
    (real3d_root / "duck" / "gt" / "22_bulge.txt").unlink()
    with pytest.raises(DatasetValidationError) as info:
        Real3DAD(root=real3d_root, category=["airplane", "duck"]).setup()
    problems = info.value.problems
    assert sorted(p.path.name for p in problems) == ["0_template.pcd", "10_good.pcd", "22_bulge.pcd"]
    assert {type(p) for p in problems} == {CorruptFileError, GroundTruthMismatchError}
    assert "3 problem(s)" in str(info.value) and all(str(p.path) in str(info.value) for p in problems)


def test_modes_header_full_off(real3d_root: Path) -> None:
    _nan_body(real3d_root / "duck" / "test" / "11_good.pcd")  # a body problem: invisible to headers
    Real3DAD(root=real3d_root, category="duck").setup()  # header mode passes
    with pytest.raises(InvalidPointsError, match="11_good.pcd"):
        Real3DAD(root=real3d_root, category="duck", validate="full").setup()
    _lie_binary(real3d_root / "duck" / "test" / "10_good.pcd")
    dm = Real3DAD(root=real3d_root, category="duck", validate="off")
    dm.setup()  # nothing read
    assert len(dm.test_data) == 5
    with pytest.raises(ValueError, match="validate must be one of"):
        Real3DAD(root=real3d_root, category="duck", validate="yes")


def test_full_check_reports_gt_label_conflicts(real3d_root: Path) -> None:
    gt_file = real3d_root / "duck" / "gt" / "20_bulge.txt"
    gt = np.loadtxt(gt_file)
    gt[:, 3] = 0
    np.savetxt(gt_file, gt, fmt="%.6f %.6f %.6f %d")
    Real3DAD(root=real3d_root, category="duck").setup()  # header mode: content not read
    with pytest.raises(GroundTruthMismatchError, match="20_bulge.txt: the sample is defective"):
        Real3DAD(root=real3d_root, category="duck", validate="full").setup()


def test_header_check_reads_mvtec_sizes(mvtec3d_root: Path) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(mvtec3d_root / "bagel" / "test" / "crack" / "gt" / "000.png")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(mvtec3d_root / "bagel" / "train" / "good" / "rgb" / "001.png")
    with pytest.raises(DatasetValidationError) as info:
        MVTec3DPointCloud(root=mvtec3d_root, category="bagel").setup()
    assert sorted(str(p.path.relative_to(mvtec3d_root)) for p in info.value.problems) == [
        "bagel/test/crack/gt/000.png", "bagel/train/good/rgb/001.png",
    ]


def test_mixed_colour_dataset_is_warned_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from anomalib_3d.data.io import write_pcd

    rng = np.random.default_rng(0)
    for i in range(2):
        write_pcd(tmp_path / "c" / "train" / f"{i}_template.pcd", rng.normal(size=(16, 3)), colors=rng.integers(0, 255, (16, 3)))
    write_pcd(tmp_path / "c" / "test" / "0_good.pcd", rng.normal(size=(16, 3)))
    with caplog.at_level(logging.WARNING, logger="anomalib_3d.data.validation"):
        Real3DAD(root=tmp_path, category="c").setup()
    assert sum("no colours" in r.getMessage() for r in caplog.records) == 1


def test_check_data_command(real3d_root: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["check-data", "--data", "Real3DAD", "--data.root", str(real3d_root), "--data.category", "[airplane, duck]"]
    assert cli_main(args) == 0
    assert "OK: 16 samples" in capsys.readouterr().out
    _lie_binary(real3d_root / "duck" / "test" / "10_good.pcd")
    (real3d_root / "airplane" / "gt" / "20_bulge.txt").unlink()
    assert cli_main(args) == 1
    out = capsys.readouterr().out
    assert "2 problem(s)" in out and "10_good.pcd" in out and "20_bulge.pcd" in out
    assert cli_main(["check-data", "--data", "Real3DAD", "--data.root", str(real3d_root / "nowhere")]) == 1
    assert cli_main(["nonsense"]) == 2


def test_python_dash_m_runs_check_data(real3d_root: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "anomalib_3d", "check-data", "--data", "Real3DAD",
         f"--data.root={real3d_root}", "--data.category=duck", "--validate", "full"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "OK: 8 samples" in result.stdout
