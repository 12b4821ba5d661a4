"""Predict on new scans through anomalib's ``Engine``: which files a path names, the reading options a
checkpoint records, the outputs (``predictions.csv``, scored PLY files), bad files, and the same
scores as ``anomalib test``."""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from doubles.predict import (
    CORRUPT,
    NOT_A_SCAN,
    SCORED,
    TestOutputs,
    short_ascii_pcd,
    truncated_binary_pcd,
    write_mixed_scans,
)
from lightning.pytorch import Callback

from anomalib_3d.data.predict import (
    DEFAULT_PREPROCESSING,
    PointCloudPredictDataset,
    PointCloudPredictRoute,
    describe_preprocessing,
    holds_point_clouds,
    list_predict_inputs,
)
from anomalib_3d.errors import (
    CloudTooLargeError,
    CorruptFileError,
    DatasetRootNotFoundError,
    EmptySplitError,
    NoScanScoredError,
    UnsupportedFormatError,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"num_train": 3, "num_test_good": 2, "num_test_per_defect": 1, "defect_types": ["bulge", "hole"],
        "train_batch_size": 4, "eval_batch_size": 4, "num_workers": 0}


def _synthetic(root: Path, layout: str):  # noqa: ANN202
    from anomalib_3d.data.datamodules.synthetic import Synthetic3D

    return Synthetic3D(root=root, category="cup", layout=layout, num_points=1024, image_size=(64, 64), **TINY)


def _engine(root: Path, callbacks: list[Callback] | None = None):  # noqa: ANN202
    from anomalib.engine import Engine

    return Engine(default_root_dir=root, accelerator="cpu", devices=1, logger=False, callbacks=callbacks or [])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """BTF fitted on tiny unorganized and organized (support plane removed) Synthetic3D; test outputs kept."""
    from anomalib_3d_plugins.btf import BTF

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("predict")
    runs = {}
    for layout in ("real3d", "mvtec3d"):
        datamodule = _synthetic(root / "data", layout)
        capture = TestOutputs()
        engine = _engine(root / f"results_{layout}", [capture])
        model = BTF(feature_mode="fpfh", visualizer=False)
        engine.fit(model, datamodule=datamodule)
        engine.test(model, datamodule=datamodule)
        runs[layout] = {
            "ckpt": Path(engine.trainer.checkpoint_callback.best_model_path),
            "datamodule": datamodule,
            "test": capture.per_file(),
        }
    runs["root"] = root
    return runs


def _predict(ckpt: Path, data_path: Path, results: Path, **model_kwargs: object) -> Path:
    """``Engine.predict(model, ckpt_path=..., data_path=...)``; returns the predictions folder."""
    from anomalib_3d_plugins.btf import BTF

    engine = _engine(results)
    engine.predict(BTF(feature_mode="fpfh", visualizer=False, **model_kwargs), ckpt_path=ckpt, data_path=data_path)
    return Path(engine.trainer.default_root_dir) / "predictions"


