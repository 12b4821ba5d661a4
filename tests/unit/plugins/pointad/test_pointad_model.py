"""PointAD's model on a tiny random ViT (CPU): what trains, the point gather, the cache, scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from anomalib_3d.data.dataclasses import PointCloudBatch, PointCloudItem
from anomalib_3d_plugins.pointad.clip_backbone import FrozenCLIP
from anomalib_3d_plugins.pointad.feature_cache import FeatureCache
from anomalib_3d_plugins.pointad.prompts import PromptLearner
from anomalib_3d_plugins.pointad.render_settings import RenderSettings
from anomalib_3d_plugins.pointad.scoring import gather_point_probs
from anomalib_3d_plugins.pointad.torch_model import PointADModel
from doubles.pointad import BlueCueBackbone, FixedPrompts

TINY = "pointad-tiny-vit"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def backbone() -> FrozenCLIP:
    torch.manual_seed(0)
    return FrozenCLIP(TINY, None)


def make_model(backbone: FrozenCLIP, **kwargs: object) -> PointADModel:
    torch.manual_seed(1)
    render = kwargs.pop("render", RenderSettings(num_views=3, image_size=64))
    kwargs.setdefault("smoothing_k", 8)
    return PointADModel(backbone, PromptLearner(backbone), render=render, **kwargs)


def synthetic_batch(num_points: int = 1024) -> PointCloudBatch:
    """Four synthetic parts (two defective) with exact point labels, as the auxiliary loader gives."""
    from anomalib_3d.data.synthetic import make_sample

    items = []
    for i, (category, defect) in enumerate((("cup", "bulge"), ("cup", None), ("gear", "hole"), ("gear", None))):
        sample = make_sample(category, defect, seed=i, num_points=num_points)
        items.append(PointCloudItem(
            points=torch.from_numpy(sample.points),
            normals=torch.from_numpy(sample.normals),
            gt_mask=torch.from_numpy(sample.labels.astype(bool)),
            gt_label=int(defect is not None),
            category=category,
            point_path=f"synthetic/{category}/{i}",
        ))
    return PointCloudBatch.collate(items)


def loss_of(model: PointADModel, batch: PointCloudBatch) -> dict[str, torch.Tensor]:
    return model.compute_loss(batch.points, batch.batch_index, batch.gt_label, batch.gt_mask, normals=batch.normals,
                              class_names=batch.category, paths=batch.point_path)


@pytest.fixture(scope="module")
def batch() -> PointCloudBatch:
    return synthetic_batch()


# ---------------------------------------------------------------------------------------------
def test_only_prompt_parameters_get_gradients(backbone: FrozenCLIP, batch: PointCloudBatch) -> None:
    model = make_model(backbone)
    loss_of(model, batch)["loss"].backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    prompt = {name for name, _ in model.named_parameters() if name.startswith("prompt_learner.")}
    assert with_grad == prompt  # every prompt tensor (contexts and deep tokens) learns, nothing else
    assert all(not p.requires_grad and p.grad is None for p in model.backbone.parameters())


def test_lightning_module_optimizes_prompts_only() -> None:
    from anomalib_3d_plugins.pointad.lightning_model import PointAD

    module = PointAD(backbone=TINY, pretrained=None, evaluator=False, visualizer=False)
    optimizer = module.configure_optimizers()
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in module.model.prompt_learner.parameters()}
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.prompt_learner.") for n in trainable)
    assert optimizer.defaults["lr"] == pytest.approx(1e-3)


def test_point_gather_ignores_occluded_views(backbone: FrozenCLIP) -> None:
    """Two parallel squares, seen from the front (view 0) and the back (view 1): each square is
    hidden by the other in one view, so it must take only the value of the view that sees it."""
    side = torch.linspace(-0.5, 0.5, 24)
    grid = torch.stack(torch.meshgrid(side, side, indexing="ij"), dim=-1).reshape(-1, 2)
    front = torch.cat([grid, torch.full((grid.shape[0], 1), 0.4)], dim=1)
    back = torch.cat([grid, torch.full((grid.shape[0], 1), -0.4)], dim=1)
    points = torch.cat([front, back])
    batch = torch.zeros(points.shape[0], dtype=torch.long)
    model = make_model(backbone, render=RenderSettings(view_angles=(0.0, math.pi), image_size=64, point_radius_px=2))
    output = model.render(points, batch, 1, with_images=False)
    abnormal = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1, 1).expand(1, 2, 1, 64, 64)
    maps = torch.cat([1 - abnormal, abnormal], dim=2)  # view 0 says "anomalous", view 1 "normal"
    (probs,), valid = gather_point_probs([maps], output)
    n = front.shape[0]
    assert bool(output.visible[:n, 0].all()) and not bool(output.visible[:n, 1].any())
    assert bool(valid.all())
    torch.testing.assert_close(probs[:n, 1], torch.ones(n))  # front: only view 0 sees it
    torch.testing.assert_close(probs[n:, 1], torch.zeros(n))  # back: only view 1
    # Ignoring visibility would have averaged both views to 0.5.


def test_feature_cache_returns_identical_features(backbone: FrozenCLIP, batch: PointCloudBatch) -> None:
    model = make_model(backbone, feature_cache=FeatureCache())
    fresh = make_model(backbone)  # no cache: always renders and encodes
    first = model._features_for(batch.points, batch.batch_index, 4, batch.normals, None, batch.point_path)
    assert len(model.feature_cache) == 4 and model.feature_cache.hits == 0
    second = model._features_for(batch.points, batch.batch_index, 4, batch.normals, None, batch.point_path)
    assert model.feature_cache.hits == 4
    assert second[0].images is None  # nothing rendered or encoded again, only rasterised
    reference = fresh._features_for(batch.points, batch.batch_index, 4, batch.normals, None, None)
    for a, b, c in zip(first[1:], second[1:], reference[1:], strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert torch.equal(first[0].visible, second[0].visible)
    torch.testing.assert_close(loss_of(model, batch)["loss"], loss_of(fresh, batch)["loss"], rtol=0, atol=0)


def test_cache_key_depends_on_sample_settings_and_radius_used(backbone: FrozenCLIP) -> None:
    model = make_model(backbone, feature_cache=FeatureCache())
    other = make_model(backbone, feature_cache=FeatureCache(), render=RenderSettings(num_views=5, image_size=64))
    points = torch.rand(100, 3)
    key = model.sample_key("a.pcd", points, 1.5)
    assert key == model.sample_key("a.pcd", points.clone(), 1.5)
    assert key != model.sample_key("b.pcd", points, 1.5)
    assert key != model.sample_key("a.pcd", points * 2, 1.5)
    assert key != model.sample_key("a.pcd", points, 2.0)  # the radius actually used is part of the key
    assert key != model.sample_key("a.pcd", points, 1.5, organized=True)  # another rig (flip + MVTec views)
    assert key != other.sample_key("a.pcd", points, 1.5)
    assert model.sample_key(None, points, 1.5) is None


def test_cached_features_follow_the_radius_of_each_cloud(backbone: FrozenCLIP) -> None:
    """A cloud cached in one batch and met again in another batch is keyed by its own radius."""
    model = make_model(backbone, feature_cache=FeatureCache())
    gen = torch.Generator().manual_seed(3)
    sparse, dense = torch.rand(200, 3, generator=gen), torch.rand(3000, 3, generator=gen)
    alone = model.cloud_radii(sparse, torch.zeros(200, dtype=torch.long), 1)
    both = model.cloud_radii(torch.cat([sparse, dense]), torch.cat([torch.zeros(200), torch.ones(3000)]).long(), 2)
    assert both[0] == alone[0] and both[1] < both[0]


def test_cache_budget_evicts_least_recently_used() -> None:
    cache = FeatureCache(max_bytes=3 * 400)
    entry = (torch.zeros(10, 10), torch.zeros(0))  # 400 bytes
    for key in "abc":
        assert cache.put(key, *entry)
    cache.get("a")
    cache.put("d", *entry)
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "abcd" if k in cache}
    assert not cache.put("huge", torch.zeros(1000), torch.zeros(0))


def test_hybrid_loss_decreases_on_synthetic_auxiliary_data(backbone: FrozenCLIP, batch: PointCloudBatch) -> None:
    model = make_model(backbone, feature_cache=FeatureCache())
    optimizer = torch.optim.Adam(model.prompt_learner.parameters(), lr=1e-2, betas=(0.5, 0.999))
    history = []
    for _ in range(6):
        loss = loss_of(model, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < history[0] - 0.05, history


def _abnormal_probability(value: float, tau: float = 0.07) -> float:
    """P_a of a stand-in token (1 - s, s) against text (1, 0) / (0, 1): softmax of the cosines / tau."""
    norm = math.hypot(1.0 - value, value)
    cos_normal, cos_abnormal = (1.0 - value) / norm, value / norm
    return 1.0 / (1.0 + math.exp((cos_normal - cos_abnormal) / tau))


def _sphere(num: int, seed: int) -> torch.Tensor:
    v = torch.randn(num, 3, generator=torch.Generator().manual_seed(seed))
    return v / v.norm(dim=1, keepdim=True)


def test_object_score_equals_hand_computed_value() -> None:
    """A^s = 1/2 (mean_v P_a^(v) + max A^m) with every quantity fixed by the stand-in backbone.

    Views' global tokens carry abnormality 0.45, 0.5, 0.56 and every patch token 0.52; the point map
    is then the patch probability on every point (a constant survives the Gaussian)."""
    globals_ = [0.45, 0.50, 0.56]
    stand_in = BlueCueBackbone(image_size=32, grid_size=4, fixed_global=globals_, fixed_patch=0.52, num_layers=2)
    model = PointADModel(stand_in, FixedPrompts(), render=RenderSettings(num_views=3)).eval()
    points = _sphere(400, 0)
    out = model.predict(points, torch.zeros(400, dtype=torch.long), 1)
    patch = _abnormal_probability(0.52)
    views = [_abnormal_probability(g) for g in globals_]
    torch.testing.assert_close(out.view_probs[0], torch.tensor(views), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.point_map, torch.full((400,), patch), atol=1e-6, rtol=0)
    expected = 0.5 * (sum(views) / 3 + patch)
    assert out.pred_score.item() == pytest.approx(expected, abs=1e-6)
    assert out.pred_score.item() == pytest.approx(0.5 * ((0.11813 + 0.5 + 0.91737) / 3 + 0.69157), abs=1e-4)


def _numpy_bilinear(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reference resize (half-pixel centres, edge clamped), written independently of torch."""
    h, w = values.shape
    out = np.zeros((height, width))
    for i in range(height):
        y = min(max((i + 0.5) * h / height - 0.5, 0.0), h - 1)
        y0 = int(np.floor(y)); y1 = min(y0 + 1, h - 1); fy = y - y0  # noqa: E702
        for j in range(width):
            x = min(max((j + 0.5) * w / width - 0.5, 0.0), w - 1)
            x0 = int(np.floor(x)); x1 = min(x0 + 1, w - 1); fx = x - x0  # noqa: E702
            top = values[y0, x0] * (1 - fx) + values[y0, x1] * fx
            bottom = values[y1, x0] * (1 - fx) + values[y1, x1] * fx
            out[i, j] = top * (1 - fy) + bottom * fy
    return out


