"""anomalib's own depth datamodules (MVTec3D, Folder3D, ADAM3D) feed every 3D model.

Each datamodule gets a small folder in *its* layout (organized xyz tiffs with zero pixels = no
point; RGB and GT masks at a different resolution than the xyz grid, as user folders often have),
then every registered model that exists fits one epoch and predicts through anomalib's Engine.
The scores must come back as (B, H, W) pixel maps at the GT mask's size, finite, with one score
per cloud. The same models also run on our ``Eyecandies`` datamodule (organized like MVTec 3D-AD).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

XYZ = 32  # organized grid size
RGB = 40  # RGB / mask size (differs on purpose)
COUNTS = {"train_good": 2, "test_good": 1, "test_bad": 2}

pytestmark = pytest.mark.usefixtures("one_thread")


def dome(seed: int, defect: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xyz (XYZ, XYZ, 3) float32 with a border of empty pixels, RGB (RGB, RGB, 3) uint8, mask (RGB, RGB) bool."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:XYZ, 0:XYZ].astype(np.float32)
    x, y = (cols - XYZ / 2) * 0.002, (rows - XYZ / 2) * 0.002
    height = np.sqrt(np.clip((0.3 * XYZ * 0.002) ** 2 - x**2 - y**2, 0, None))
    if defect:
        height += 0.004 * np.exp(-((x - 0.005) ** 2 + y**2) / 2e-5)
    xyz = np.stack([x, y, 0.5 - height + 1e-4 * rng.random((XYZ, XYZ))], -1).astype(np.float32)
    xyz[:2] = 0.0  # rows without points
    rgb = (np.full((RGB, RGB, 3), [200, 150, 90]) * (0.8 + 0.2 * rng.random((RGB, RGB, 1)))).astype(np.uint8)
    mask = np.zeros((RGB, RGB), dtype=bool)
    if defect:
        mask[18:24, 22:28] = True
        rgb[mask] = [30, 30, 220]
    return xyz, rgb, mask


def save(xyz_path: Path, rgb_path: Path, mask_path: Path | None, seed: int, defect: bool) -> None:
    import tifffile

    xyz, rgb, mask = dome(seed, defect)
    for path in (xyz_path, rgb_path, mask_path):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(xyz_path, xyz)
    Image.fromarray(rgb).save(rgb_path)
    if mask_path is not None:
        Image.fromarray((mask * 255).astype(np.uint8)).save(mask_path)


def write_mvtec_like(root: Path, mask_folder: str, validation: bool) -> None:
    """``<root>/<split>/<label>/{rgb,xyz,<mask_folder>}/NNN`` (MVTec 3D-AD, 3D-ADAM)."""
    seed = 0
    plan = [("train", "good", COUNTS["train_good"], False), ("test", "good", COUNTS["test_good"], False),
            ("test", "crack", COUNTS["test_bad"], True)]
    if validation:
        plan.append(("validation", "good", 1, False))
    for split, label, count, defect in plan:
        for i in range(count):
            base = root / split / label
            mask = base / mask_folder / f"{i:03d}.png" if split == "test" else None
            save(base / "xyz" / f"{i:03d}.tiff", base / "rgb" / f"{i:03d}.png", mask, seed, defect)
            seed += 1


def mvtec3d_datamodule(tmp: Path):  # noqa: ANN201
    from anomalib.data import MVTec3D

    write_mvtec_like(tmp / "mvtec" / "bagel", "gt", validation=True)
    return MVTec3D(root=tmp / "mvtec", category="bagel", train_batch_size=2, eval_batch_size=2, num_workers=0)


def adam3d_datamodule(tmp: Path):  # noqa: ANN201
    from anomalib.data import ADAM3D

    write_mvtec_like(tmp / "adam" / "1m1", "ground_truth", validation=False)
    return ADAM3D(root=tmp / "adam", category="1m1", train_batch_size=2, eval_batch_size=2, num_workers=0)


def folder3d_datamodule(tmp: Path):  # noqa: ANN201
    """A user's folders: normal / abnormal / normal-test RGB, their xyz, masks of the abnormal ones."""
    from anomalib.data import Folder3D

    root = tmp / "folder"
    seed = 100
    for folder, count, defect in (("good", COUNTS["train_good"], False), ("good_test", COUNTS["test_good"], False),
                                  ("crack", COUNTS["test_bad"], True)):
        for i in range(count):
            mask = root / "masks" / f"{i:03d}.png" if defect else None
            save(root / f"{folder}_xyz" / f"{i:03d}.tiff", root / folder / f"{i:03d}.png", mask, seed, defect)
            seed += 1
    return Folder3D(
        name="my_parts", root=root, normal_dir="good", abnormal_dir="crack", normal_test_dir="good_test",
        mask_dir="masks", normal_depth_dir="good_xyz", abnormal_depth_dir="crack_xyz",
        normal_test_depth_dir="good_test_xyz", train_batch_size=2, eval_batch_size=2, num_workers=0,
        val_split_mode="same_as_test",
    )


