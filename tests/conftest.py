"""Shared fixtures: small hand-written dataset folders in the public layouts."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from doubles.clouds import sphere, write_ascii_pcd
from doubles.mvtec3d import noisy_plane_scan, write_mvtec3d_sample

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def real3d_root(tmp_path: Path) -> Path:
    """A Real3D-AD-layout folder: 2 categories, 3 templates, 2 good + 3 defective test clouds."""
    root = tmp_path / "real3d"
    for c, cat in enumerate(("airplane", "duck")):
        for i in range(3):
            write_ascii_pcd(root / cat / "train" / f"{i}_template.pcd", sphere(200, 100 * c + i))
        for i in range(2):
            write_ascii_pcd(root / cat / "test" / f"{10 + i}_good.pcd", sphere(150, 100 * c + 10 + i))
        for i, defect in enumerate(("bulge", "sink", "bulge")):
            pts = sphere(180, 100 * c + 20 + i)
            labels = (pts[:, 2] > 0.8).astype(int)
            stem = f"{20 + i}_{defect}"
            write_ascii_pcd(root / cat / "test" / f"{stem}.pcd", pts)
            (root / cat / "gt").mkdir(parents=True, exist_ok=True)
            np.savetxt(root / cat / "gt" / f"{stem}.txt", np.c_[pts, labels], fmt="%.6f %.6f %.6f %d")
    return root


@pytest.fixture
def mvtec3d_root(tmp_path: Path) -> Path:
    """An MVTec 3D-AD-layout folder: organized xyz tiffs (zeros = no point), rgb and gt PNGs."""
    root = tmp_path / "mvtec3d"
    rng = np.random.default_rng(0)

    def write(split: str, defect: str, idx: int, with_gt: bool) -> None:
        xyz, rgb = noisy_plane_scan(32, 32, rng)
        xyz[:4] = 0.0  # rows without points
        mask = None
        if with_gt:
            mask = np.zeros((32, 32), bool)
            if defect != "good":
                mask[10:16, 12:20] = True
                mask[2, 2] = True  # an anomalous pixel without a point: kept in pixel_gt_mask only
        write_mvtec3d_sample(root / "bagel" / split / defect, idx, xyz, rgb, mask)

    for i in range(3):
        write("train", "good", i, False)
    write("validation", "good", 0, False)
    for i in range(2):
        write("test", "good", i, True)
    for i in range(2):
        write("test", "crack", i, True)
    write("test", "hole", 0, True)
    return root


@pytest.fixture
def one_thread():  # noqa: ANN201
    """Run a test on one torch thread (small models: OpenMP threads only fight each other here)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def print_config(capsys: pytest.CaptureFixture):  # noqa: ANN201
    """Run anomalib's own CLI class in-process with ``--print_config``; return what it printed."""

    def run(args: list[str]) -> str:
        from anomalib.cli.cli import AnomalibCLI

        with pytest.raises(SystemExit) as exit_info:
            AnomalibCLI(args=[*args, "--print_config"])
        out = capsys.readouterr()
        assert exit_info.value.code in (0, None), out.err[-3000:]
        return out.out

    return run