def test_rgb_map_is_resized_from_the_patch_grid_to_a_different_organized_grid() -> None:
    """Patch grid 4 x 4, organized grid 6 x 10: the map must be resized (bilinear), then read per point."""
    stand_in = BlueCueBackbone(image_size=32, grid_size=4)
    model = PointADModel(stand_in, FixedPrompts(), render=RenderSettings(num_views=1)).eval()
    cue = torch.tensor([[0.0, 0.2, 0.4, 0.6], [0.8, 1.0, 0.1, 0.3], [0.5, 0.7, 0.9, 0.0], [0.25, 0.45, 0.65, 0.85]])
    # 8 x 8 pixel blocks of colour (0, 0, cue): pooling gives exactly the cue per patch.
    image = torch.zeros(1, 3, 32, 32)
    image[0, 2] = cue.repeat_interleave(8, 0).repeat_interleave(8, 1)
    grid_index = torch.tensor([0, 7, 13, 29, 44, 59])
    batch = torch.zeros(6, dtype=torch.long)
    text, _ = model.text_features()
    probability, per_point = model.rgb_scores(image, grid_index, (6, 10), batch, text)
    patch_probs = np.vectorize(_abnormal_probability)(cue.double().numpy())
    expected = _numpy_bilinear(patch_probs, 6, 10).reshape(-1)[grid_index.numpy()]
    torch.testing.assert_close(per_point.double(), torch.from_numpy(expected), atol=1e-6, rtol=0)
    assert probability.item() == pytest.approx(_abnormal_probability(1.0), abs=1e-6)  # the bluest patch


