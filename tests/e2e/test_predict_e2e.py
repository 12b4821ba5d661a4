"""``anomalib train`` then ``anomalib predict --data <folder>`` for every point model, through anomalib's CLI.

The folder mixes every scan format (``.pcd .ply .xyz .txt .npy``, an organized ``.tiff`` with its
RGB ``.png``), one corrupt file and one file that is not a scan: ``predictions.csv`` must hold one
row per file, the bad ones with their named errors, and the scored PLY files must load in Open3D
with the per-point ``anomaly_score``. 3DzAL scores organized scans only: the unorganized clouds get
a named error each.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from doubles.predict import CORRUPT, NOT_A_SCAN, SCORED, TestOutputs, short_ascii_pcd, write_mixed_scans

pytestmark = pytest.mark.slow

ANOMALIB = Path(sys.executable).with_name("anomalib")
TINY_DATA = {"num_train": 3, "num_test_good": 2, "num_test_per_defect": 1, "defect_types": ["bulge", "hole"],
             "num_points": 1024, "image_size": [64, 64]}

POINTAD_AUXILIARY = {"dataset": "synthetic3d", "categories": ["cup"], "split": "test",
                     "options": {"num_train": 1, "num_test_good": 2, "num_test_per_defect": 1,
                                 "defect_types": ["bulge", "hole"], "num_points": 1024}}
THREEDZAL_IRRELEVANT = {"dataset": "synthetic3d", "categories": ["bottle"], "split": "train",
                        "options": {**TINY_DATA, "layout": "mvtec3d"}}

#: Model flags (the same at train and predict: they shape the network the checkpoint fills) and the
#: Synthetic3D layout each model is fitted on.
MODELS: dict[str, tuple[list[str], str]] = {
    "BTF": (["--model.feature_mode", "fpfh"], "real3d"),
    "PatchCore3D": (["--model.feature_sources", "[fpfh, raw]", "--model.num_points", "1024", "--model.num_groups", "64",
                     "--model.group_size", "16"], "real3d"),
    "Reg3DAD": (["--model.registration", "global+icp", "--model.num_templates", "2", "--model.template_points",
                 "1024", "--model.registration_points", "512"], "real3d"),
    "IMRNet": (["--model.num_points", "512", "--model.num_groups", "32", "--model.group_size", "16",
                "--model.gps_k", "8", "--model.embed_dim", "32", "--model.tokenizer_width", "32",
                "--model.encoder_depth", "1", "--model.decoder_depth", "2", "--model.num_heads", "2",
                "--model.feature_layers", "[1, 2]", "--model.template_size", "256", "--trainer.max_epochs", "2"],
               "real3d"),
    "PointAD": (["--model.backbone", "pointad-tiny-vit", "--model.pretrained", "null", "--model.max_epochs", "1",
                 "--model.num_views", "3", "--model.smoothing_k", "8", "--model.organized_grid_size", "48",
                 "--model.auxiliary_grid_size", "48"], "real3d"),
    "ThreeDzAL": (["--model.grid_size", "64", "--model.max_epochs", "1", "--model.max_task_irrelevant", "4",
                   "--model.generator_backbone", "small", "--model.feature_dim", "8", "--model.pointnet_centroids",
                   "4", "--model.pointnet_widths", "[8, 16]", "--model.positives_per_sample", "8",
                   "--model.blur_sigma", "1.0", "--model.fpfh_radius", "0.012", "--model.fpfh_normal_k", "8",
                   "--model.top_fraction", "0.01"], "mvtec3d"),
}


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1",
            **extra}


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ANOMALIB), *args], cwd=cwd, env=_env(**env), capture_output=True, text=True,
                          timeout=1500, check=False)


def _training_only_flags(name: str, workspace: Path) -> list[str]:
    if name == "PointAD":
        return ["--model.auxiliary", yaml.safe_dump({**POINTAD_AUXILIARY, "root": str(workspace / "data")},
                                                    default_flow_style=True)]
    if name == "ThreeDzAL":
        return ["--model.task_irrelevant", yaml.safe_dump([{**THREEDZAL_IRRELEVANT, "root": str(workspace / "data")}],
                                                          default_flow_style=True)]
    return []


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both Synthetic3D layouts of the cup (the CLI runs reuse this cache) and the mixed scan folder."""
    import tifffile
    from PIL import Image

    from anomalib_3d.data.datamodules.synthetic import Synthetic3D
    from anomalib_3d.data.io import read_point_cloud

    root = tmp_path_factory.mktemp("predict_e2e")
    tests = {}
    for layout in ("real3d", "mvtec3d"):
        options = {k: v for k, v in TINY_DATA.items()}
        options["image_size"] = tuple(options["image_size"])
        datamodule = Synthetic3D(root=root / "data", category="cup", layout=layout, num_workers=0, **options)
        datamodule.setup()
        tests[layout] = sorted(datamodule.test_data.samples.image_path)
    clouds = [read_point_cloud(tests["real3d"][i % len(tests["real3d"])]).points for i in range(5)]
    tiff = Path(tests["mvtec3d"][-1])
    rgb = np.asarray(Image.open(tiff.parents[1] / "rgb" / f"{tiff.stem}.png").convert("RGB"))
    write_mixed_scans(root / "scans", clouds, (tifffile.imread(tiff), rgb))
    return root


