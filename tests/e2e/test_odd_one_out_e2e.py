"""Odd-One-Out through anomalib's unmodified CLI, with the experiment config shrunk to a tiny size:
it trains, prints the scene and object metrics, and writes one picture per test scene — with the
ground-truth boxes and with density proposals. The preset's contrastive teacher is fitted on the
training renders inside the same command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _tiny_config(tmp_path: Path) -> Path:
    config = yaml.safe_load((REPO / "configs/experiments/odd_one_out_synthetic.yaml").read_text())
    config["default_root_dir"] = str(tmp_path / "results")
    config["trainer"] = {"max_epochs": 2, "enable_progress_bar": False}
    config["model"]["init_args"].update(grid_shape=[24, 24, 8], voxel_size=0.06, grid_center=[0.0, 0.0, 0.12],
                                        feature_dim=8, projection_dim=8, crop_size=4, num_blocks=1, token_dim=16,
                                        topk=5, render_size=[12, 12], num_samples=16, render_epochs=1,
                                        teacher_epochs=1)
    data = config["data"]["init_args"]
    data["root"] = str(tmp_path / "scenes")
    data["synthetic"].update(categories=["nut", "cup"], unseen_categories=["ring"], num_train=4, num_test=2,
                             num_test_unseen=2, image_size=48, points_per_object=1500)
    path = tmp_path / "odd_one_out.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    command = [str(Path(sys.executable).with_name("anomalib")), "train", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.parametrize("boxes", ["ground_truth", "proposals"])
def test_odd_one_out_config_through_the_cli(tmp_path: Path, boxes: str) -> None:
    args = ["--config", str(_tiny_config(tmp_path)), "--model.boxes", boxes]
    if boxes == "proposals":
        args += ["--model.proposal_threshold", "0.001"]  # two epochs learn little density
    out = _run(args, cwd=tmp_path)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-5000:]
    for metric in ("image_AUROC", "object_AUROC", "object_SceneAUROC", "object_Accuracy", "object_PooledAccuracy"):
        assert metric in log, log[-3000:]
    assert "pixel_AUROC" not in log  # object scores painted on segments localise nothing
    pictures = list((tmp_path / "results").rglob("images/**/*.png"))
    assert len(pictures) == 4, sorted(str(p) for p in (tmp_path / "results").rglob("*"))  # 2 seen + 2 unseen scenes
