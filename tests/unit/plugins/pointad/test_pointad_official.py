"""PointAD's official pipeline (the pictures and scores of the authors' released prompts): the
largest-cluster cleaning, a scan with a stray fragment rendered at its own scale, visibility
borrowing, Real3D-AD resampling, the official multimodal score by hand, the RGB blackout, and the
official config with a converted prompt checkpoint."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from anomalib_3d.data.background import clean_organized_scan, largest_cluster_mask
from anomalib_3d_plugins.pointad.official import (
    OFFICIAL_STYLES,
    borrow_unseen_visibility,
    resample_cloud,
)
from anomalib_3d_plugins.pointad.render_settings import RenderSettings
from anomalib_3d_plugins.pointad.rgb_fusion import blackout_background, fuse_official
from anomalib_3d_plugins.pointad.torch_model import PointADModel
from doubles.pointad import BlueCueBackbone, FixedPrompts

CONFIGS = Path(__file__).resolve().parents[4] / "configs"

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# cleaning: the largest DBSCAN cluster


@pytest.mark.parametrize("seed", range(5))
def test_largest_cluster_equals_open3d_dbscan(seed: int) -> None:
    """Blobs of different sizes and densities plus uniform speckle: the same points as Open3D's
    ``cluster_dbscan(eps=0.006, min_points=30)`` puts in its largest cluster."""
    o3d = pytest.importorskip("open3d")
    rng = np.random.default_rng(seed)
    blobs = [rng.normal(size=(int(rng.integers(60, 700)), 3)) * rng.uniform(0.002, 0.008)
             + rng.uniform(-0.05, 0.05, 3) for _ in range(4)]
    points = np.concatenate([*blobs, rng.uniform(-0.06, 0.06, (int(rng.integers(0, 200)), 3))])
    labels = np.asarray(o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points)).cluster_dbscan(0.006, 30))
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    np.testing.assert_array_equal(largest_cluster_mask(points), labels == ids[np.argmax(counts)])


def test_a_cloud_without_dense_points_is_kept_whole() -> None:
    sparse = np.arange(20, dtype=float)[:, None] * np.array([[0.1, 0.0, 0.0]])
    assert largest_cluster_mask(sparse).all()


#: Where the speck floats: a 6 x 6 pixel patch of the ground plane in the bottom-left corner.
SPECK = (slice(148, 154), slice(6, 12))


def _scan_with_fragment(fragment: bool) -> np.ndarray:
    """A synthetic part on its ground plane (metres, sensor frame), optionally with a 6 x 6 pixel
    speck floating 3 cm above the plane in a corner (what plane removal leaves)."""
    from anomalib_3d.data.synthetic.generator import make_scan

    xyz = make_scan("gear", seed=3, image_size=(160, 160)).xyz.copy()
    if fragment:
        corner = xyz[SPECK]
        assert (corner != 0).all(), "the corner must show the plane"
        corner *= 1.0 - 0.03 / np.linalg.norm(corner, axis=-1, keepdims=True)  # 3 cm along each ray
    return xyz


def test_cleaning_drops_the_fragment_the_plane_leaves() -> None:
    plain, specked = _scan_with_fragment(False), _scan_with_fragment(True)
    plane_only = clean_organized_scan(specked)
    assert plane_only[SPECK].all()  # off the plane: plane removal keeps it
    cleaned = clean_organized_scan(specked, largest_cluster=True)
    assert not cleaned[SPECK].any()
    np.testing.assert_array_equal(cleaned, clean_organized_scan(plain, largest_cluster=True))


def _official_module(**kwargs: object):  # noqa: ANN202
    from anomalib_3d_plugins.pointad import PointAD

    torch.manual_seed(0)
    return PointAD(backbone="pointad-tiny-vit", pretrained=None, render_style="official", render_size=112,
                   organized_grid_size=112, evaluator=False, visualizer=False, **kwargs)


def _silhouette_box(module, xyz: np.ndarray) -> tuple[torch.Tensor, tuple[int, int, int, int]]:  # noqa: ANN001
    """Render an anomalib-style DepthBatch of one scan through PointAD; view 2's silhouette and its box."""
    depth = torch.from_numpy(xyz).permute(2, 0, 1).unsqueeze(0)
    batch = SimpleNamespace(depth_map=depth, image=None, gt_mask=None, gt_label=None, depth_path=None,
                            image_path=None)
    points, foreground = module.to_point_batch(batch)
    cloud, grid_index = points.points, points.grid_index
    if foreground is not None:
        cloud, grid_index = cloud[foreground], grid_index[foreground]
    output = module.model.render(cloud, torch.zeros(len(cloud), dtype=torch.long), 1, grid_index=grid_index,
                                 grid_shape=points.grid_shape, categories=["bagel"])
    covered = output.pixel_to_point[0, 2] >= 0
    rows, cols = covered.any(1).nonzero(), covered.any(0).nonzero()
    return covered, (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max()))