def test_multimodal_fusion_equals_hand_computed_values() -> None:
    """Paper §3.6 with a uniform blue RGB image (cue c = 0.6) and grey renders (cue 0).

    A^m = e, A^m_rgb = p, A^s = e, A^s_rgb = p (constants survive the grid Gaussian on a full
    grid); A^m_mod = 1/2 (e + p); A^s_mod = 1/2 [1/2 (p + e) + 1/2 (e + p)] = 1/2 (e + p)."""
    stand_in = BlueCueBackbone(image_size=32, grid_size=4)
    model = PointADModel(stand_in, FixedPrompts(), render=RenderSettings(num_views=3)).eval()
    side = torch.linspace(-0.5, 0.5, 12)
    yy, xx = torch.meshgrid(side, side, indexing="ij")
    points = torch.stack([xx, yy, 1.0 + 0.3 * (xx**2 + yy**2)], dim=-1).reshape(-1, 3)  # sensor-frame bowl
    image = torch.zeros(1, 3, 20, 20)
    image[0, 2] = 0.6
    out = model.predict(points, torch.zeros(144, dtype=torch.long), 1, rgb=image, grid_index=torch.arange(144),
                        grid_shape=(12, 12))
    e, p = _abnormal_probability(0.0), _abnormal_probability(0.6)
    torch.testing.assert_close(out.point_map, torch.full((144,), e), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.rgb_map, torch.full((144,), p), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.anomaly_map, torch.full((144,), 0.5 * (e + p)), atol=1e-6, rtol=0)
    assert out.point_score.item() == pytest.approx(e, abs=1e-6)
    assert out.rgb_score.item() == pytest.approx(p, abs=1e-6)
    assert out.pred_score.item() == pytest.approx(0.5 * (e + p), abs=1e-6)
    assert out.pred_score.item() == pytest.approx(0.5 * (6.2e-7 + 0.98133), abs=1e-4)