def _rows(folder: Path) -> dict[str, dict[str, str]]:
    with (folder / "predictions.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["file", "pred_score", "pred_label", "error"]
        return {Path(row["file"]).name: row for row in reader}


def _mixed_scans(folder: Path, fitted: dict) -> Path:
    from anomalib_3d.data.io import read_point_cloud

    paths = sorted(fitted["real3d"]["test"])
    clouds = [read_point_cloud(paths[i % len(paths)]).points for i in range(5)]
    organized = next(p for p in sorted(fitted["mvtec3d"]["test"]) if p.endswith(".tiff"))
    import tifffile

    xyz = tifffile.imread(organized)
    rgb = (np.random.default_rng(0).random((*xyz.shape[:2], 3)) * 255).astype(np.uint8)
    return write_mixed_scans(folder, clouds, (xyz, rgb))


# ------------------------------------------------------------------------------------------------
# which files a path names
# ------------------------------------------------------------------------------------------------
def test_inputs_of_a_mixed_folder(tmp_path: Path) -> None:
    import tifffile
    from PIL import Image

    clouds = [np.random.default_rng(i).random((50, 3)) for i in range(5)]
    xyz = np.random.default_rng(5).random((8, 8, 3)).astype(np.float32)
    folder = write_mixed_scans(tmp_path / "scans", clouds, (xyz, np.zeros((8, 8, 3), np.uint8)))
    mvtec = folder / "line2" / "good"  # MVTec layout: xyz/ with rgb/ and gt/ beside it
    for sub in ("xyz", "rgb", "gt"):
        (mvtec / sub).mkdir(parents=True)
    tifffile.imwrite(mvtec / "xyz" / "000.tiff", xyz, photometric="rgb")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(mvtec / "rgb" / "000.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(mvtec / "gt" / "000.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "photo.jpg")

    inputs = list_predict_inputs(folder)
    scans = {str(s.relative): s for s in inputs.scans}
    assert sorted(scans) == sorted([*SCORED, CORRUPT, "line2/good/xyz/000.tiff"])
    assert scans["f_scan.tiff"].kind == "organized" and scans["f_scan.tiff"].rgb_path == folder / "f_scan.png"
    assert scans["line2/good/xyz/000.tiff"].rgb_path == mvtec / "rgb" / "000.png"
    assert scans["a_scan.pcd"].kind == "cloud" and scans["a_scan.pcd"].rgb_path is None
    assert sorted(inputs.companions) == sorted([folder / "f_scan.png", mvtec / "rgb" / "000.png", mvtec / "gt" / "000.png"])
    rejected = {p.name: e for p, e in inputs.rejected}
    assert sorted(rejected) == sorted([NOT_A_SCAN, "photo.jpg"])
    assert all(isinstance(e, UnsupportedFormatError) for e in rejected.values())
    assert "image without an xyz .tiff" in str(rejected["photo.jpg"])
    assert inputs.hidden == [folder / ".DS_Store"]


def test_inputs_of_a_file_a_glob_and_bad_paths(tmp_path: Path) -> None:
    clouds = [np.random.default_rng(i).random((50, 3)) for i in range(5)]
    folder = write_mixed_scans(tmp_path / "scans", clouds, (np.ones((4, 4, 3), np.float32), None))
    single = list_predict_inputs(folder / "c_scan.xyz")
    assert [s.path for s in single.scans] == [folder / "c_scan.xyz"] and single.root == folder
    matched = list_predict_inputs(str(folder / "**" / "*_scan.*"))
    assert sorted(str(s.relative) for s in matched.scans) == sorted(SCORED)
    assert matched.root == folder
    with pytest.raises(DatasetRootNotFoundError):
        list_predict_inputs(tmp_path / "missing")
    with pytest.raises(DatasetRootNotFoundError):
        list_predict_inputs(str(tmp_path / "missing" / "*.pcd"))
    with pytest.raises(UnsupportedFormatError):
        list_predict_inputs(folder / NOT_A_SCAN)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.md").write_text("x")
    with pytest.raises(EmptySplitError):
        list_predict_inputs(tmp_path / "docs")


def test_point_clouds_and_images_are_told_apart(tmp_path: Path) -> None:
    import tifffile
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "a.png")
    tifffile.imwrite(images / "b.tiff", np.zeros((8, 8, 3), np.uint8), photometric="rgb")  # an RGB photo saved as TIFF
    assert not holds_point_clouds(images)
    tifffile.imwrite(images / "c.tiff", np.ones((8, 8, 3), np.float32), photometric="rgb")  # an organized xyz grid
    assert holds_point_clouds(images)
    clouds = tmp_path / "clouds"
    clouds.mkdir()
    np.save(clouds / "a.npy", np.random.default_rng(0).random((20, 3)))
    assert holds_point_clouds(clouds) and holds_point_clouds(clouds / "a.npy")
    assert not holds_point_clouds(tmp_path / "missing")


def test_engine_predict_route(tmp_path: Path) -> None:
    """anomalib's engine builds our dataset for point clouds and its own for images."""
    from anomalib.data import PredictDataset
    from anomalib.engine import engine
    from PIL import Image

    assert engine.PredictDataset is PointCloudPredictRoute
    clouds = tmp_path / "clouds"
    clouds.mkdir()
    np.save(clouds / "a.npy", np.random.default_rng(0).random((20, 3)))
    assert isinstance(engine.PredictDataset(clouds), PointCloudPredictDataset)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "a.png")
    dataset = engine.PredictDataset(images)
    assert type(dataset) is PredictDataset and len(dataset) == 1
    code = "from anomalib.engine import engine; from anomalib.data import PredictDataset; print(engine.PredictDataset is PredictDataset)"
    env = {**os.environ, "ANOMALIB3D_PREDICT_ROUTE": "0"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=True)
    assert done.stdout.strip().splitlines()[-1] == "True"


# ------------------------------------------------------------------------------------------------
# reading options: recorded at fit, stored in the checkpoint, applied at predict
# ------------------------------------------------------------------------------------------------
def test_checkpoint_records_the_reading_options(fitted: dict) -> None:
    record = torch.load(fitted["mvtec3d"]["ckpt"], weights_only=True)["anomalib_pre_processor_config"]["point_cloud_inputs"]
    assert record == describe_preprocessing(fitted["mvtec3d"]["datamodule"])
    assert record["remove_background"] is True and record["categories"] == ["cup"]
    assert record["datamodule"] == "Synthetic3D" and record["grid_size"] is None