def test_a_scan_with_a_fragment_renders_at_the_same_scale_as_without() -> None:
    """Per-view framing fits the cloud's box: a stray speck left by plane removal would shrink the
    object in every view. The official cleaning (plane + largest cluster at the native resolution,
    before the resize) removes it: the render is the fragment-free one, pixel for pixel."""
    cleaning = _official_module()
    assert cleaning.keep_largest_cluster
    clean, clean_box = _silhouette_box(cleaning, _scan_with_fragment(False))
    specked, specked_box = _silhouette_box(cleaning, _scan_with_fragment(True))
    assert torch.equal(clean, specked) and clean_box == specked_box
    plane_only = _official_module(keep_largest_cluster=False)
    shrunk, shrunk_box = _silhouette_box(plane_only, _scan_with_fragment(True))
    # Plane removal alone keeps the speck: the box now spans object and speck (wider), and the
    # object itself covers fewer pixels.
    assert shrunk_box[3] - shrunk_box[2] > clean_box[3] - clean_box[2]
    assert int(shrunk.sum()) < int(clean.sum())


def test_anomalib_depth_batch_runs_the_official_way_with_rgb() -> None:
    """anomalib's ``DepthBatch`` (RGB + xyz at full resolution): cleaned at full resolution, the
    RGB background blacked out, fused the authors' way; a pixel map at the GT resolution comes back."""
    from anomalib.data import DepthBatch

    from anomalib_3d.data.synthetic.generator import make_scan

    scan = make_scan("gear", "bulge", seed=3, image_size=(160, 160))
    batch = DepthBatch(image=torch.from_numpy(scan.rgb).permute(2, 0, 1)[None].float() / 255,
                       depth_map=torch.from_numpy(scan.xyz).permute(2, 0, 1)[None],
                       gt_mask=torch.from_numpy(scan.mask)[None], gt_label=torch.tensor([1]))
    module = _official_module()
    out, prediction = module.predict_batch(batch)
    assert out.anomaly_map.shape == (1, 160, 160) and bool(torch.isfinite(out.anomaly_map).all())
    assert prediction.rgb_score is not None and module.model.fusion == "official"
    # The official object score: max of the fused image (>= its value at any point) + (P_rgb + mean_v P) / 2.
    floor = prediction.anomaly_map.max() + 0.5 * (prediction.rgb_score + prediction.view_probs.mean(1))
    assert float(prediction.pred_score) >= float(floor) - 1e-6


def test_data_layer_cleans_mvtec_scans_at_native_resolution(tmp_path: Path) -> None:
    import tifffile

    from anomalib_3d.data.datamodules.mvtec3d import MVTec3DPointCloud

    xyz = _scan_with_fragment(True).astype(np.float32)
    for split in ("train", "test"):
        folder = tmp_path / "gear" / split / "good" / "xyz"
        folder.mkdir(parents=True)
        tifffile.imwrite(folder / "000.tiff", xyz)
    counts = {}
    for cluster in (False, True):
        datamodule = MVTec3DPointCloud(root=tmp_path, category="gear", grid_size=(80, 80), keep_largest_cluster=cluster)
        datamodule.setup()
        counts[cluster] = datamodule.train_data[0]
    expected = clean_organized_scan(xyz, largest_cluster=True)
    from anomalib_3d.data.adapters import resize_organized

    resized = resize_organized(torch.from_numpy(np.where(expected[..., None], xyz, 0)), (80, 80))
    assert counts[True].num_points == int((resized != 0).any(-1).sum())
    assert counts[False].num_points > counts[True].num_points  # plane removal alone keeps the speck