def test_fusion_smooths_each_map_then_their_sum(backbone: FrozenCLIP) -> None:
    """``A^m_mod = 1/2 G(G(A) + G(A_rgb))`` with G the grid Gaussian (scipy reference)."""
    from scipy.ndimage import gaussian_filter

    model = make_model(backbone, smoothing_sigma=1.5).eval()
    side = torch.linspace(0, 1, 8)
    grid = torch.stack(torch.meshgrid(side, side, indexing="ij"), dim=-1).reshape(-1, 2)
    points = torch.cat([grid, 1.0 + (grid[:, :1] - 0.5) ** 2], dim=1)
    keep = torch.arange(64) % 5 != 0  # holes in the grid: 0 there before filtering
    index = torch.arange(64)[keep]
    batch = torch.zeros(int(keep.sum()), dtype=torch.long)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    out = model.predict(points[keep], batch, 1, rgb=image, grid_index=index, grid_shape=(8, 8))

    def scipy_smooth(values: torch.Tensor) -> torch.Tensor:
        canvas = np.zeros(64)
        canvas[index.numpy()] = values.detach().double().numpy()
        return torch.from_numpy(gaussian_filter(canvas.reshape(8, 8), 1.5).reshape(-1)[index.numpy()]).float()

    text, _ = model.text_features()
    _, rgb_raw = model.rgb_scores(image, index, (8, 8), batch, text)
    torch.testing.assert_close(out.rgb_map, scipy_smooth(rgb_raw), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.anomaly_map, 0.5 * scipy_smooth(out.point_map + out.rgb_map), atol=1e-5, rtol=0)


def test_unorganized_smoothing_is_a_radius_gaussian_with_three_sigma_support(backbone: FrozenCLIP) -> None:
    """Against a brute-force Gaussian over every point within 3 sigma (sigma = 4 median spacings)."""
    model = make_model(backbone, smoothing_k=None)
    gen = torch.Generator().manual_seed(4)
    points = torch.rand(600, 3, generator=gen) * torch.tensor([1.0, 1.0, 0.05])
    scores = torch.rand(600, generator=gen)
    out = model.smooth(points, scores, torch.zeros(600, dtype=torch.long), 1)
    p = points.double().numpy()
    nearest = np.sort(np.linalg.norm(p[:, None] - p[None], axis=-1), axis=1)[:, 1]
    sigma = 4.0 * float(np.sort(nearest)[(len(nearest) - 1) // 2])  # the lower median (torch's)
    d2 = ((p[:, None] - p[None]) ** 2).sum(-1)
    weight = np.exp(-d2 / (2 * sigma**2)) * (d2 <= (3 * sigma) ** 2)
    expected = weight @ scores.double().numpy() / weight.sum(1)
    torch.testing.assert_close(out.double(), torch.from_numpy(expected), atol=1e-5, rtol=0)
    model.smoothing_sigma = 0.0
    assert torch.equal(model.smooth(points, scores, torch.zeros(600, dtype=torch.long), 1), scores)


def test_object_aware_prompts_use_class_names(backbone: FrozenCLIP) -> None:
    torch.manual_seed(2)
    coop = PointADModel(backbone, PromptLearner(backbone, object_agnostic=False), render=RenderSettings(image_size=64))
    text = coop._per_cloud_text(["cable_gland", "bagel", "cable_gland"], 3)
    assert text.shape == (3, 2, backbone.embed_dim)
    assert torch.equal(text[0], text[2]) and not torch.allclose(text[0], text[1])
    agnostic = make_model(backbone)
    words = agnostic.prompt_learner.class_words(["bagel"])
    assert words == ["object"]


