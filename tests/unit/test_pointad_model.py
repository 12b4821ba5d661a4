"""PointAD's model on a tiny random ViT (CPU): what trains, the point gather, the cache, scoring."""

from __future__ import annotations

import math

import pytest
import torch

from anomalib_3d.data.dataclasses import PointCloudBatch, PointCloudItem
from anomalib_3d_plugins.pointad.clip_backbone import FrozenCLIP
from anomalib_3d_plugins.pointad.prompts import PromptLearner
from anomalib_3d_plugins.pointad.torch_model import FeatureCache, PointADModel, RenderSettings

TINY = "pointad-tiny-vit"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def backbone() -> FrozenCLIP:
    torch.manual_seed(0)
    return FrozenCLIP(TINY, None)


def make_model(backbone: FrozenCLIP, **kwargs: object) -> PointADModel:
    torch.manual_seed(1)
    render = kwargs.pop("render", RenderSettings(num_views=3, image_size=64))
    return PointADModel(backbone, PromptLearner(backbone), render=render, smoothing_k=8, **kwargs)


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
    (probs,), valid = model.gather_point_probs([maps], output)
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


def test_cache_key_depends_on_sample_and_settings(backbone: FrozenCLIP) -> None:
    model = make_model(backbone, feature_cache=FeatureCache())
    other = make_model(backbone, feature_cache=FeatureCache(), render=RenderSettings(num_views=5, image_size=64))
    points = torch.rand(100, 3)
    key = model.sample_key("a.pcd", points)
    assert key == model.sample_key("a.pcd", points.clone())
    assert key != model.sample_key("b.pcd", points)
    assert key != model.sample_key("a.pcd", points * 2)
    assert key != other.sample_key("a.pcd", points)
    assert model.sample_key(None, points) is None


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


def test_object_score_formula(backbone: FrozenCLIP, batch: PointCloudBatch) -> None:
    model = make_model(backbone).eval()
    prediction = model.predict(batch.points, batch.batch_index, 4, normals=batch.normals)
    maxima = torch.stack([prediction.point_map[batch.batch_index == b].max() for b in range(4)])
    torch.testing.assert_close(prediction.pred_score, 0.5 * (prediction.view_probs.mean(dim=1) + maxima))
    assert prediction.anomaly_map.shape == (batch.points.shape[0],)
    assert torch.isfinite(prediction.anomaly_map).all()


def test_smoothing_is_a_gaussian_on_the_point_graph(backbone: FrozenCLIP) -> None:
    model = make_model(backbone)
    points = torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [10, 0, 0]])
    scores = torch.tensor([1.0, 0.0, 0.0, 0.0])
    batch = torch.zeros(4, dtype=torch.long)
    model.smoothing_sigma, model.smoothing_k = 0.5, 2  # median spacing 1 → sigma 0.5
    out = model.smooth(points, scores, batch, 1)
    w = math.exp(-1 / (2 * 0.25))
    torch.testing.assert_close(out[:2], torch.tensor([1 / (1 + w), w / (1 + w)]))
    model.smoothing_sigma = 0.0
    assert torch.equal(model.smooth(points, scores, batch, 1), scores)


def test_rgb_map_is_read_through_the_organized_grid(backbone: FrozenCLIP) -> None:
    model = make_model(backbone).eval()
    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(5))
    h, w = backbone.grid_size
    grid_index = torch.tensor([0, 3, 10, 48])
    batch = torch.zeros(4, dtype=torch.long)
    text, _ = model.text_features()
    with torch.no_grad():
        probability, per_point = model.rgb_scores(image, grid_index, (h, w), batch, text.expand(1, -1, -1))
        # Reference with plain tensor ops: cosine / tau, softmax, mean over layers, read row/col.
        features = backbone.encode_image(backbone.prepare_images(image))
        t = text[0]
        maps = []
        for tokens in features.patch_tokens:
            logits = torch.nn.functional.normalize(tokens[0].float(), dim=-1) @ t.T / 0.07
            maps.append(logits.softmax(-1)[:, 1])
        expected = torch.stack(maps).mean(0)[grid_index]
        g = torch.nn.functional.normalize(features.global_features.float(), dim=-1) @ t.T / 0.07
    torch.testing.assert_close(per_point, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probability, g.softmax(-1)[:, 1], atol=1e-5, rtol=1e-5)


def test_multimodal_fusion_formula(backbone: FrozenCLIP) -> None:
    """Paper §3.6: A_mod = 1/2 G(A + A_rgb), S_mod = 1/2 [1/2 (S_rgb + S) + max A_mod] (smoothing off)."""
    model = make_model(backbone, smoothing_sigma=0.0).eval()
    item = PointCloudItem(points=torch.rand(64, 3), grid_shape=torch.tensor([8, 8]), grid_index=torch.arange(64),
                          image=torch.rand(3, 32, 32))
    points = PointCloudBatch.collate([item])
    out = model.predict(points.points, points.batch_index, 1, rgb=points.image.as_subclass(torch.Tensor),
                        grid_index=points.grid_index, grid_shape=points.grid_shape)
    fused = 0.5 * (out.point_map + out.rgb_map)
    torch.testing.assert_close(out.anomaly_map, fused)
    expected = 0.5 * (0.5 * (out.rgb_score + out.point_score) + fused.max())
    torch.testing.assert_close(out.pred_score, expected)
    only_points = model.predict(points.points, points.batch_index, 1)
    torch.testing.assert_close(only_points.anomaly_map, out.point_map)


def test_object_aware_prompts_use_class_names(backbone: FrozenCLIP) -> None:
    torch.manual_seed(2)
    coop = PointADModel(backbone, PromptLearner(backbone, object_agnostic=False), render=RenderSettings(image_size=64))
    text = coop._per_cloud_text(["cable_gland", "bagel", "cable_gland"], 3)
    assert text.shape == (3, 2, backbone.embed_dim)
    assert torch.equal(text[0], text[2]) and not torch.allclose(text[0], text[1])
    agnostic = make_model(backbone)
    words = agnostic.prompt_learner.class_words(["bagel"])
    assert words == ["object"]


def test_multimodal_fusion_with_smoothing(backbone: FrozenCLIP) -> None:
    """Both maps are smoothed on the point graph, then their sum is smoothed again (``1/2 G(A + A_rgb)``)."""
    model = make_model(backbone).eval()
    side = torch.linspace(0, 1, 8)
    grid = torch.stack(torch.meshgrid(side, side, indexing="ij"), dim=-1).reshape(-1, 2)
    points = torch.cat([grid, (grid[:, :1] - 0.5) ** 2], dim=1)
    batch = torch.zeros(64, dtype=torch.long)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    out = model.predict(points, batch, 1, rgb=image, grid_index=torch.arange(64), grid_shape=(8, 8))
    text, _ = model.text_features()
    _, rgb_raw = model.rgb_scores(image, torch.arange(64), (8, 8), batch, text.expand(1, -1, -1))
    torch.testing.assert_close(out.rgb_map, model.smooth(points, rgb_raw, batch, 1))
    torch.testing.assert_close(out.anomaly_map, 0.5 * model.smooth(points, out.point_map + out.rgb_map, batch, 1))