# ---------------------------------------------------------------------------------------------
# visibility borrowing and resampling


def test_unseen_points_borrow_the_flags_of_the_nearest_seen_point_in_order() -> None:
    visible = torch.tensor([
        [False, False],  # 0: nearest seen is 1 (after) at 1, 4 (before, wrapping) at 2 -> 1
        [True, False],
        [False, False],  # 2: 1 and 3 both at 1: the later (3) wins, as the authors' search
        [False, True],
        [True, True],
    ])
    borrowed = borrow_unseen_visibility(visible, torch.zeros(5, dtype=torch.long), 1)
    assert borrowed.tolist() == [[True, False], [True, False], [False, True], [False, True], [True, True]]
    # With grid positions the gaps are counted in pixels: point 2 sits next to point 1's pixel.
    positions = torch.tensor([0, 10, 11, 30, 40])
    by_pixel = borrow_unseen_visibility(visible, torch.zeros(5, dtype=torch.long), 1, positions)
    assert by_pixel[2].tolist() == [True, False]
    # Clouds are handled apart; a cloud no view sees keeps its (empty) flags.
    two = borrow_unseen_visibility(torch.cat([visible, torch.zeros(2, 2, dtype=torch.bool)]),
                                   torch.tensor([0] * 5 + [1] * 2), 2)
    assert two[:5].tolist() == borrowed.tolist() and not two[5:].any()


def test_resampling_down_is_farthest_point_sampling_and_maps_every_point_back() -> None:
    from anomalib_3d.ops import farthest_point_sample

    points = torch.rand(500, 3, generator=torch.Generator().manual_seed(2))
    resampled, origin, nearest = resample_cloud(points, 120)
    assert torch.equal(origin, farthest_point_sample(points, 120)) and torch.equal(resampled, points[origin])
    distances = torch.cdist(points, resampled)
    torch.testing.assert_close(distances.gather(1, nearest[:, None])[:, 0], distances.min(1).values)


def test_resampling_up_adds_points_between_neighbours_with_the_nearer_label() -> None:
    points = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0.0, 2, 0], [0.0, 0, 4], [9.0, 9, 9]])
    resampled, origin, nearest = resample_cloud(points, 40, seed=1)
    assert resampled.shape == (40, 3) and torch.equal(resampled[:5], points) and torch.equal(nearest, torch.arange(5))
    for point, source in zip(resampled[5:], origin[5:], strict=True):
        # Every new point lies a quarter, half or three quarters of the way from a point to a
        # neighbour, and carries the label of the nearer end (the start at one half).
        found = False
        for start in range(5):
            for end in range(5):
                for ratio in (0.25, 0.5, 0.75):
                    if start != end and torch.allclose(point, points[start] + ratio * (points[end] - points[start])):
                        found = found or int(source) == (start if ratio <= 0.5 else end)
        assert found


# ---------------------------------------------------------------------------------------------
# the official multimodal score


