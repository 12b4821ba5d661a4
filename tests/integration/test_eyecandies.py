"""Eyecandies datamodule on a hand-written folder in the released layout.

The writer below renders an analytic scene with its own ray caster: a conveyor belt (the world
plane z = 0) carrying a dome, seen by a camera whose pose (camera → world, OpenCV axes) changes
from sample to sample. Depth is quantized to 16 bits exactly as the dataset stores it, so the
back-projected geometry can be checked against the scene and against open3d's own
depth → point-cloud conversion.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalib_3d.data.datamodules.eyecandies import (
    ANOMALY_TYPES,
    FOCAL_LENGTH,
    Eyecandies,
    EyecandiesBatch,
    depth_to_xyz,
    pose_convention_report,
    read_depth_png,
    read_pose,
    scan_eyecandies,
)
from anomalib_3d.data.errors import (
    DatasetRootNotFoundError,
    GroundTruthMismatchError,
    UnknownCategoryError,
    UnsupportedFormatError,
)

SIZE = 48
DOME_CENTRE = np.array([0.0, 0.0, -0.004])
DOME_RADIUS = 0.008
LAYOUT = {"train": (4, 0, 3), "val": (2, 0, 2), "test_public": (2, 2, 2), "test_private": (1, 1, 3)}  # good, bad, idx width
BUMP_BOX = (slice(20, 26), slice(18, 24))  # rows, cols of the "bumps" mask
COLOR_BOX = (slice(10, 14), slice(30, 36))  # rows, cols of the "colors" mask


def look_at_pose(camera: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera → world pose, OpenCV axes (x right, y down, z forward)."""
    z = (target - camera) / np.linalg.norm(target - camera)
    x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, y, z], axis=1)
    pose[:3, 3] = camera
    return pose