DATAMODULES: dict[str, Callable[[Path], object]] = {
    "MVTec3D": mvtec3d_datamodule,
    "Folder3D": folder3d_datamodule,
    "ADAM3D": adam3d_datamodule,
}


def imrnet(_tmp: Path):  # noqa: ANN201
    from anomalib_3d_plugins.imrnet import IMRNet

    torch.manual_seed(0)
    return IMRNet.small(
        num_points=256, num_groups=16, group_size=16, gps_k=8, embed_dim=32, tokenizer_width=32, encoder_depth=1,
        decoder_depth=2, num_heads=2, feature_layers=(1, 2), template_size=64, evaluator=False, visualizer=False,
    )


def pointad(tmp: Path):  # noqa: ANN201
    from anomalib_3d_plugins.pointad import PointAD

    torch.manual_seed(0)
    auxiliary = {"dataset": "synthetic3d", "root": str(tmp / "aux"), "categories": ["cup"], "split": "test",
                 "options": {"num_train": 1, "num_test_good": 1, "num_test_per_defect": 1,
                             "defect_types": ["bulge"], "num_points": 512}}
    return PointAD(
        backbone="pointad-tiny-vit", pretrained=None, max_epochs=1, num_views=2, smoothing_k=8,
        organized_grid_size=XYZ, auxiliary_grid_size=XYZ, auxiliary=auxiliary, evaluator=False, visualizer=False,
    )


def btf(_tmp: Path):  # noqa: ANN201
    plugin = pytest.importorskip("anomalib_3d_plugins.btf")
    return plugin.BTF(grid_size=XYZ, patch_grid=8, fpfh_radius=0.01, fpfh_max_nn=30, normal_k=8, coreset_ratio=0.5,
                      projection_dim=None, smoothing_k=8, pretrained_backbone=False, evaluator=False, visualizer=False)


def patchcore3d(_tmp: Path):  # noqa: ANN201
    plugin = pytest.importorskip("anomalib_3d_plugins.patchcore3d")
    torch.manual_seed(0)
    return plugin.PatchCore3D(num_points=256, num_groups=16, group_size=16, embed_dim=32, tokenizer_width=32,
                              encoder_depth=1, num_heads=2, feature_layers=(1,), fpfh_radius=0.01, fpfh_max_nn=30,
                              coreset_ratio=0.5, projection_dim=None, evaluator=False, visualizer=False)


def reg3dad(_tmp: Path):  # noqa: ANN201
    plugin = pytest.importorskip("anomalib_3d_plugins.reg3dad")
    return plugin.Reg3DAD(num_templates=2, template_points=512, registration_points=256, max_iterations=5,
                          evaluator=False, visualizer=False)


def threedzal(tmp: Path):  # noqa: ANN201
    plugin = pytest.importorskip("anomalib_3d_plugins.threedzal")
    torch.manual_seed(0)
    irrelevant = [{"dataset": "synthetic3d", "root": str(tmp / "synthetic"), "categories": ["bottle"], "split": "train",
                   "options": {"num_train": 2, "num_test_good": 1, "num_test_per_defect": 1,
                               "defect_types": ["bulge"], "layout": "mvtec3d", "image_size": [XYZ, XYZ]}}]
    return plugin.ThreeDzAL(
        grid_size=XYZ, max_epochs=1, max_task_irrelevant=2, generator_backbone="small", feature_dim=8,
        pointnet_centroids=4, pointnet_widths=(8, 16), positives_per_sample=8, blur_sigma=1.0, fpfh_radius=0.012,
        fpfh_normal_k=8, top_fraction=0.01, task_irrelevant=irrelevant, evaluator=False, visualizer=False,
    )


# Every registered model, at a tiny size. A new plugin adds its tiny constructor here.
MODELS: dict[str, Callable[[Path], object]] = {
    "IMRNet": imrnet, "PointAD": pointad, "BTF": btf, "PatchCore3D": patchcore3d, "Reg3DAD": reg3dad,
    "ThreeDzAL": threedzal,
}


def test_every_registered_model_is_covered() -> None:
    from anomalib_3d.plugins import list_plugins

    import anomalib_3d.models
    from anomalib_3d.models import PointCloudModelMixin

    registered = {p.name: p for p in list_plugins() if p.kind == "models"}
    assert set(MODELS) <= set(registered)
    # Scene models (OddOneOut) take multi-view scenes, not depth batches: only point-cloud models count.
    point_models = {
        name for name, p in registered.items()
        if p.status == "loaded" and issubclass(getattr(anomalib_3d.models, name), PointCloudModelMixin)
    }
    missing = sorted(point_models - set(MODELS))
    assert not missing, f"registered models without a tiny constructor in MODELS: {missing}"


