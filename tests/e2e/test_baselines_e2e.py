"""The classical baselines end to end: anomalib's CLI, checkpoints, and every datamodule family."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

REPO = Path(__file__).resolve().parents[2]
ANOMALIB = Path(sys.executable).with_name("anomalib")

#: Small, fast settings per model (CLI flags and Python kwargs).
MODELS: dict[str, dict[str, object]] = {
    "BTF": {"feature_mode": "fpfh"},
    "PatchCore3D": {"feature_sources": ["fpfh", "raw"], "num_points": 1024, "num_groups": 64, "group_size": 16},
    "Reg3DAD": {"registration": "global+icp", "num_templates": 2, "template_points": 1024, "registration_points": 512},
}


def _flags(name: str) -> list[str]:
    flags = []
    for key, value in MODELS[name].items():
        text = "[" + ",".join(value) + "]" if isinstance(value, list) else str(value)
        flags += [f"--model.{key}", text]
    return flags


def _synthetic(root: Path, layout: str = "real3d"):  # noqa: ANN202
    from anomalib_3d.data.datamodules.synthetic import Synthetic3D

    return Synthetic3D(
        root=root, category="cup", layout=layout, num_train=3, num_test_good=2, num_test_per_defect=1,
        num_points=1024, image_size=(64, 64), train_batch_size=4, eval_batch_size=4, num_workers=0,
    )


def _model(name: str, **kwargs: object):  # noqa: ANN202
    import anomalib_3d_plugins.btf as btf
    import anomalib_3d_plugins.patchcore3d as patchcore3d
    import anomalib_3d_plugins.reg3dad as reg3dad

    classes = {"BTF": btf.BTF, "PatchCore3D": patchcore3d.PatchCore3D, "Reg3DAD": reg3dad.Reg3DAD}
    return classes[name](**{**MODELS[name], **kwargs})


def _engine(root: Path):  # noqa: ANN202
    from anomalib.engine import Engine

    from anomalib_3d.data.adapters import DepthDataRepair

    # DepthDataRepair: anomalib's MVTec3D tables under pandas 3 (until the mixin adds it itself).
    return Engine(default_root_dir=root, accelerator="cpu", devices=1, logger=False, callbacks=[DepthDataRepair()])


@pytest.mark.parametrize("name", list(MODELS))
def test_cli_train_resolves_short_name_and_reports_metrics(name: str, tmp_path: Path) -> None:
    command = [
        str(ANOMALIB), "train", "--model", name, *_flags(name),
        "--data", "Synthetic3D", "--data.root", str(tmp_path / "data"), "--data.category", "cup",
        "--data.num_train", "3", "--data.num_test_good", "2", "--data.num_test_per_defect", "1",
        "--data.num_points", "1024", "--data.num_workers", "0",
        "--trainer.accelerator", "cpu", "--default_root_dir", str(tmp_path / "results"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    for metric in ("image_AUROC", "image_AP", "point_AUROC", "point_AUPRO"):
        assert metric in output
    assert list((tmp_path / "results").rglob("*.ckpt")), "no checkpoint written"


@pytest.mark.parametrize("name", list(MODELS))
def test_checkpoint_reload_gives_identical_predictions(name: str, tmp_path: Path) -> None:
    datamodule = _synthetic(tmp_path / "data")
    model = _model(name, visualizer=False, evaluator=False)
    engine = _engine(tmp_path / "results")
    engine.fit(model, datamodule=datamodule)
    path = tmp_path / "model.ckpt"
    engine.trainer.save_checkpoint(path)
    loaded = type(model).load_from_checkpoint(path, visualizer=False, evaluator=False)
    model.eval()
    loaded.eval()
    datamodule.setup("test")
    for batch in datamodule.test_dataloader():
        first = model.test_step(batch.clone() if hasattr(batch, "clone") else batch)
        second = loaded.test_step(batch)
        assert torch.equal(first.anomaly_map, second.anomaly_map)
        assert torch.equal(first.pred_score, second.pred_score)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("source", ["Synthetic3D-mvtec3d", "MVTec3DPointCloud", "MVTec3D"])
def test_organized_datamodules(name: str, source: str, tmp_path: Path, mvtec3d_root: Path) -> None:
    if source == "Synthetic3D-mvtec3d":
        datamodule = _synthetic(tmp_path / "data", layout="mvtec3d")
    elif source == "MVTec3DPointCloud":
        from anomalib_3d.data.datamodules.mvtec3d import MVTec3DPointCloud

        datamodule = MVTec3DPointCloud(
            root=mvtec3d_root, category="bagel", remove_background=False, grid_size=None, num_workers=0,
            train_batch_size=2, eval_batch_size=2,
        )
    else:  # anomalib's own datamodule (DepthBatch) on a synthetic MVTec 3D-AD-layout folder
        from anomalib.data import MVTec3D

        from anomalib_3d.data.synthetic import generate_synthetic_dataset

        root = generate_synthetic_dataset(
            tmp_path / "mvtec", categories=["cup"], layout="mvtec3d", num_train=3, num_validation=1,
            num_test_good=2, num_test_per_defect=1, defect_types=("bulge", "hole"), image_size=(64, 64),
            progress=False, num_workers=0,
        )
        datamodule = MVTec3D(root=root, category="cup", num_workers=0, train_batch_size=2, eval_batch_size=2)
    overrides = {"patch_grid": 8} if name == "BTF" else {}
    if name == "PatchCore3D":
        overrides = {"num_points": 256, "num_groups": 32, "group_size": 8}
    if name == "Reg3DAD":
        overrides = {"registration": "icp"}
    model = _model(name, visualizer=False, **overrides)
    engine = _engine(tmp_path / "results")
    engine.fit(model, datamodule=datamodule)
    (results,) = engine.test(model, datamodule=datamodule, verbose=False)
    for metric in ("image_AUROC", "point_AUROC"):
        assert metric in results and math.isfinite(results[metric])