@pytest.fixture(scope="module")
def checkpoints(workspace: Path) -> dict[str, Path]:
    """``anomalib train`` once per model (filled on first use)."""
    return {}


@pytest.fixture(scope="module")
def predictions(workspace: Path) -> dict[str, tuple[subprocess.CompletedProcess, list[Path]]]:
    """``anomalib predict --data scans`` once per model (filled on first use)."""
    return {}


def _train(name: str, workspace: Path, checkpoints: dict[str, Path]) -> Path:
    if name in checkpoints:
        return checkpoints[name]
    flags, layout = MODELS[name]
    results = workspace / "results" / name
    out = _run(["train", "--model", name, *flags, *_training_only_flags(name, workspace),
                "--data", "Synthetic3D", "--data.root", str(workspace / "data"), "--data.category", "cup",
                "--data.layout", layout, *[a for k, v in TINY_DATA.items() for a in (f"--data.{k}", _flag(v))],
                "--data.num_workers", "0", "--data.eval_batch_size", "2",
                "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.logger", "false",
                "--default_root_dir", str(results)], cwd=workspace)
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]
    found = sorted(results.rglob("model.ckpt"))
    assert found, "no checkpoint written"
    checkpoints[name] = found[0]
    return found[0]


def _flag(value: object) -> str:
    return "[" + ", ".join(str(v) for v in value) + "]" if isinstance(value, list) else str(value)


def _predict(name: str, ckpt: Path, data: list[str], workspace: Path, results: str, **env: str) -> tuple:
    out = _run(["predict", "--model", name, *MODELS[name][0], "--ckpt_path", str(ckpt), *data,
                "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.logger", "false",
                "--default_root_dir", str(workspace / results)], cwd=workspace, **env)
    tables = sorted((workspace / results).rglob("predictions.csv"))
    return out, tables


def _rows(table: Path) -> dict[str, dict[str, str]]:
    with table.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["file", "pred_score", "pred_label", "error"]
        return {row["file"]: row for row in reader}


def _predict_mixed(name: str, workspace: Path, checkpoints: dict, predictions: dict) -> tuple:
    if name not in predictions:
        ckpt = _train(name, workspace, checkpoints)
        predictions[name] = _predict(name, ckpt, ["--data", "scans"], workspace, f"predict_{name}")
    return predictions[name]


@pytest.mark.parametrize("name", list(MODELS))
def test_train_then_predict_a_mixed_folder(name: str, workspace: Path, checkpoints: dict, predictions: dict) -> None:
    import open3d as o3d

    out, tables = _predict_mixed(name, workspace, checkpoints, predictions)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-5000:]
    assert len(tables) == 1, log[-3000:]
    rows = _rows(tables[0])
    expected_files = sorted(str(Path("scans") / f) for f in (*SCORED, CORRUPT, NOT_A_SCAN))
    assert sorted(rows) == expected_files
    scored = SCORED if name != "ThreeDzAL" else ("f_scan.tiff",)
    for file in SCORED:
        row = rows[str(Path("scans") / file)]
        if file not in scored:  # 3DzAL: unorganized clouds are refused by name
            assert row["error"].startswith("UnsupportedFormatError: ") and "organized" in row["error"], row
            continue
        assert row["error"] == "", row
        assert 0.0 <= float(row["pred_score"]) <= 1.0 and row["pred_label"] in {"0", "1"}
        ply = tables[0].parent / Path(file).with_suffix(".ply")
        cloud = o3d.t.io.read_point_cloud(str(ply))
        scores = cloud.point["anomaly_score"].numpy().reshape(-1)
        assert scores.shape[0] == cloud.point["positions"].shape[0] > 0
        assert np.all((scores >= 0) & (scores <= 1)) and "colors" in cloud.point
    assert rows[str(Path("scans") / CORRUPT)]["error"].startswith("CorruptFileError: ")
    assert rows[str(Path("scans") / NOT_A_SCAN)]["error"].startswith("UnsupportedFormatError: ")
    assert CORRUPT in log and NOT_A_SCAN in log  # and in the log
    pictures = sorted((workspace / f"predict_{name}").rglob("images/**/*.png"))
    assert len(pictures) == len(scored), pictures


def test_explicit_dataset_without_the_route(workspace: Path, checkpoints: dict, predictions: dict) -> None:
    """The one-line equivalent needs no route: ``--data anomalib_3d.data.PointCloudPredictDataset --data.path``."""
    routed_out, routed_tables = _predict_mixed("BTF", workspace, checkpoints, predictions)
    assert routed_out.returncode == 0
    data = ["--data", "anomalib_3d.data.PointCloudPredictDataset", "--data.path", "scans"]
    out, tables = _predict("BTF", checkpoints["BTF"], data, workspace, "predict_explicit", ANOMALIB3D_PREDICT_ROUTE="0")
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]
    assert _rows(tables[0]) == _rows(routed_tables[0])