def test_predict_items_are_the_test_items(fitted: dict) -> None:
    """Read with the record, a scan gives the test split's points; with the defaults the plane stays."""
    datamodule = fitted["mvtec3d"]["datamodule"]
    test = datamodule.test_data
    tiffs = sorted(test.samples.image_path)
    dataset = PointCloudPredictDataset(Path(tiffs[0]).parents[2])  # <category>/test: every defect folder
    dataset.configure(describe_preprocessing(datamodule))
    items = {item.point_path: item for item in dataset}
    assert sorted(items) == tiffs
    for index, path in enumerate(test.samples.image_path):
        expected, got = test[index], items[path]
        assert torch.equal(got.points, expected.points)
        assert torch.equal(got.grid_index, expected.grid_index)
        assert torch.equal(got.image, expected.image)
        assert got.gt_label is None and got.gt_mask is None and got.category == "cup"
    plain = PointCloudPredictDataset(tiffs[0])
    plain.configure(None)
    assert next(iter(plain)).num_points > test[0].num_points  # the support plane is kept


def test_checkpoint_without_a_record_reads_with_the_defaults(fitted: dict, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    checkpoint = torch.load(fitted["mvtec3d"]["ckpt"], weights_only=False)
    del checkpoint["anomalib_pre_processor_config"]["point_cloud_inputs"]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    scan = next(p for p in sorted(fitted["mvtec3d"]["test"]) if p.endswith(".tiff"))
    with caplog.at_level(logging.WARNING, logger="anomalib_3d.data.predict.dataset"):
        folder = _predict(old, Path(scan), tmp_path / "results")
    lines = [r.getMessage() for r in caplog.records if "records no input preprocessing" in r.getMessage()]
    assert len(lines) == 1 and str(DEFAULT_PREPROCESSING) in lines[0]
    assert _rows(folder)[Path(scan).name]["error"] == ""


# ------------------------------------------------------------------------------------------------
# outputs, bad files, same numbers as test
# ------------------------------------------------------------------------------------------------
def test_predict_writes_verdicts_scored_clouds_and_named_errors(fitted: dict, tmp_path: Path) -> None:
    import open3d as o3d

    from anomalib_3d.data.io import read_organized_xyz, read_point_cloud

    scans = _mixed_scans(tmp_path / "scans", fitted)
    folder = _predict(fitted["real3d"]["ckpt"], scans, tmp_path / "results")
    rows = _rows(folder)
    assert sorted(rows) == sorted([Path(s).name for s in (*SCORED, CORRUPT, NOT_A_SCAN)])
    for name in SCORED:
        row = rows[Path(name).name]
        assert row["error"] == "", row
        score = float(row["pred_score"])
        assert 0.0 <= score <= 1.0
        # anomalib's post-processor: normalised threshold 0.5
        assert row["pred_label"] == str(int(score > 0.5))
        ply = o3d.t.io.read_point_cloud(str((folder / name).with_suffix(".ply")))
        values = ply.point["anomaly_score"].numpy().reshape(-1)
        source = scans / name
        if source.suffix == ".tiff":
            xyz = read_organized_xyz(source)
            expected = xyz[np.abs(xyz).sum(axis=2) > 0]  # all-zero pixels hold no point
        else:
            expected = read_point_cloud(source).points
        assert values.shape == (expected.shape[0],) and np.all((values >= 0) & (values <= 1))
        np.testing.assert_allclose(ply.point["positions"].numpy(), expected, rtol=0, atol=1e-6)
    assert rows[CORRUPT]["error"].startswith("CorruptFileError: ")
    assert rows[NOT_A_SCAN]["error"].startswith("UnsupportedFormatError: ")
    assert rows[CORRUPT]["pred_score"] == "" and rows[CORRUPT]["pred_label"] == ""


@pytest.mark.parametrize("layout", ["real3d", "mvtec3d"])
def test_predicted_scores_equal_test_scores(fitted: dict, layout: str, tmp_path: Path) -> None:
    """Each test file predicted alone scores as ``anomalib test`` scored it (object and per point)."""
    import open3d as o3d

    for index, (path, (test_score, test_map)) in enumerate(sorted(fitted[layout]["test"].items())):
        folder = _predict(fitted[layout]["ckpt"], Path(path), tmp_path / f"results{index}")
        row = _rows(folder)[Path(path).name]
        assert abs(float(row["pred_score"]) - test_score) <= 1e-5, (path, row, test_score)
        ply = o3d.t.io.read_point_cloud(str(folder / (Path(path).stem + ".ply")))
        predicted_map = ply.point["anomaly_score"].numpy().reshape(-1)
        assert predicted_map.shape == test_map.shape
        np.testing.assert_allclose(predicted_map, test_map, rtol=0, atol=1e-5)


def test_bad_bodies_are_rows_and_nothing_scored_fails(fitted: dict, tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    short_ascii_pcd(scans / "short.pcd", np.random.default_rng(0).random((30, 3)))
    with pytest.raises(NoScanScoredError) as raised:
        _predict(fitted["real3d"]["ckpt"], scans, tmp_path / "results")
    assert len(raised.value.problems) == 1 and isinstance(raised.value.problems[0], CorruptFileError)
    table = next((tmp_path / "results").rglob("predictions.csv"))
    rows = _rows(table.parent)
    assert rows["short.pcd"]["error"].startswith("CorruptFileError: ")
    only_broken = tmp_path / "broken"
    truncated_binary_pcd(only_broken / "cut.pcd")
    with pytest.raises(NoScanScoredError):  # every header is bad: stops before the model is loaded
        PointCloudPredictDataset(only_broken)


def test_scans_the_model_cannot_take_are_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    scans = write_mixed_scans(tmp_path / "scans", [np.random.default_rng(i).random((50, 3)) for i in range(5)],
                              (np.random.default_rng(5).random((8, 8, 3)).astype(np.float32), None))
    dataset = PointCloudPredictDataset(scans)
    dataset.configure(None, SimpleNamespace(requires_organized=True))
    assert [Path(item.point_path).name for item in dataset] == ["f_scan.tiff"]
    refused = {p.name: e for p, e in dataset.read_failures}
    assert sorted(refused) == sorted(Path(s).name for s in SCORED[:-1])
    assert all(isinstance(e, UnsupportedFormatError) and "organized" in str(e) for e in refused.values())
    monkeypatch.setenv("ANOMALIB3D_MAX_CLOUD_POINTS", "60")  # the 8x8 grid has 64 points
    dataset.configure(None, SimpleNamespace())
    assert len(list(dataset)) == 5
    assert [(p.name, type(e)) for p, e in dataset.read_failures] == [("f_scan.tiff", CloudTooLargeError)]
    assert {p.name for p, _ in dataset.failures} == {"f_scan.tiff", CORRUPT, NOT_A_SCAN}


def test_unknown_preprocessing_option_and_workers_are_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.random.default_rng(0).random((20, 3)))
    with pytest.raises(ValueError, match="unknown preprocessing"):
        PointCloudPredictDataset(tmp_path, preprocessing={"grid": 3})
    dataset = PointCloudPredictDataset(tmp_path, preprocessing={"remove_background": True})
    dataset.configure({**DEFAULT_PREPROCESSING, "remove_background": False})
    assert dataset.preprocessing["remove_background"] is True
    loader = torch.utils.data.DataLoader(dataset, num_workers=1, collate_fn=dataset.collate_fn)
    with pytest.raises(RuntimeError, match="num_workers=0"):
        next(iter(loader))


def test_write_ply_plain_scalar_names(tmp_path: Path) -> None:
    import open3d as o3d

    from anomalib_3d.data.io import write_ply

    points = np.random.default_rng(0).random((10, 3)).astype(np.float32)
    scores = np.linspace(0, 1, 10, dtype=np.float32)
    write_ply(tmp_path / "a.ply", points, scalars={"anomaly_score": scores}, binary=True, scalar_prefix="")
    cloud = o3d.t.io.read_point_cloud(str(tmp_path / "a.ply"))
    np.testing.assert_array_equal(cloud.point["anomaly_score"].numpy().reshape(-1), scores)
    with pytest.raises(ValueError, match="already a property"):
        write_ply(tmp_path / "b.ply", points, scalars={"x": scores}, scalar_prefix="")


def test_writer_gives_image_batches_rows_without_clouds(tmp_path: Path) -> None:
    """Batches without points (anomalib's DepthBatch from its own datamodules) get table rows only."""
    from types import SimpleNamespace

    from anomalib_3d.visualization.predictions import PredictionWriter

    writer = PredictionWriter(output_dir=tmp_path)
    trainer = SimpleNamespace(default_root_dir=str(tmp_path), predict_dataloaders=[])
    writer.on_predict_start(trainer, None)
    depth = SimpleNamespace(pred_score=torch.tensor([0.25, 0.75]), pred_label=torch.tensor([False, True]),
                            depth_path=["a/xyz/000.tiff", "a/xyz/001.tiff"])
    writer.on_predict_batch_end(trainer, None, depth, depth, 0)
    writer.on_predict_end(trainer, None)
    rows = _rows(tmp_path)
    assert rows["000.tiff"] == {"file": "a/xyz/000.tiff", "pred_score": "0.25", "pred_label": "0", "error": ""}
    assert rows["001.tiff"]["pred_label"] == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]