def render(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast belt + dome: z-depth (H, W), world normals (H, W, 3), belt mask (H, W)."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    rays_cam = np.stack([(cols - SIZE / 2) / FOCAL_LENGTH, (rows - SIZE / 2) / FOCAL_LENGTH, np.ones_like(rows)], -1)
    rays = rays_cam @ pose[:3, :3].T  # world direction per unit of z-depth
    origin = pose[:3, 3]
    belt_t = -origin[2] / rays[..., 2]
    # sphere |o + t r - c|^2 = rho^2, nearest root, kept where the hit is above the belt
    oc = origin - DOME_CENTRE
    a = (rays**2).sum(-1)
    b = 2 * (rays @ oc)
    c = oc @ oc - DOME_RADIUS**2
    disc = b**2 - 4 * a * c
    sphere_t = np.where(disc >= 0, (-b - np.sqrt(np.clip(disc, 0, None))) / (2 * a), np.inf)
    hit_z = origin[2] + sphere_t * rays[..., 2]
    on_dome = np.isfinite(sphere_t) & (hit_z > 0) & (sphere_t < belt_t)
    depth = np.where(on_dome, sphere_t, belt_t)
    hits = origin + depth[..., None] * rays
    normals = np.where(on_dome[..., None], (hits - DOME_CENTRE) / DOME_RADIUS, np.array([0.0, 0.0, 1.0]))
    return depth, normals, ~on_dome


def sample_pose(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tilt = np.radians(rng.uniform(5, 25))
    distance = rng.uniform(0.4, 0.5)
    camera = np.array([rng.uniform(-0.02, 0.02), -distance * np.sin(tilt), distance * np.cos(tilt)])
    return look_at_pose(camera, np.array([0.001, 0.002, 0.0]))


def write_sample(folder: Path, idx: str, seed: int, anomalous: bool, public_only: bool) -> None:
    """All items of one sample, as the archive has them."""
    pose = sample_pose(seed)
    depth, normals_world, belt = render(pose)
    lo, hi = float(depth.min()) - 0.001, float(depth.max()) + 0.001
    png = np.round((depth - lo) / (hi - lo) * 65535).astype(np.uint16)
    Image.fromarray(png).save(folder / f"{idx}_depth.png")
    (folder / f"{idx}_info_depth.yaml").write_text(f"normalization:\n  min: {lo!r}\n  max: {hi!r}\n")
    np.savetxt(folder / f"{idx}_pose.txt", pose)
    normals_cam = normals_world @ pose[:3, :3]  # R^T n, row-wise
    stored = normals_cam * np.array([1.0, -1.0, -1.0])
    Image.fromarray(np.round((stored + 1.0) * 127.5).astype(np.uint8)).save(folder / f"{idx}_normals.png")
    shade = np.where(belt, 0.3, 0.8)
    masks = {t: np.zeros((SIZE, SIZE), dtype=bool) for t in ANOMALY_TYPES}
    if anomalous:
        masks["bumps"][BUMP_BOX] = True
        masks["colors"][COLOR_BOX] = True
    for k in range(6):
        rgb = np.stack([shade, shade * 0.5 + 0.1 * k, shade * 0.2], -1)
        rgb[masks["colors"]] = [0.1, 0.2, 0.9]
        Image.fromarray((rgb * 255).astype(np.uint8)).save(folder / f"{idx}_image_{k}.png")
    if public_only:
        return
    (folder / f"{idx}_metadata.yaml").write_text(f"anomalous: {int(anomalous)}\n")
    (folder / f"{idx}_obj_params.yaml").write_text("seed: 0\n")
    union = np.zeros((SIZE, SIZE), dtype=bool)
    for t, m in masks.items():
        union |= m
        Image.fromarray((m * 255).astype(np.uint8)).save(folder / f"{idx}_{t}_mask.png")
    Image.fromarray((union * 255).astype(np.uint8)).save(folder / f"{idx}_mask.png")


def write_eyecandies_folder(root: Path, category: str = "CandyCane") -> Path:
    """``<root>/<category>/{train,val,test_public,test_private}/data/<idx>_*`` (see LAYOUT)."""
    seed = 0
    for split, (good, bad, width) in LAYOUT.items():
        folder = root / category / split / "data"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(good + bad):
            write_sample(folder, str(i).zfill(width), seed, anomalous=i >= good, public_only=split == "test_private")
            seed += 1
    return root


@pytest.fixture(scope="module")
def eyecandies_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_eyecandies_folder(tmp_path_factory.mktemp("eyecandies"))


def datamodule(root: Path, **kwargs: object) -> Eyecandies:
    options = {"category": "CandyCane", "grid_size": None, "remove_background": False,
               "train_batch_size": 2, "eval_batch_size": 2, **kwargs}
    dm = Eyecandies(root=root, **options)
    dm.setup()
    return dm


# --------------------------------------------------------------------------------------------
# layout: counts, labels, masks
# --------------------------------------------------------------------------------------------
def test_counts_labels_and_defect_types(eyecandies_root: Path) -> None:
    table = scan_eyecandies(eyecandies_root, "CandyCane")
    counts = table.groupby("source_split").size().to_dict()
    assert counts == {"train": 4, "val": 2, "test_public": 4, "test_private": 2}
    assert set(table.split) == {"train", "validation", "test", "predict"}
    test = table[table.source_split == "test_public"]
    assert test.label_index.tolist() == [0, 0, 1, 1]
    assert test.defect_type.tolist() == ["good", "good", "bumps+colors", "bumps+colors"]
    assert (table[table.source_split == "test_private"].label_index == -1).all()
    assert table.sample_id[table.source_split == "train"].tolist() == ["000", "001", "002", "003"]
    assert table.rgb_path.str.endswith("_image_4.png").all()  # the papers' lighting by default
    assert scan_eyecandies(eyecandies_root, "candy cane", image_index=0).rgb_path.str.endswith("_image_0.png").all()


def test_items_masks_and_type_masks(eyecandies_root: Path) -> None:
    dm = datamodule(eyecandies_root)
    assert len(dm.train_data) == 4 and len(dm.test_data) == 4 and len(dm.predict_data) == 2
    bad = dm.test_data[3]
    assert bad.gt_label.item() is True
    expected = np.zeros((SIZE, SIZE), dtype=bool)
    expected[BUMP_BOX] = True
    expected[COLOR_BOX] = True
    assert torch.equal(bad.pixel_gt_mask, torch.from_numpy(expected))
    assert bad.type_masks.shape == (4, SIZE, SIZE)
    assert int(bad.type_masks[ANOMALY_TYPES.index("bumps")].sum()) == 36
    assert int(bad.type_masks[ANOMALY_TYPES.index("colors")].sum()) == 24
    assert int(bad.type_masks[ANOMALY_TYPES.index("dents")].sum()) == 0
    # every pixel is a point here (no background removal), so per-point GT is the mask itself
    assert bad.num_points == SIZE * SIZE
    assert torch.equal(bad.gt_mask, torch.from_numpy(expected).reshape(-1)[bad.grid_index])
    # RGB: image_4 of the writer, colour anomaly visible
    assert torch.allclose(bad.image[:, 11, 31], torch.tensor([0.1, 0.2, 0.9]), atol=1 / 255)
    good = dm.test_data[0]
    assert good.gt_label.item() is False and not good.gt_mask.any() and not good.type_masks.any()
    private = dm.predict_data[0]
    assert private.gt_label is None and private.gt_mask is None and private.type_masks is None

    batch = next(iter(dm.test_dataloader()))
    assert isinstance(batch, EyecandiesBatch)
    assert batch.type_masks.shape == (2, 4, SIZE, SIZE)
    assert batch.grid_shape.tolist() == [[SIZE, SIZE], [SIZE, SIZE]] and batch.image.shape == (2, 3, SIZE, SIZE)
    predict = next(iter(dm.predict_dataloader()))
    assert predict.gt_label is None and predict.batch_size == 2


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------
def quantum(info: Path) -> float:
    import yaml

    norm = yaml.safe_load(info.read_text())["normalization"]
    return (norm["max"] - norm["min"]) / 65535


def test_depth_decodes_to_rendered_metres(eyecandies_root: Path) -> None:
    folder = eyecandies_root / "CandyCane" / "train" / "data"
    depth = read_depth_png(folder / "001_depth.png", folder / "001_info_depth.yaml")
    rendered, _, _ = render(sample_pose(1))
    assert np.abs(depth - rendered).max() <= quantum(folder / "001_info_depth.yaml") / 2 + 1e-12


def test_belt_back_projects_to_the_world_plane_only_with_camera_to_world(eyecandies_root: Path) -> None:
    """The pose-direction decision: the known belt plane (z = 0) comes back as z = 0 with the
    pose applied as camera → world, and as a different plane with the inverse."""
    folder = eyecandies_root / "CandyCane" / "train" / "data"
    depth = read_depth_png(folder / "002_depth.png", folder / "002_info_depth.yaml")
    pose = read_pose(folder / "002_pose.txt")
    _, _, belt = render(pose)
    tolerance = quantum(folder / "002_info_depth.yaml")  # a z-depth error moves a point by ≤ that along z
    right = depth_to_xyz(depth, FOCAL_LENGTH, pose)
    assert np.abs(right[belt][:, 2]).max() <= tolerance
    dome = right[~belt]
    assert np.allclose(np.linalg.norm(dome - DOME_CENTRE, axis=1), DOME_RADIUS, atol=2 * tolerance)
    wrong = depth_to_xyz(depth, FOCAL_LENGTH, np.linalg.inv(pose))
    assert np.abs(wrong[belt][:, 2]).max() > 1000 * tolerance  # millimetres off, not micrometres


def test_back_projection_matches_open3d(eyecandies_root: Path) -> None:
    """Independent reference: open3d's pinhole depth → cloud (extrinsic = world → camera)."""
    import open3d as o3d

    folder = eyecandies_root / "CandyCane" / "val" / "data"
    depth = read_depth_png(folder / "01_depth.png", folder / "01_info_depth.yaml")
    pose = read_pose(folder / "01_pose.txt")
    intrinsic = o3d.camera.PinholeCameraIntrinsic(SIZE, SIZE, FOCAL_LENGTH, FOCAL_LENGTH, SIZE / 2, SIZE / 2)
    cloud = o3d.geometry.PointCloud.create_from_depth_image(
        o3d.geometry.Image(depth.astype(np.float32)), intrinsic, np.linalg.inv(pose),
        depth_scale=1.0, depth_trunc=100.0, stride=1, project_valid_depth_only=False,
    )
    reference = np.asarray(cloud.points).reshape(SIZE, SIZE, 3)
    assert np.allclose(depth_to_xyz(depth, FOCAL_LENGTH, pose), reference, atol=1e-6)


def test_item_points_and_normals_in_world_and_camera_frames(eyecandies_root: Path) -> None:
    world = datamodule(eyecandies_root, use_normals=True).train_data[1]
    camera = datamodule(eyecandies_root, frame="camera").train_data[1]
    pose = sample_pose(1)
    depth, normals_world, belt = render(pose)
    expected_world = torch.from_numpy(depth_to_xyz(depth, FOCAL_LENGTH, pose).reshape(-1, 3)).float()
    tolerance = 2 * quantum(eyecandies_root / "CandyCane" / "train" / "data" / "001_info_depth.yaml")
    assert torch.allclose(world.points, expected_world[world.grid_index], atol=tolerance)
    moved = camera.points.double() @ torch.from_numpy(pose[:3, :3]).T + torch.from_numpy(pose[:3, 3])
    assert torch.allclose(moved.float(), world.points, atol=1e-5)
    assert torch.allclose(camera.points[:, 2], torch.from_numpy(depth.reshape(-1)).float()[camera.grid_index],
                          atol=tolerance)
    expected_normals = torch.from_numpy(normals_world.reshape(-1, 3)).float()[world.grid_index]
    assert (world.normals - expected_normals).norm(dim=1).max() < 0.03  # 8-bit normal maps


def test_pose_convention_report_picks_camera_to_world(eyecandies_root: Path) -> None:
    report = pose_convention_report(eyecandies_root, "CandyCane", num_samples=4, border=6)
    assert report["camera_to_world"] < 0.01 < report["world_to_camera"]


def test_background_removal_and_resize_keep_the_dome(eyecandies_root: Path) -> None:
    item = datamodule(eyecandies_root, remove_background=True).train_data[0]
    _, _, belt = render(sample_pose(0))
    assert item.points[:, 2].min() > 0.0005  # belt (z = 0) gone
    assert np.allclose(np.linalg.norm(item.points.numpy() - DOME_CENTRE, axis=1), DOME_RADIUS, atol=1e-4)
    assert item.num_points >= 0.8 * int((~belt).sum())  # only the dome's rim (< 1 mm high) may go
    small = datamodule(eyecandies_root, grid_size=(24, 24)).train_data[0]
    full = datamodule(eyecandies_root).train_data[0]
    assert small.grid_shape.tolist() == [24, 24] and small.num_points == 24 * 24
    # nearest resizing copies whole pixels: every point of the small grid is a point of the full one
    distance = torch.cdist(small.points.double(), full.points.double()).min(dim=1).values
    assert distance.max() < 1e-9


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
def copy_tree(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_unknown_and_missing_categories(eyecandies_root: Path) -> None:
    with pytest.raises(UnknownCategoryError, match="Sandwitch.*LicoriceSandwich"):
        Eyecandies(root=eyecandies_root, category="LicoriceSandwitch")
    with pytest.raises(UnknownCategoryError, match="Sandwitch"):
        scan_eyecandies(eyecandies_root, "LicoriceSandwitch")
    with pytest.raises(DatasetRootNotFoundError, match="Lollipop.*download"):
        scan_eyecandies(eyecandies_root, "Lollipop")


def test_missing_yaml_is_named(eyecandies_root: Path, tmp_path: Path) -> None:
    root = copy_tree(eyecandies_root, tmp_path / "broken")
    (root / "CandyCane" / "test_public" / "data" / "03_metadata.yaml").unlink()
    with pytest.raises(DatasetRootNotFoundError, match="03_metadata.yaml"):
        scan_eyecandies(root, "CandyCane")
    (root / "CandyCane" / "train" / "data" / "002_info_depth.yaml").unlink()
    with pytest.raises(DatasetRootNotFoundError, match="002_info_depth.yaml"):
        scan_eyecandies(root, "CandyCane", splits=("train",))


def test_eight_bit_depth_is_refused(eyecandies_root: Path, tmp_path: Path) -> None:
    root = copy_tree(eyecandies_root, tmp_path / "broken")
    path = root / "CandyCane" / "train" / "data" / "000_depth.png"
    Image.fromarray((np.asarray(Image.open(path)) // 257).astype(np.uint8)).save(path)
    with pytest.raises(UnsupportedFormatError, match=r"000_depth.png.*bit depth 8"):
        datamodule(root)  # the pre-flight check at setup
    unchecked = datamodule(root, validate="off")
    with pytest.raises(UnsupportedFormatError, match=r"000_depth.png.*bit depth 8"):
        unchecked.train_data[0]  # and the reader itself


def test_preflight_lists_every_problem_at_once(eyecandies_root: Path, tmp_path: Path) -> None:
    from anomalib_3d.data.errors import DatasetValidationError

    root = copy_tree(eyecandies_root, tmp_path / "broken")
    folder = root / "CandyCane" / "test_public" / "data"
    (folder / "03_metadata.yaml").unlink()
    Image.fromarray(np.zeros((SIZE, SIZE + 2, 3), np.uint8)).save(folder / "00_image_4.png")
    (root / "CandyCane" / "train" / "data" / "001_pose.txt").unlink()
    with pytest.raises(DatasetValidationError) as info:
        datamodule(root)
    message = str(info.value)
    assert "03_metadata.yaml" in message and "00_image_4.png" in message and "001_pose.txt" in message


def test_mask_size_mismatch_is_named(eyecandies_root: Path, tmp_path: Path) -> None:
    root = copy_tree(eyecandies_root, tmp_path / "broken")
    folder = root / "CandyCane" / "test_public" / "data"
    Image.fromarray(np.zeros((SIZE, SIZE + 2), np.uint8)).save(folder / "02_dents_mask.png")
    with pytest.raises(GroundTruthMismatchError, match=r"02_dents_mask.png.*50x48"):
        scan_eyecandies(root, "CandyCane")
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(folder / "02_dents_mask.png")
    Image.fromarray(np.zeros((SIZE - 1, SIZE), np.uint8)).save(folder / "00_mask.png")
    with pytest.raises(GroundTruthMismatchError, match=r"00_mask.png"):
        scan_eyecandies(root, "CandyCane")


def test_label_and_mask_must_agree(eyecandies_root: Path, tmp_path: Path) -> None:
    root = copy_tree(eyecandies_root, tmp_path / "broken")
    (root / "CandyCane" / "test_public" / "data" / "01_metadata.yaml").write_text("anomalous: 1\n")
    with pytest.raises(GroundTruthMismatchError, match="01_metadata.yaml"):
        scan_eyecandies(root, "CandyCane")


# --------------------------------------------------------------------------------------------
# end to end through anomalib's CLI
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_imrnet_cli_on_eyecandies(eyecandies_root: Path, tmp_path: Path) -> None:
    command = [
        str(Path(sys.executable).with_name("anomalib")), "train",
        "--model", "IMRNet",
        "--model.num_points", "256", "--model.num_groups", "16", "--model.group_size", "16", "--model.gps_k", "8",
        "--model.embed_dim", "32", "--model.tokenizer_width", "32", "--model.encoder_depth", "1",
        "--model.decoder_depth", "2", "--model.num_heads", "2", "--model.feature_layers", "[1, 2]",
        "--model.template_size", "64",
        "--data", "Eyecandies", "--data.root", str(eyecandies_root), "--data.category", "CandyCane",
        "--data.grid_size", "[48, 48]", "--data.num_workers", "0",
        "--data.train_batch_size", "2", "--data.eval_batch_size", "2",
        "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.logger", "false", "--default_root_dir", str(tmp_path / "results"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    out = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-5000:]
    assert "image_AUROC" in log and "point_AUROC" in log


# --------------------------------------------------------------------------------------------
# zero-shot: fit on MVTec 3D-AD, test on Eyecandies (PointAD's cross-dataset protocol)
# --------------------------------------------------------------------------------------------
def cross_dataset(mvtec_root: Path, eyecandies_root: Path):  # noqa: ANN201
    from anomalib_3d.data.datamodules.zero_shot import ZeroShot3D

    return ZeroShot3D(
        fit_sources=[{"dataset": "mvtec3d", "root": str(mvtec_root), "categories": ["bagel"], "split": "test"}],
        test_sources=[{"dataset": "eyecandies", "root": str(eyecandies_root), "categories": ["candy_cane"],
                       "split": "test", "options": {"image_index": 2, "background_threshold": 0.0005}}],
        grid_size=(32, 32), train_batch_size=2, eval_batch_size=2,
    )


def test_zero_shot_source_eyecandies(mvtec3d_root: Path, eyecandies_root: Path) -> None:
    dm = cross_dataset(mvtec3d_root, eyecandies_root)
    dm.setup()
    test = dm.test_data.samples
    assert len(dm.train_data) == 5 and len(test) == 4  # MVTec test split; Eyecandies test_public only
    assert set(test.source_split) == {"test_public"} and test.label_index.tolist() == [0, 0, 1, 1]
    assert test.rgb_path.str.endswith("_image_2.png").all() and (test.background_threshold == 0.0005).all()
    batch = next(iter(dm.test_dataloader()))
    assert isinstance(batch, EyecandiesBatch) and batch.type_masks.shape == (2, 4, 32, 32)
    assert batch.grid_shape.tolist() == [[32, 32], [32, 32]]
    fit = next(iter(dm.train_dataloader()))
    assert fit.type_masks is None and fit.image.shape[-2:] == (32, 32)


def test_zero_shot_preflight_checks_eyecandies_rows_of_a_mixed_table(
    mvtec3d_root: Path, eyecandies_root: Path, tmp_path: Path,
) -> None:
    """MVTec and Eyecandies rows in one table go through the one pre-flight path: an 8-bit
    depth PNG of an Eyecandies test sample is found at setup, before any sample is read."""
    root = copy_tree(eyecandies_root, tmp_path / "broken")
    path = root / "CandyCane" / "test_public" / "data" / "01_depth.png"
    Image.fromarray((np.asarray(Image.open(path)) // 257).astype(np.uint8)).save(path)
    with pytest.raises(UnsupportedFormatError, match=r"01_depth.png.*bit depth 8.*original <idx>_depth.png of the archive"):
        cross_dataset(mvtec3d_root, root).setup()


def test_former_names_stay_importable() -> None:
    from anomalib_3d.data.datamodules import eyecandies as module
    from anomalib_3d.data.datasets import MultiSourceDataset
    from anomalib_3d.data.eyecandies import scan_eyecandies as scanner
    from anomalib_3d.data.io.eyecandies import read_depth_png as reader

    assert module.EyecandiesDataset is MultiSourceDataset
    assert module.scan_eyecandies is scanner and module.read_depth_png is reader
    assert {"check_samples_with_eyecandies", "pose_convention_report", "decode_normals"} <= set(module.__all__)


def test_pointad_cross_dataset_fits_on_mvtec_and_scores_eyecandies(
    mvtec3d_root: Path, eyecandies_root: Path, tmp_path: Path, one_thread: None,
) -> None:
    from anomalib.engine import Engine

    from anomalib_3d_plugins.pointad import PointAD

    torch.manual_seed(0)
    model = PointAD(backbone="pointad-tiny-vit", pretrained=None, max_epochs=1, num_views=2, smoothing_k=8,
                    organized_grid_size=32, auxiliary_grid_size=32, evaluator=False, visualizer=False)
    dm = cross_dataset(mvtec3d_root, eyecandies_root)
    engine = Engine(default_root_dir=tmp_path, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    engine.fit(model, datamodule=dm)
    assert engine.trainer.global_step > 0
    predictions = engine.predict(model, datamodule=dm)
    paths = [p for batch in predictions for p in batch.point_path]
    assert len(paths) == 4 and all("test_public" in p for p in paths)
    for batch in predictions:
        assert batch.anomaly_map.shape == batch.points.shape[:1] and torch.isfinite(batch.anomaly_map).all()
        assert batch.pred_score.shape == (batch.batch_size,)


def test_imrnet_fits_on_train_and_predicts_the_private_split(eyecandies_root: Path, tmp_path: Path,
                                                             one_thread: None) -> None:
    from anomalib.engine import Engine

    from anomalib_3d_plugins.imrnet import IMRNet

    torch.manual_seed(0)
    model = IMRNet.small(num_points=256, num_groups=16, group_size=16, gps_k=8, embed_dim=32, tokenizer_width=32,
                         encoder_depth=1, decoder_depth=2, num_heads=2, feature_layers=(1, 2), template_size=64,
                         evaluator=False, visualizer=False)
    dm = Eyecandies(root=eyecandies_root, category="CandyCane", grid_size=(32, 32), train_batch_size=2,
                    eval_batch_size=2)
    engine = Engine(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=1, logger=False,
                    enable_progress_bar=False)
    engine.fit(model, datamodule=dm)
    predictions = engine.predict(model, datamodule=dm)
    paths = [p for batch in predictions for p in batch.point_path]
    assert len(paths) == 2 and all("/test_private/" in p for p in paths)
    for batch in predictions:
        assert batch.gt_label is None
        assert batch.anomaly_map.shape == batch.points.shape[:1] and torch.isfinite(batch.pred_score).all()