def test_exit_status_is_non_zero_only_when_nothing_was_scored(workspace: Path, checkpoints: dict[str, Path]) -> None:
    ckpt = _train("BTF", workspace, checkpoints)
    short_ascii_pcd(workspace / "bad_scans" / "short.pcd", np.random.default_rng(0).random((30, 3)))
    out, tables = _predict("BTF", ckpt, ["--data", "bad_scans"], workspace, "predict_bad")
    log = out.stdout + out.stderr
    assert out.returncode != 0 and "NoScanScoredError" in log, log[-3000:]
    assert _rows(tables[0])[str(Path("bad_scans") / "short.pcd")]["error"].startswith("CorruptFileError: ")


# ------------------------------------------------------------------------------------------------
# same numbers as test, every model (BTF: tests/integration/test_predict.py)
# ------------------------------------------------------------------------------------------------
def _python_model(name: str, workspace: Path):  # noqa: ANN202
    """The model of :data:`MODELS` built in Python (same sizes as the CLI flags)."""
    from anomalib_3d.models import IMRNet, PatchCore3D, PointAD, Reg3DAD, ThreeDzAL

    data = str(workspace / "data")
    if name == "PatchCore3D":
        return PatchCore3D(feature_sources=["fpfh", "raw"], num_points=1024, num_groups=64, group_size=16,
                           visualizer=False)
    if name == "Reg3DAD":
        return Reg3DAD(registration="global+icp", num_templates=2, template_points=1024, registration_points=512,
                       visualizer=False)
    if name == "IMRNet":
        return IMRNet(num_points=512, num_groups=32, group_size=16, gps_k=8, embed_dim=32, tokenizer_width=32,
                      encoder_depth=1, decoder_depth=2, num_heads=2, feature_layers=(1, 2), template_size=256,
                      visualizer=False)
    if name == "PointAD":
        return PointAD(backbone="pointad-tiny-vit", pretrained=None, max_epochs=1, num_views=3, smoothing_k=8,
                       organized_grid_size=48, auxiliary_grid_size=48, auxiliary={**POINTAD_AUXILIARY, "root": data},
                       visualizer=False)
    return ThreeDzAL(grid_size=64, max_epochs=1, max_task_irrelevant=4, generator_backbone="small", feature_dim=8,
                     pointnet_centroids=4, pointnet_widths=[8, 16], positives_per_sample=8, blur_sigma=1.0,
                     fpfh_radius=0.012, fpfh_normal_k=8, top_fraction=0.01,
                     task_irrelevant=[{**THREEDZAL_IRRELEVANT, "root": data}], visualizer=False)


@pytest.mark.parametrize("name", ["PatchCore3D", "Reg3DAD", "IMRNet", "PointAD", "ThreeDzAL"])
def test_predicted_scores_equal_test_scores(name: str, workspace: Path, one_thread: None) -> None:
    """Each test file predicted alone scores as ``engine.test`` scored it in batches of 2 (to 1e-5)."""
    import lightning
    import open3d as o3d
    from anomalib.engine import Engine

    from anomalib_3d.data.datamodules.synthetic import Synthetic3D

    lightning.seed_everything(0)
    options = {**TINY_DATA, "image_size": tuple(TINY_DATA["image_size"])}
    datamodule = Synthetic3D(root=workspace / "data", category="cup", layout=MODELS[name][1], num_workers=0,
                             eval_batch_size=2, **options)
    outputs = TestOutputs()
    # max_epochs: IMRNet's, as with --trainer.max_epochs 2 above (the other models set their own)
    engine = Engine(default_root_dir=workspace / "equality" / name, accelerator="cpu", devices=1, logger=False,
                    callbacks=[outputs], max_epochs=2)
    model = _python_model(name, workspace)
    engine.fit(model, datamodule=datamodule)
    engine.test(model, datamodule=datamodule)
    ckpt = engine.trainer.checkpoint_callback.best_model_path
    tested = outputs.per_file()
    assert len(tested) == 4
    for index, (path, (score, point_scores)) in enumerate(sorted(tested.items())):
        predictor = Engine(default_root_dir=workspace / "equality" / f"{name}_{index}", accelerator="cpu", devices=1,
                           logger=False)
        predictor.predict(_python_model(name, workspace), ckpt_path=ckpt, data_path=path)
        folder = Path(predictor.trainer.default_root_dir) / "predictions"
        row = _rows(folder / "predictions.csv")[path]
        assert abs(float(row["pred_score"]) - score) <= 1e-5, (path, row["pred_score"], score)
        ply = o3d.t.io.read_point_cloud(str(folder / (Path(path).stem + ".ply")))
        np.testing.assert_allclose(ply.point["anomaly_score"].numpy().reshape(-1), point_scores, rtol=0, atol=1e-5)