@pytest.mark.parametrize("datamodule_name", list(DATAMODULES))
def test_depth_batches_convert_with_labels_and_pixels(datamodule_name: str, tmp_path: Path) -> None:
    """The adapter on each datamodule's real batches: labels, per-point GT and the way back."""
    from anomalib_3d.data.adapters import depth_batch_to_point_batch, points_to_pixel_map, resize_nearest

    dm = DATAMODULES[datamodule_name](tmp_path)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    points = depth_batch_to_point_batch(batch)
    assert points.batch_size == len(batch.gt_label)
    assert points.num_points.tolist() == [(XYZ - 2) * XYZ] * points.batch_size  # two empty rows dropped
    assert points.grid_shape.tolist() == [[XYZ, XYZ]] * points.batch_size
    assert torch.equal(points.gt_label, batch.gt_label.bool())
    # per-point GT is the mask read at each point's pixel (nearest), and scatters back onto it
    expected = resize_nearest(batch.gt_mask.bool(), (XYZ, XYZ)).reshape(points.batch_size, -1)
    assert torch.equal(points.gt_mask, expected[points.batch_index, points.grid_index])
    back = points_to_pixel_map(points.gt_mask.float(), points.grid_index, points.grid_shape, points.batch_index,
                               fill=0.0)
    has_point = torch.zeros_like(expected)
    has_point[points.batch_index, points.grid_index] = True
    assert torch.equal(back.view(points.batch_size, -1).bool(), expected & has_point)
    assert int(points.gt_mask.sum()) > 0 or not bool(batch.gt_label.any())


@pytest.mark.parametrize("datamodule_name", ["MVTec3D", "ADAM3D"])
def test_anomalib_train_items_need_the_mask_path_repair(datamodule_name: str, tmp_path: Path) -> None:
    """anomalib 2.7 + pandas 3: normal training rows keep a NaN mask path that DepthItem refuses."""
    from anomalib_3d.data.adapters import repair_depth_datamodule

    dm = DATAMODULES[datamodule_name](tmp_path)
    dm.setup()
    if dm.train_data.samples.mask_path.isna().any():  # the upstream bug is present here
        with pytest.raises(TypeError, match="Path must be"):
            dm.train_data[0]
    repaired = repair_depth_datamodule(dm)
    assert repaired >= 0 and not dm.train_data.samples.mask_path.isna().any()
    item = dm.train_data[0]
    assert item.depth_map.shape == (3, XYZ, XYZ) and not item.gt_mask.any()
    assert repair_depth_datamodule(dm) == 0  # idempotent


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("datamodule_name", list(DATAMODULES))
def test_model_fits_and_predicts_pixel_maps(datamodule_name: str, model_name: str, tmp_path: Path) -> None:
    from anomalib.engine import Engine

    dm = DATAMODULES[datamodule_name](tmp_path)
    model = MODELS[model_name](tmp_path)
    from anomalib_3d.data.adapters import DepthDataRepair

    # DepthDataRepair: until PointCloudModelMixin.configure_callbacks adds it itself (idempotent)
    engine = Engine(default_root_dir=tmp_path / "results", accelerator="cpu", devices=1, max_epochs=1,
                    logger=False, enable_progress_bar=False, callbacks=[DepthDataRepair()])
    engine.fit(model, datamodule=dm)
    assert engine.trainer.global_step > 0
    predictions = engine.predict(model, datamodule=dm)
    assert predictions
    seen = 0
    for batch in predictions:
        size = len(batch.gt_label)
        assert batch.anomaly_map.shape == (size, RGB, RGB)  # the GT mask's size, not the xyz grid's
        assert torch.isfinite(batch.anomaly_map).all()
        assert batch.pred_score.shape == (size,) and torch.isfinite(batch.pred_score).all()
        seen += size
    assert seen == COUNTS["test_good"] + COUNTS["test_bad"]


# --------------------------------------------------------------------------------------------
# our Eyecandies datamodule, organized like MVTec 3D-AD: the same models on it
# --------------------------------------------------------------------------------------------
def write_eyecandies(root: Path) -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location("eyecandies_fixture", Path(__file__).with_name("test_eyecandies.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_eyecandies_folder(root)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_model_fits_and_predicts_on_eyecandies(model_name: str, tmp_path: Path) -> None:
    from anomalib.engine import Engine

    from anomalib_3d.data.adapters import points_to_pixel_map
    from anomalib_3d.data.datamodules.eyecandies import Eyecandies

    root = write_eyecandies(tmp_path / "eyecandies")
    dm = Eyecandies(root=root, category="CandyCane", grid_size=(XYZ, XYZ), predict_split="test_public",
                    train_batch_size=2, eval_batch_size=2)
    model = MODELS[model_name](tmp_path)
    engine = Engine(default_root_dir=tmp_path / "results", accelerator="cpu", devices=1, max_epochs=1,
                    logger=False, enable_progress_bar=False)
    engine.fit(model, datamodule=dm)
    predictions = engine.predict(model, datamodule=dm)
    assert sum(batch.batch_size for batch in predictions) == 4
    for batch in predictions:
        assert batch.anomaly_map.shape == batch.points.shape[:1] and torch.isfinite(batch.anomaly_map).all()
        pixels = points_to_pixel_map(batch.anomaly_map, batch.grid_index, batch.grid_shape, batch.batch_index)
        assert pixels.shape == (batch.batch_size, XYZ, XYZ)
        assert batch.type_masks.shape == (batch.batch_size, 4, XYZ, XYZ)
