"""PointAD end to end with a tiny random ViT on the CPU.

* the headline command ``anomalib train --model PointAD --data MVTec3D ...`` on a hand-written
  MVTec 3D-AD-layout folder (organized xyz tiff + rgb png + gt png), and on ``Synthetic3D``: the
  printed metrics must be finite numbers;
* a separable case (a backbone stand-in that sees the defects' colour): the full pipeline — render
  of a sensor-frame scan, gather to points, grid smoothing, metrics — must beat chance clearly;
* the target's train split is never read during ``fit`` (the auxiliary loader replaces it);
* save -> load -> identical predictions.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from doubles.checkpoints import assert_reload_predicts_the_same
from doubles.cli import CPU_TRAINER, assert_finite_metrics, mvtec3d_data, run_anomalib
from doubles.mvtec3d import write_dome_mvtec3d

pytestmark = pytest.mark.slow

TINY_ARGS = [
    "--model.backbone", "pointad-tiny-vit",
    "--model.pretrained", "null",
    "--model.max_epochs", "1",
    "--model.num_views", "3",
    "--model.smoothing_k", "8",
    "--model.organized_grid_size", "48",
    "--model.auxiliary_grid_size", "48",
]


def auxiliary_arg(root: Path) -> str:
    return (
        '{"dataset": "synthetic3d", "root": "' + str(root) + '", "categories": ["cup"], "split": "test", '
        '"options": {"num_train": 1, "num_test_good": 2, "num_test_per_defect": 1, '
        '"defect_types": ["bulge", "hole"], "num_points": 1024}}'
    )


def test_headline_command_on_mvtec3d_layout(tmp_path: Path) -> None:
    root = write_dome_mvtec3d(tmp_path / "MVTec3D")
    out = run_anomalib(
        ["train", "--model", "PointAD", *TINY_ARGS, "--model.auxiliary", auxiliary_arg(tmp_path / "aux"),
         *mvtec3d_data(root), *CPU_TRAINER, "--default_root_dir", str(tmp_path / "results")],
        cwd=tmp_path,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-5000:]
    assert "auxiliary set" in log and "NOT used" in log
    assert_finite_metrics(log, ("image_AUROC", "image_AP", "point_AUROC", "point_AUPRO"))
    run_dir = tmp_path / "results" / "PointAD" / "MVTec3D" / "bagel"
    heatmaps = list(run_dir.rglob("images/**/*.png"))
    assert heatmaps, sorted(str(p) for p in run_dir.rglob("*"))
    assert list(run_dir.rglob("*.ckpt"))


def test_headline_command_on_synthetic3d(tmp_path: Path) -> None:
    out = run_anomalib(
        [
            "train", "--model", "PointAD", *TINY_ARGS,
            "--model.auxiliary", auxiliary_arg(tmp_path / "data"),
            "--data", "Synthetic3D", "--data.root", str(tmp_path / "data"), "--data.category", "gear",
            "--data.num_train", "1", "--data.num_test_good", "2", "--data.num_test_per_defect", "1",
            "--data.defect_types", "[bulge, crack]", "--data.num_points", "1024",
            "--data.num_workers", "0", "--data.eval_batch_size", "1",
            *CPU_TRAINER, "--default_root_dir", str(tmp_path / "results"),
        ],
        cwd=tmp_path,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-5000:]
    assert "auxiliary set" in log
    assert_finite_metrics(log, ("image_AUROC", "point_AUROC"))


def _tiny_model(aux_root: Path, **kwargs: object):  # noqa: ANN202
    from anomalib_3d_plugins.pointad.lightning_model import PointAD

    torch.manual_seed(0)
    arguments = {
        "backbone": "pointad-tiny-vit",
        "pretrained": None,
        "max_epochs": 1,
        "num_views": 3,
        "smoothing_k": 8,
        "organized_grid_size": 48,
        "auxiliary_grid_size": 48,
        "auxiliary": eval(auxiliary_arg(aux_root)),  # noqa: S307 - our own literal
        "visualizer": False,
    }
    return PointAD(**{**arguments, **kwargs})


@pytest.mark.parametrize("pretrained", ["random", "local checkpoint"])
def test_save_load_gives_identical_predictions(tmp_path: Path, pretrained: str, one_thread: None) -> None:
    from anomalib.data import MVTec3D
    from anomalib.engine import Engine

    from anomalib_3d_plugins.pointad.clip_backbone import load_open_clip
    from anomalib_3d_plugins.pointad.lightning_model import PointAD

    weights = None
    if pretrained == "local checkpoint":
        torch.manual_seed(7)
        weights = str(tmp_path / "clip.pt")
        torch.save(load_open_clip("pointad-tiny-vit", None).state_dict(), weights)
    root = write_dome_mvtec3d(tmp_path / "MVTec3D")
    model = _tiny_model(tmp_path / "aux", pretrained=weights)
    datamodule = MVTec3D(root=root, category="bagel", num_workers=0, train_batch_size=2, eval_batch_size=2)
    engine = Engine(default_root_dir=tmp_path / "results", accelerator="cpu", devices=1, logger=False)
    engine.fit(model, datamodule=datamodule)
    path = tmp_path / "pointad.ckpt"
    engine.trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=False)["state_dict"]
    has_backbone = any(k.startswith("model.backbone.") for k in state)
    assert has_backbone == (weights is None)  # frozen pretrained weights are rebuilt, not stored
    loaded = PointAD.load_from_checkpoint(path, visualizer=False)
    assert_reload_predicts_the_same(model, loaded, datamodule)
    trained = dict(model.model.prompt_learner.named_parameters())
    for name, value in loaded.model.prompt_learner.named_parameters():
        assert torch.equal(value, trained[name])


def test_target_train_split_is_never_read(tmp_path: Path, one_thread: None) -> None:
    """A fit through the target datamodule reads the auxiliary loader (ModelTrainData), never its train split."""
    from anomalib.data import MVTec3D
    from anomalib.engine import Engine

    class GuardedMVTec3D(MVTec3D):
        def train_dataloader(self):  # noqa: ANN202
            msg = "the target's train split must not be used by a zero-shot model"
            raise AssertionError(msg)

    root = write_dome_mvtec3d(tmp_path / "MVTec3D")
    model = _tiny_model(tmp_path / "aux", evaluator=False)
    seen: list[str] = []
    step = model.training_step

    def recording_step(batch, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.extend(batch.point_path)
        return step(batch, *args, **kwargs)

    model.training_step = recording_step
    datamodule = GuardedMVTec3D(root=root, category="bagel", num_workers=0, train_batch_size=2, eval_batch_size=2)
    engine = Engine(default_root_dir=tmp_path / "results", accelerator="cpu", devices=1, logger=False)
    engine.fit(model, datamodule=datamodule)
    assert seen and all("/cup/" in p for p in seen)
    assert "train_dataloader" not in datamodule.__dict__  # restored after fit


def test_separable_case_beats_chance(tmp_path: Path, one_thread: None) -> None:
    """The defects of the MVTec-layout scans are blue (rgb png, hence the points' colours); a
    backbone stand-in whose tokens measure blueness makes them obvious. Rendering the organized
    scans (sensor frame, flipped, MVTec rig), gathering to points, smoothing on the grid and
    anomalib's metrics must then separate them: finite and far above chance."""
    from anomalib.data import MVTec3D
    from anomalib.engine import Engine

    from doubles.pointad import BlueCueBackbone, FixedPrompts
    from anomalib_3d_plugins.pointad.torch_model import PointADModel

    root = write_dome_mvtec3d(tmp_path / "MVTec3D", size=48)
    model = _tiny_model(tmp_path / "aux", use_colors=True, use_rgb=False, num_views=None)  # the MVTec rig
    model.model = PointADModel(BlueCueBackbone(image_size=64, grid_size=16), FixedPrompts(),
                               render=model.model.render_settings, smoothing_sigma=1.0)
    model.save_backbone = True
    datamodule = MVTec3D(root=root, category="bagel", num_workers=0, train_batch_size=2, eval_batch_size=2)
    engine = Engine(default_root_dir=tmp_path / "results", accelerator="cpu", devices=1, logger=False)
    engine.fit(model, datamodule=datamodule)
    (metrics,) = engine.test(model, datamodule=datamodule)
    for name in ("image_AUROC", "point_AUROC", "point_AUPRO"):
        assert math.isfinite(metrics[name]), metrics
    assert metrics["image_AUROC"] > 0.9, metrics
    assert metrics["point_AUROC"] > 0.9, metrics
