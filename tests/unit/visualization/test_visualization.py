"""PointCloudVisualizer and the colormap: fixed colour range, files where anomalib puts them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from anomalib.data import DepthBatch
from anomalib.visualization import Visualizer
from PIL import Image

from anomalib_3d.data.adapters import organized_to_item
from anomalib_3d.data.dataclasses import PointCloudBatch, PointCloudItem
from anomalib_3d.visualization import PointCloudVisualizer, gt_to_rgb, relative_output_path, score_to_rgb
from anomalib_3d.visualization.colormap import GT_ANOMALOUS_RGB, GT_NORMAL_RGB, overlay_heatmap

SIZE = 64  # render size per view in these tests (speed)


def sphere_item(n: int, score: float | None, category: str, path: str | None, seed: int = 0) -> PointCloudItem:
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, 3)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    gt = points[:, 0] > 0.7
    scores = np.full(n, score, dtype=np.float32) if score is not None else (0.2 + 0.7 * gt).astype(np.float32)
    return PointCloudItem(
        points=torch.from_numpy(points), gt_mask=torch.from_numpy(gt), anomaly_map=torch.from_numpy(scores),
        gt_label=True, pred_score=0.8, pred_label=True, category=category, point_path=path,
    )


def fake_trainer(root: Path) -> SimpleNamespace:
    return SimpleNamespace(default_root_dir=root, datamodule=None, is_global_zero=True)


# ---------------------------------------------------------------------------------------------
# colormap
# ---------------------------------------------------------------------------------------------
def test_score_colours_use_a_fixed_range() -> None:
    import matplotlib as mpl

    scores = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0])
    colours = score_to_rgb(scores, 0.0, 1.0, "jet")
    jet = mpl.colormaps["jet"]
    for value, colour in zip([0.0, 0.0, 0.5, 1.0, 1.0], colours, strict=True):
        assert np.allclose(colour.numpy(), jet(value)[:3], atol=1 / 255 + 1e-6)
    # same score -> same colour whatever else is in the batch (no per-sample stretch)
    assert torch.equal(score_to_rgb(torch.tensor([0.3, 0.31]))[0], score_to_rgb(torch.tensor([0.3, 0.9]))[0])
    raw = score_to_rgb(torch.tensor([5.0]), 0.0, 10.0)
    assert torch.equal(raw, score_to_rgb(torch.tensor([0.5])))


def test_gt_colours_and_overlay() -> None:
    colours = gt_to_rgb(torch.tensor([True, False]))
    assert torch.allclose(colours[0], torch.tensor(GT_ANOMALOUS_RGB))
    assert torch.allclose(colours[1], torch.tensor(GT_NORMAL_RGB))
    image = torch.zeros(3, 4, 5)
    blended = overlay_heatmap(image, torch.ones(4, 5), alpha=0.5)
    assert blended.shape == (4, 5, 3)
    assert torch.allclose(blended, 0.5 * score_to_rgb(torch.ones(4, 5)))
    with pytest.raises(ValueError, match="match"):
        overlay_heatmap(image, torch.ones(5, 4))


# ---------------------------------------------------------------------------------------------
# renders
# ---------------------------------------------------------------------------------------------
def test_render_colours_follow_the_fixed_range_not_the_sample() -> None:
    batch = PointCloudBatch.collate([sphere_item(600, 0.25, "a", None), sphere_item(600, 0.75, "a", None, 1)])
    visualizer = PointCloudVisualizer(image_size=SIZE, shading=False, metrics_report=False)
    renders = visualizer.render_views(
        batch.points, batch.batch_index, batch.anomaly_map, batch.gt_mask, None, False, batch.batch_size,
    )
    assert renders["pred"].shape == (2, 4, 3, SIZE, SIZE)
    for b, score in enumerate((0.25, 0.75)):
        pixels = renders["pred"][b].permute(0, 2, 3, 1).reshape(-1, 3)
        hit = (pixels != 1.0).any(dim=1)  # background is white
        assert hit.sum() > 100
        assert torch.allclose(pixels[hit], score_to_rgb(torch.tensor(score)).expand(int(hit.sum()), 3))
        gt_pixels = renders["gt"][b].permute(0, 2, 3, 1).reshape(-1, 3)[hit]
        is_red = torch.isclose(gt_pixels, torch.tensor(GT_ANOMALOUS_RGB)).all(dim=1)
        is_grey = torch.isclose(gt_pixels, torch.tensor(GT_NORMAL_RGB)).all(dim=1)
        assert bool((is_red | is_grey).all()) and is_red.any() and is_grey.any()


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------
def test_relative_output_path_mirrors_the_dataset_layout() -> None:
    source = "/data/mvtec_3d/bagel/test/crack/xyz/000.tiff"
    assert relative_output_path(source, "bagel", "x") == Path("bagel/test/crack/xyz/000")
    assert relative_output_path("/somewhere/else/017.pcd", "airplane", "x") == Path("airplane/else/017")
    assert relative_output_path(None, "airplane", "batch0001_00") == Path("airplane/batch0001_00")


def test_test_run_writes_pngs_report_and_ply(tmp_path: Path) -> None:
    items = [
        sphere_item(700, None, "duck", "/data/real3d/duck/test/duck_1_cut.pcd", 0),
        sphere_item(500, None, "fish", "/data/real3d/fish/test/fish_2_bulge.pcd", 1),
    ]
    items[1].gt_label = torch.tensor(False)
    items[1].gt_mask = torch.zeros(500, dtype=torch.bool)
    batch = PointCloudBatch.collate(items)
    visualizer = PointCloudVisualizer(image_size=SIZE, export_ply=True)
    assert isinstance(visualizer, Visualizer)
    trainer = fake_trainer(tmp_path)
    visualizer.on_test_start(trainer, None)
    visualizer.on_test_batch_end(trainer, None, None, batch, 0)
    visualizer.on_test_epoch_end(trainer, None)

    png = tmp_path / "images" / "duck" / "test" / "duck_1_cut.png"
    assert png.exists() and (tmp_path / "images" / "fish" / "test" / "fish_2_bulge.png").exists()
    with Image.open(png) as image:
        array = np.asarray(image.convert("RGB"))
    assert array.shape[0] > 150 and array.shape[1] > 4 * SIZE
    # the figure holds coloured renders (not only white / grey)
    saturated = (array.max(axis=2).astype(int) - array.min(axis=2)) > 100
    assert saturated.mean() > 0.005

    from anomalib_3d.data.io import read_point_cloud

    cloud = read_point_cloud(png.with_suffix(".ply"))
    assert np.allclose(np.asarray(cloud.points), items[0].points.numpy(), atol=1e-6)
    assert (tmp_path / "metrics_per_category.csv").exists()


def test_max_samples_skips_with_one_warning(tmp_path: Path) -> None:
    batch = PointCloudBatch.collate([sphere_item(300, None, "a", f"/d/a/test/{i}.pcd", i) for i in range(3)])
    visualizer = PointCloudVisualizer(image_size=SIZE, max_samples=2, metrics_report=False, shading=False)
    trainer = fake_trainer(tmp_path)
    visualizer.on_test_start(trainer, None)
    with pytest.warns(UserWarning, match="max_samples=2"):
        visualizer.on_test_batch_end(trainer, None, None, batch, 0)
    visualizer.on_test_batch_end(trainer, None, None, batch, 1)
    assert sorted(p.name for p in (tmp_path / "images").rglob("*.png")) == ["0.png", "1.png"]
    assert visualizer._skipped == 4


def test_organized_cloud_gets_the_2d_panels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    height, width = 24, 32
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    xyz = np.stack([cols, rows, 50 + rng.random((height, width))], -1).astype(np.float32) / 10
    xyz[:3] = 0.0  # pixels without a point
    mask = np.zeros((height, width), dtype=bool)
    mask[10:15, 12:20] = True
    item = organized_to_item(
        torch.from_numpy(xyz), rgb=torch.rand(3, height, width), pixel_gt_mask=torch.from_numpy(mask),
        gt_label=True, category="bagel", point_path="/data/mvtec/bagel/test/crack/xyz/003.tiff",
    )
    item.anomaly_map = item.gt_mask.float() * 0.8 + 0.1
    item.pred_score = torch.tensor(0.9)
    visualizer = PointCloudVisualizer(image_size=SIZE, metrics_report=False)
    samples = visualizer._samples(PointCloudBatch.collate([item]))
    panels = samples[0]["panels"]
    assert set(panels) == {"rgb", "gt", "heat"}
    heat = panels["heat"]
    # no heat where there is no point; the heatmap colour of 0.9 inside the defect
    assert torch.equal(heat[:3], panels["rgb"][:3])
    expected = overlay_heatmap(panels["rgb"].permute(2, 0, 1)[:, 12:13, 15:16], torch.tensor([[0.9]]))
    assert torch.allclose(heat[12, 15], expected[0, 0])
    paths = visualizer.save_batch(PointCloudBatch.collate([item]), tmp_path)
    assert paths == [tmp_path / "bagel" / "test" / "crack" / "xyz" / "003.png"]


def test_depth_batch_is_drawn_in_2d_and_3d(tmp_path: Path) -> None:
    height, width = 20, 20
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    xyz = torch.stack([cols, rows, torch.full_like(rows, 30)], 0).float() / 10  # (3, H, W)
    mask = torch.zeros(1, height, width, dtype=torch.bool)
    mask[0, 5:9, 5:9] = True
    batch = DepthBatch(
        image=torch.rand(1, 3, height, width), depth_map=xyz[None], gt_mask=mask,
        anomaly_map=0.1 + 0.8 * mask.float(), gt_label=torch.tensor([1]), pred_score=torch.tensor([0.7]),
        image_path=["/data/MVTec3D/bagel/test/crack/rgb/000.png"],
        depth_path=["/data/MVTec3D/bagel/test/crack/xyz/000.tiff"],
    )
    visualizer = PointCloudVisualizer(image_size=SIZE, metrics_report=False)
    sample = visualizer._samples(batch)[0]
    assert set(sample["panels"]) == {"rgb", "gt", "heat"}
    assert set(sample["renders"]) == {"gt", "pred"}
    assert torch.allclose(sample["scores"].unique(), torch.tensor([0.1, 0.9]))
    trainer = SimpleNamespace(default_root_dir=tmp_path, datamodule=SimpleNamespace(category="bagel"))
    visualizer.on_test_batch_end(trainer, None, None, batch, 0)
    with Image.open(tmp_path / "images" / "bagel" / "test" / "crack" / "xyz" / "000.png") as image:
        assert image.size[0] > 3 * SIZE


def test_predict_batch_without_ground_truth(tmp_path: Path) -> None:
    item = sphere_item(400, None, "duck", "/x/duck/test/7.pcd")
    bare = PointCloudItem(points=item.points, anomaly_map=item.anomaly_map, category="duck", point_path=item.point_path)
    batch = PointCloudBatch.collate([bare])
    visualizer = PointCloudVisualizer(image_size=SIZE, metrics_report=False, shading=False)
    sample = visualizer._samples(batch)[0]
    assert set(sample["renders"]) == {"pred"}
    assert visualizer._title(sample, "x") == "7.pcd  |  duck"
    visualizer.on_predict_batch_end(fake_trainer(tmp_path), None, None, batch, 0)
    with Image.open(tmp_path / "images" / "duck" / "test" / "7.png") as image:
        assert image.size[0] > 4 * SIZE
