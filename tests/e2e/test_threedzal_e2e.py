"""3DzAL end to end on the CPU (small preset, tiny data).

* ``anomalib train --model ThreeDzAL --data MVTec3D`` (anomalib's own datamodule) on a hand-written
  MVTec 3D-AD-layout folder, and the synthetic leave-one-out experiment config, through the CLI;
* the held-out category's files are never read while fitting (the reader is patched and records);
* save -> load -> identical predictions.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from doubles.checkpoints import assert_reload_predicts_the_same
from doubles.cli import CPU_TRAINER, assert_finite_metrics, mvtec3d_data, run_anomalib
from doubles.mvtec3d import write_dome_mvtec3d

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TINY = {"num_train": 3, "num_test_good": 2, "num_test_per_defect": 1, "defect_types": ["bulge", "hole"],
        "layout": "mvtec3d", "image_size": [64, 64]}
TINY_MODEL_ARGS = [
    "--model.grid_size", "64", "--model.max_epochs", "1", "--model.max_task_irrelevant", "4",
    "--model.generator_backbone", "small", "--model.feature_dim", "8", "--model.pointnet_centroids", "4",
    "--model.pointnet_widths", "[8, 16]", "--model.positives_per_sample", "8", "--model.blur_sigma", "1.0",
    "--model.fpfh_radius", "0.012", "--model.fpfh_normal_k", "8", "--model.top_fraction", "0.01",
]
#: The target: three normal training scans, two good and two bumped test scans.
LAYOUT = {("train", "good"): 3, ("validation", "good"): 1, ("test", "good"): 2, ("test", "bump"): 2}


def _task_irrelevant(root: Path) -> list[dict]:
    return [{"dataset": "synthetic3d", "root": str(root), "categories": ["bottle"], "split": "train", "options": TINY}]


def test_cli_on_anomalib_mvtec3d(tmp_path: Path) -> None:
    root = write_dome_mvtec3d(tmp_path / "MVTec3D", layout=LAYOUT)
    task_irrelevant = yaml.safe_dump(_task_irrelevant(tmp_path / "synthetic"), default_flow_style=True)
    out = run_anomalib(
        ["train", "--model", "ThreeDzAL", *TINY_MODEL_ARGS, "--model.rgb_backbone", "null",
         "--model.task_irrelevant", task_irrelevant, *mvtec3d_data(root), *CPU_TRAINER,
         "--default_root_dir", str(tmp_path / "results")],
        cwd=tmp_path,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-5000:]
    assert_finite_metrics(log, ("image_AUROC", "image_AP", "point_AUROC", "point_AUPRO"))
    run_dir = tmp_path / "results" / "ThreeDzAL" / "MVTec3D" / "bagel"
    assert list(run_dir.rglob("images/**/*.png")), sorted(str(p) for p in run_dir.rglob("*"))


def _tiny_experiment(tmp_path: Path) -> Path:
    config = yaml.safe_load((REPO / "configs/experiments/threedzal_synthetic_leave_one_out.yaml").read_text())
    config["default_root_dir"] = str(tmp_path / "results")
    args = config["model"]["init_args"]
    args.update(grid_size=64, max_epochs=1, max_task_irrelevant=4, feature_dim=8, pointnet_centroids=4,
                positives_per_sample=8, blur_sigma=1.0, fpfh_radius=0.012, fpfh_normal_k=8)
    data = config["data"]["init_args"]
    for key in ("fit_sources", "task_irrelevant_sources", "test_sources"):
        for source in data[key]:
            source["root"] = str(tmp_path / "synthetic")
            source["options"] = dict(TINY)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_synthetic_leave_one_out_config_through_the_cli(tmp_path: Path) -> None:
    out = run_anomalib(["train", "--config", str(_tiny_experiment(tmp_path))], cwd=tmp_path)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-5000:]
    for metric in ("image_AUROC", "image_AP", "point_AUROC", "point_AUPRO"):
        assert metric in log
    assert "interest regions" in log or "3DzAL" in log
    assert list((tmp_path / "results").rglob("*.png"))


def _datamodule(root: Path, test_category: str = "gear"):  # noqa: ANN202
    from anomalib_3d.data.datamodules.zero_shot import ZeroShot3D

    source = {"dataset": "synthetic3d", "root": str(root), "options": TINY}
    return ZeroShot3D(
        fit_sources=[{**source, "categories": ["cup"], "split": "train"}],
        task_irrelevant_sources=[{**source, "categories": ["bottle", "bowl"], "split": "train"}],
        test_sources=[{**source, "categories": [test_category], "split": "test"}],
        grid_size=None, train_batch_size=2, eval_batch_size=2,
    )


def _tiny_model(**kwargs: object):  # noqa: ANN202
    from anomalib_3d_plugins.threedzal import ThreeDzAL

    torch.manual_seed(0)
    return ThreeDzAL.small(grid_size=64, max_epochs=1, max_task_irrelevant=4, feature_dim=8, pointnet_centroids=4,
                           positives_per_sample=8, blur_sigma=1.0, fpfh_radius=0.012, fpfh_normal_k=8,
                           visualizer=False, **kwargs)


def test_target_category_is_never_read_while_fitting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    from anomalib.engine import Engine

    import anomalib_3d.data.io as io

    reads: list[tuple[str, str]] = []
    engine = Engine(default_root_dir=tmp_path / "results", accelerator="cpu", devices=1, logger=False,
                    enable_progress_bar=False)
    original = io.read_organized_xyz

    def recording_reader(path):  # noqa: ANN001, ANN202
        trainer = getattr(engine, "_trainer", None)
        stage = "none"
        if trainer is not None:
            stage = "validating" if trainer.validating or trainer.sanity_checking else ("training" if trainer.training else "other")
        reads.append((str(path), stage))
        return original(path)

    monkeypatch.setattr(io, "read_organized_xyz", recording_reader)
    datamodule = _datamodule(tmp_path / "synthetic")
    model = _tiny_model()
    engine.fit(model, datamodule=datamodule)
    fitting = [p for p, stage in reads if stage == "training"]
    assert fitting, "the recorder saw no fitting read"
    categories_read = {Path(p).parts[-5] for p in fitting}  # <root>/<cat>/<split>/<defect>/xyz/NNN.tiff
    assert categories_read <= {"cup", "bottle", "bowl"}, categories_read
    assert "gear" not in categories_read
    assert {"cup", "bottle", "bowl"} <= categories_read  # normal data and task-irrelevant data both used
    assert not [p for p in model.fit_paths if "/gear/" in p]
    # the test category is refused as fitting or task-irrelevant data
    from anomalib_3d.data.datamodules.zero_shot import ZeroShot3D

    bad = ZeroShot3D(
        fit_sources=[{"dataset": "synthetic3d", "root": str(tmp_path / "synthetic"), "categories": ["cup"], "split": "train", "options": TINY}],
        task_irrelevant_sources=[{"dataset": "synthetic3d", "root": str(tmp_path / "synthetic"), "categories": ["gear"], "split": "train", "options": TINY}],
        test_sources=[{"dataset": "synthetic3d", "root": str(tmp_path / "synthetic"), "categories": ["gear"], "split": "test", "options": TINY}],
        grid_size=None,
    )
    with pytest.raises(ValueError, match="not zero-shot"):
        bad.setup()


def test_save_load_gives_identical_predictions(tmp_path: Path, one_thread: None) -> None:
    from anomalib.engine import Engine

    from anomalib_3d_plugins.threedzal import ThreeDzAL

    datamodule = _datamodule(tmp_path / "synthetic")
    model = _tiny_model()
    engine = Engine(default_root_dir=tmp_path / "results", accelerator="cpu", devices=1, logger=False,
                    enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)
    path = tmp_path / "threedzal.ckpt"
    engine.trainer.save_checkpoint(path)
    loaded = ThreeDzAL.load_from_checkpoint(path, visualizer=False)
    assert loaded.model.memory_bank.is_fitted
    assert torch.equal(loaded.model.memory_bank.bank, model.model.memory_bank.bank)
    batch, scores = assert_reload_predicts_the_same(model, loaded, datamodule)
    assert scores.anomaly_map.shape[0] == batch.points.shape[0]  # every input point gets a score