def test_official_fusion_by_hand() -> None:
    """Without smoothing: ``M = (A + C) / 2`` on the whole 2 x 3 image (A = 0 off the object);
    the object score takes its maximum over the whole image, here at a background pixel, and adds
    ``(P_rgb + mean_v P) / 2``; the point-only score is ``max A / 2 + mean_v P / 2``."""
    point_raw = torch.tensor([0.2, 0.6, 0.4])  # the object's pixels 0, 1, 4
    grid_index = torch.tensor([0, 1, 4])
    rgb = torch.tensor([[[0.1, 0.3, 1.0], [0.2, 0.5, 0.0]]])
    fused = fuse_official(point_raw, rgb, torch.tensor([0.7]), torch.tensor([[0.2, 0.4]]), grid_index,
                          torch.zeros(3, dtype=torch.long), sigma=0.0)
    torch.testing.assert_close(fused.anomaly_map, torch.tensor([0.15, 0.45, 0.45]))
    torch.testing.assert_close(fused.point_map, point_raw)
    torch.testing.assert_close(fused.rgb_map, torch.tensor([0.1, 0.3, 0.5]))
    assert fused.pred_score.item() == pytest.approx(0.5 + (0.7 + 0.3) / 2)  # max M = 0.5 at pixel (0, 2)
    assert fused.point_score.item() == pytest.approx(0.5 * 0.6 + 0.5 * 0.3)


def test_official_fusion_smooths_whole_images_like_scipy() -> None:
    from scipy.ndimage import gaussian_filter

    generator = torch.Generator().manual_seed(5)
    grid_index = torch.tensor([3, 4, 9, 10, 11, 15, 16, 22])
    point_raw = torch.rand(8, generator=generator, dtype=torch.float64)
    rgb = torch.rand(1, 6, 6, generator=generator, dtype=torch.float64)
    fused = fuse_official(point_raw, rgb, torch.tensor([0.3], dtype=torch.float64),
                          torch.tensor([[0.1, 0.5, 0.3]], dtype=torch.float64), grid_index,
                          torch.zeros(8, dtype=torch.long), sigma=1.5)
    canvas = np.zeros(36)
    canvas[grid_index.numpy()] = point_raw.numpy()
    point_image = gaussian_filter(canvas.reshape(6, 6), 1.5)
    rgb_image = gaussian_filter(rgb[0].numpy(), 1.5)
    fused_image = gaussian_filter((point_image + rgb_image) / 2, 1.5)
    np.testing.assert_allclose(fused.anomaly_map.numpy(), fused_image.reshape(-1)[grid_index.numpy()], atol=1e-12)
    assert fused.pred_score.item() == pytest.approx(fused_image.max() + (0.3 + 0.3) / 2, abs=1e-12)
    assert fused.point_score.item() == pytest.approx(0.5 * point_image.max() + 0.5 * 0.3, abs=1e-12)


def test_official_model_fuses_the_authors_way() -> None:
    """A stand-in that sees blue, grey renders (cue 0 -> e), a uniform blue image (cue 0.6 -> p) on
    a grid the object fills: the official score is ``(e + p) / 2 + (p + e) / 2 = e + p``, the
    paper's ``(e + p) / 2``."""
    from test_pointad_model import _abnormal_probability

    stand_in = BlueCueBackbone(image_size=32, grid_size=4)
    side = torch.linspace(-0.5, 0.5, 12)
    yy, xx = torch.meshgrid(side, side, indexing="ij")
    points = torch.stack([xx, yy, 1.0 + 0.3 * (xx**2 + yy**2)], dim=-1).reshape(-1, 3)
    image = torch.zeros(1, 3, 20, 20)
    image[0, 2] = 0.6
    e, p = _abnormal_probability(0.0), _abnormal_probability(0.6)
    scores = {}
    for style in ("official", "ours"):
        model = PointADModel(stand_in, FixedPrompts(), render=RenderSettings(num_views=3, style=style)).eval()
        assert model.fusion == ("official" if style == "official" else "paper")
        out = model.predict(points, torch.zeros(144, dtype=torch.long), 1, rgb=image, grid_index=torch.arange(144),
                            grid_shape=(12, 12))
        scores[style] = out.pred_score.item()
        torch.testing.assert_close(out.anomaly_map, torch.full((144,), 0.5 * (e + p)), atol=1e-6, rtol=0)
    assert scores["official"] == pytest.approx(e + p, abs=1e-6)
    assert scores["ours"] == pytest.approx(0.5 * (e + p), abs=1e-6)


def test_blackout_background_by_hand() -> None:
    images = torch.ones(1, 3, 4, 6)
    grid_index = torch.tensor([0, 4])  # a 2 x 3 grid: pixels (0, 0) and (1, 1) hold points
    out = blackout_background(images, grid_index, (2, 3), torch.zeros(2, dtype=torch.long), 1)
    expected = torch.zeros(4, 6)
    expected[0:2, 0:2] = 1.0  # each grid pixel is a 2 x 2 block of the image
    expected[2:4, 2:4] = 1.0
    assert torch.equal(out[0, 0], expected) and torch.equal(out[0, 2], expected)
    given = torch.zeros(1, 4, 6, dtype=torch.bool)
    given[0, 3, 5] = True
    explicit = blackout_background(images, grid_index, (2, 3), torch.zeros(2, dtype=torch.long), 1, given)
    assert explicit[0, :, 3, 5].eq(0).all() and int((explicit == 0).sum()) == 3


# ---------------------------------------------------------------------------------------------
# the official config with a converted prompt checkpoint


def test_prompt_checkpoint_selects_the_official_pictures(tmp_path: Path) -> None:
    """``configs/models/pointad_official.yaml`` with the released-prompt layout (here for the tiny
    ViT) loads the prompts into the model and renders the authors' pictures: 1024 px window,
    Open3D's per-view camera, the category's square points, nearest-point visibility."""
    from test_pointad_checkpoint import official_state

    from anomalib_3d_plugins.pointad import PointAD

    config = yaml.safe_load((CONFIGS / "models" / "pointad_official.yaml").read_text())["model"]
    assert config["init_args"]["render_style"] == "official" and config["init_args"]["feature_layers"] == [24]
    path = tmp_path / "epoch_15.pth"
    checkpoint = official_state(deep=2)
    torch.save(checkpoint, path)
    arguments = {**config["init_args"], "backbone": "pointad-tiny-vit", "pretrained": None, "feature_layers": [4],
                 "vv_start_layer": 2, "deep_prompt_depth": 3, "prompt_checkpoint": str(path), "render_size": 112}
    torch.manual_seed(0)
    module = PointAD(**arguments, evaluator=False, visualizer=False)
    state = checkpoint["prompt_learner"]
    assert torch.equal(module.model.prompt_learner.normal_context, state["ctx_pos"][0, 0])
    assert torch.equal(module.model.prompt_learner.deep[1], state["compound_prompts_text.1"])
    settings = module.model.render_settings
    assert settings.official and module.model.fusion == "official" and module.keep_largest_cluster
    rig = module.model.rig_for(True)
    assert rig.window_size == (1024, 1024) and rig.framing == "view_box" and rig.projection == "pinhole"
    radii = module.model.cloud_radii(torch.rand(50, 3), torch.zeros(50, dtype=torch.long), 1, torch.arange(50),
                                     (5, 10), ["cookie"])
    assert radii == [OFFICIAL_STYLES["pointad_mvtec"].point_sizes["cookie"] / 2]
    side = torch.linspace(-0.02, 0.02, 24)
    yy, xx = torch.meshgrid(side, side, indexing="ij")
    scan = torch.stack([xx, yy, 0.4 + 20 * (xx**2 + yy**2)], dim=-1).reshape(-1, 3)  # a sensor-frame bowl
    output = module.model.render(scan, torch.zeros(576, dtype=torch.long), 1, grid_index=torch.arange(576),
                                 grid_shape=(24, 24), categories=["cookie"])
    assert output.images.shape == (1, 9, 3, 112, 112)
    assert (output.point_shape, output.visibility, output.point_radius_px) == ("square", "nearest", 3.0)
    # Without a checkpoint the default stays our style (prompts trained here).
    plain = PointAD(backbone="pointad-tiny-vit", pretrained=None, evaluator=False, visualizer=False)
    assert plain.model.render_settings.style == "ours" and plain.model.fusion == "paper"
    assert not plain.keep_largest_cluster
