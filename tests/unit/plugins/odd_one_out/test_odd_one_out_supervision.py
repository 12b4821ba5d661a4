"""Odd-One-Out's supervision: masked RGB target, distillation on the silhouette with the density
detached, β as Eq. 5's correspondence features (and trained), the paper's head depths, the scene
augmentation, and the per-scene object AUROC in the evaluator."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from anomalib_3d.data.scenes import SceneBatch, SceneItem, boxes_to_corners
from anomalib_3d.data.synthetic.scenes import orbit_cameras
from anomalib_3d.render.volume import VoxelGrid, crop_boxes, project_points
from anomalib_3d_plugins.odd_one_out import OddOneOut
from anomalib_3d_plugins.odd_one_out.augmentation import apply_similarity, augment_scene, random_similarity

SMALL = {"grid_shape": (16, 16, 8), "voxel_size": 0.08, "grid_center": (0.0, 0.0, 0.1), "feature_dim": 8,
         "projection_dim": 8, "crop_size": 4, "token_dim": 16, "heads": 2, "num_blocks": 1, "topk": 5,
         "render_size": (8, 8), "num_samples": 16, "head_hidden": 16, "visualizer": False, "evaluator": False}


def _batch(views: int = 4, size: int = 32, seed: int = 0) -> SceneBatch:
    """Two scenes (3 + 2 objects) with random images, a silhouette and cameras on an orbit."""
    generator = torch.Generator().manual_seed(seed)
    k, poses = orbit_cameras(2 * views, np.random.default_rng(seed), image_size=size)
    items = []
    for scene, count in enumerate((3, 2)):
        silhouette = torch.zeros(views, size, size, dtype=torch.bool)
        silhouette[:, size // 4 : size // 2, size // 4 : 3 * size // 4] = True
        index = torch.where(silhouette, torch.zeros((), dtype=torch.long), torch.full((), -1))
        items.append(SceneItem(
            image=torch.rand(views, 3, size, size, generator=generator),
            silhouette=silhouette,
            object_index=index,
            intrinsics=torch.from_numpy(k).float().expand(views, 3, 3),
            world_to_camera=torch.from_numpy(poses[scene * views : (scene + 1) * views]).float(),
            source_views=torch.arange(views) < views // 2,
            boxes=torch.tensor([[[0.15 * i - 0.1, 0.05, 0.08], [0.12, 0.1, 0.14]] for i in range(count)]),
            object_labels=torch.tensor([i == 1 for i in range(count)]),
            gt_label=True,
        ))
    return SceneBatch.collate(items)


def _forward(model: OddOneOut, batch: SceneBatch):  # noqa: ANN202
    source = batch.source_views[0]
    supervise = ~source
    out = model.model(batch.image[:, source], batch.intrinsics[:, source], batch.world_to_camera[:, source],
                      batch.boxes, batch.object_batch,
                      model._render_cameras(batch.intrinsics[:, supervise], tuple(batch.image.shape[-2:])),  # noqa: SLF001
                      batch.world_to_camera[:, supervise], model.render_size, model.num_samples)
    return out, supervise


# ----------------------------------------------------------------------------------------------
# fix 1: the RGB target is masked


@pytest.mark.parametrize("rgb_target", ["masked", "full"])
def test_rgb_loss_ignores_pixels_outside_the_silhouette(rgb_target: str) -> None:
    model = OddOneOut(**SMALL, distillation=False, rgb_target=rgb_target)
    batch = _batch()
    views = ~batch.source_views[0]
    render = SimpleNamespace(features=torch.rand(2, int(views.sum()), 3, 8, 8), opacity=torch.rand(2, int(views.sum()), 8, 8))
    before = model.render_losses(batch, render, views)
    outside = ~batch.silhouette.unsqueeze(2).expand_as(batch.image)
    repainted = batch.image.clone()
    repainted[outside] = torch.rand(int(outside.sum()))
    batch.image = repainted
    after = model.render_losses(batch, render, views)
    assert torch.equal(before["silhouette"], after["silhouette"])
    if rgb_target == "masked":
        assert torch.equal(before["rgb"], after["rgb"])
        # The target is the image times the mask: black where the silhouette is empty.
        black = SimpleNamespace(features=torch.zeros_like(render.features), opacity=render.opacity)
        empty = batch.silhouette.clone()
        batch.silhouette = torch.zeros_like(empty)
        assert model.render_losses(batch, black, views)["rgb"] == 0.0
    else:
        assert not torch.equal(before["rgb"], after["rgb"])


# ----------------------------------------------------------------------------------------------
# fix 2: distillation on the silhouette, the density detached


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_distillation_leaves_the_density_unchanged(stop_gradient: bool) -> None:
    torch.manual_seed(0)
    model = OddOneOut(**SMALL, teacher="random", feature_stop_gradient=stop_gradient)
    batch = _batch()
    out, views = _forward(model, batch)
    losses = model.render_losses(batch, out.render, views)
    density_params = list(model.model.density_head.parameters())
    from_features = torch.autograd.grad(losses["feature"], [out.density, *density_params], allow_unused=True,
                                        retain_graph=True)
    magnitude = sum(float(g.abs().sum()) for g in from_features if g is not None)
    if stop_gradient:
        assert magnitude == 0.0  # the paper: distillation shapes the features, never the geometry
    else:
        assert magnitude > 0.0
    # The silhouette loss does reach the density (the check above is not vacuous).
    from_silhouette = torch.autograd.grad(losses["silhouette"], density_params, retain_graph=True)
    assert sum(float(g.abs().sum()) for g in from_silhouette) > 0.0


def test_distillation_on_the_silhouette_ignores_the_background() -> None:
    model = OddOneOut(**SMALL, teacher="random")
    batch = _batch()
    views = ~batch.source_views[0]
    teacher = model.teacher_targets(batch, views)
    inside = model._downsample(batch.silhouette[:, views].unsqueeze(2).float())[:, :, 0] > 0  # noqa: SLF001
    features = torch.randn(2, int(views.sum()), 3 + 8, 8, 8)
    features[:, :, 3:] = torch.where(inside.unsqueeze(2), teacher, features[:, :, 3:])  # exact where it counts
    render = SimpleNamespace(features=features, opacity=torch.rand(2, int(views.sum()), 8, 8))
    assert model.render_losses(batch, render, views)["feature"] == pytest.approx(0.0, abs=1e-6)
    model.feature_loss_region = "image"
    assert model.render_losses(batch, render, views)["feature"] > 0.05


# ----------------------------------------------------------------------------------------------
# fix 3: β gives Eq. 5's correspondences and is trained


def test_correspondences_come_from_beta_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    from anomalib_3d_plugins.odd_one_out import torch_model

    torch.manual_seed(0)
    model = OddOneOut(**SMALL, distillation=False).model
    assert not any("match" in name for name, _ in model.named_parameters())
    seen = {}
    original = torch_model.cross_instance_attention

    def spy(query, key, value, match, object_batch, topk=20):  # noqa: ANN001, ANN202
        seen["match"] = match
        return original(query, key, value, match, object_batch, topk)

    monkeypatch.setattr(torch_model, "cross_instance_attention", spy)
    batch = _batch()
    features, density, _, projection = model.build_volume(batch.image, batch.intrinsics, batch.world_to_camera)
    model.classify(features, density, projection, batch.boxes, batch.object_batch)
    crops = crop_boxes(projection, batch.boxes, model.grid, batch.object_batch, size=(4, 4, 4), margin=model.crop_margin)
    assert torch.allclose(seen["match"], crops.flatten(2).transpose(1, 2), atol=1e-6)


def test_beta_receives_gradient_from_distillation_and_classification() -> None:
    torch.manual_seed(0)
    model = OddOneOut(**SMALL, teacher="random")
    batch = _batch()
    out, views = _forward(model, batch)
    beta = list(model.model.projection_head.parameters())
    feature = torch.autograd.grad(model.render_losses(batch, out.render, views)["feature"], beta, retain_graph=True)
    assert all(float(g.abs().sum()) > 0 for g in feature)
    classification = torch.autograd.grad(model.classification_loss(out.object_logits, batch.object_labels), beta)
    assert all(float(g.abs().sum()) > 0 for g in classification)


# ----------------------------------------------------------------------------------------------
# fix 4: the paper's head depths


def test_heads_have_the_papers_depth() -> None:
    model = OddOneOut(**SMALL, distillation=False).model
    assert model.density_head.depth == 2 and model.rgb_head.depth == 2  # "a two-layered 1x1x1 convolution block"
    assert model.projection_head.depth == 4  # "a four-layered 1x1x1 convolution block"
    for head in (model.density_head, model.rgb_head, model.projection_head):
        convs = [m for m in head.net if isinstance(m, torch.nn.Conv3d)]
        assert all(c.kernel_size == (1, 1, 1) for c in convs)
        assert [c.out_channels for c in convs[:-1]] == [16] * (len(convs) - 1)  # head_hidden
        assert sum(isinstance(m, torch.nn.LeakyReLU) for m in head.net) == len(convs) - 1
    # With 8 features and β of width 8, β is no longer a linear map of the features.
    x = torch.randn(1, 8, 2, 2, 2)
    head = model.projection_head
    assert not torch.allclose(head(2 * x) - head(torch.zeros_like(x)), 2 * (head(x) - head(torch.zeros_like(x))), atol=1e-4)
    shallow = OddOneOut(**SMALL, distillation=False, head_layers=1, projection_layers=1).model
    assert shallow.projection_head.depth == 1 and shallow.density_head.depth == 1


# ----------------------------------------------------------------------------------------------
# scene augmentation


def _turn(angle: float, flip: bool = False) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    rotation = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    if flip:
        rotation[0] *= -1
    return rotation


@pytest.mark.parametrize("flip", [False, True])
def test_moved_scene_projects_to_the_same_pixels(flip: bool) -> None:
    batch = _batch()
    rotation = torch.stack([_turn(0.7, flip), _turn(-2.0)])
    scale = torch.tensor([1.3, 1.0], dtype=torch.float64)
    shift = torch.tensor([[0.1, -0.05, 0.0], [0.0, 0.2, 0.0]], dtype=torch.float64)
    moved_cameras, moved_boxes = apply_similarity(batch.world_to_camera.double(), batch.boxes.double(),
                                                  batch.object_batch, rotation, scale, shift)
    points = torch.rand(2, 50, 3, dtype=torch.float64) * 0.4 - 0.2
    moved_points = scale.view(2, 1, 1) * torch.einsum("bij,bnj->bni", rotation, points) + shift.unsqueeze(1)
    before, depth = project_points(points, batch.intrinsics.double(), batch.world_to_camera.double())
    after, moved_depth = project_points(moved_points, batch.intrinsics.double(), moved_cameras)
    assert torch.allclose(before, after, atol=1e-6)
    assert torch.allclose(moved_depth, depth * scale.view(2, 1, 1), atol=1e-9)
    # The cameras stay rigid (the dataclass check accepts them) and the boxes enclose the moved corners.
    SceneBatch(image=batch.image, intrinsics=batch.intrinsics, world_to_camera=moved_cameras.float(),
               boxes=moved_boxes.float(), object_batch=batch.object_batch)
    corners = boxes_to_corners(batch.boxes.double())
    signs = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    all_corners = torch.stack([corners[:, s, torch.arange(3)] for s in signs.tolist()], dim=1)  # (K, 8, 3)
    a, s, t = rotation[batch.object_batch], scale[batch.object_batch], shift[batch.object_batch]
    moved_corners = s.view(-1, 1, 1) * torch.einsum("kij,knj->kni", a, all_corners) + t.unsqueeze(1)
    low, high = boxes_to_corners(moved_boxes).unbind(1)
    assert torch.allclose(moved_corners.amin(1), low, atol=1e-9) and torch.allclose(moved_corners.amax(1), high, atol=1e-9)


def test_oriented_boxes_move_exactly() -> None:
    batch = _batch()
    yaw = _turn(0.5)
    poses = torch.eye(4, dtype=torch.float64).repeat(5, 1, 1)
    poses[:, :3, :3] = yaw
    poses[:, :3, 3] = batch.boxes[:, 0].double()
    sizes = torch.tensor([0.2, 0.05, 0.1], dtype=torch.float64).repeat(5, 1)
    rotation = torch.stack([_turn(-0.5), _turn(-0.5)])
    ones, zeros = torch.ones(2, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64)
    _, exact = apply_similarity(batch.world_to_camera.double(), batch.boxes.double(), batch.object_batch, rotation,
                                ones, zeros, poses, sizes)
    # Turned back by the same angle: the boxes are axis-aligned again, of exactly their own sizes.
    assert torch.allclose(exact[:, 1], sizes, atol=1e-9)


def test_augmentation_keeps_the_scene_in_the_grid_and_follows_the_stage() -> None:
    batch = _batch()
    grid = VoxelGrid((20, 20, 8), 0.05, (0.0, 0.0, 0.1))
    generator = torch.Generator().manual_seed(0)
    low = torch.tensor(grid.min_corner, dtype=torch.float64)
    high = low + torch.tensor(grid.extent, dtype=torch.float64)
    turned = False
    for _ in range(20):
        rotation, scale, shift = random_similarity(batch.boxes, batch.object_batch, 2, grid, generator=generator)
        assert bool((scale >= 1.0).all()) and bool((shift[:, :2].abs() <= 0.2 + 1e-12).all()) and bool((shift[:, 2] == 0).all())
        _, moved = apply_similarity(batch.world_to_camera.double(), batch.boxes.double(), batch.object_batch,
                                    rotation, scale, shift)
        corners = boxes_to_corners(moved)
        # A turn may push a corner out of the grid; a scale or a shift never does.
        _, turned_only = apply_similarity(batch.world_to_camera.double(), batch.boxes.double(), batch.object_batch,
                                          rotation, torch.ones(2, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64))
        fits = ((boxes_to_corners(turned_only)[:, 0] >= low) & (boxes_to_corners(turned_only)[:, 1] <= high)).all()
        if bool(fits):
            assert bool(((corners[:, 0] >= low - 1e-9) & (corners[:, 1] <= high + 1e-9)).all())
        turned |= bool((rotation[:, 0, 0] < 0.99).any())
    assert turned
    # The classification stage only scales: no turn, no mirror, no shift.
    cameras, boxes = augment_scene(batch.world_to_camera, batch.boxes, batch.object_batch, grid, rendering_stage=False,
                                   generator=generator)
    rotation = cameras[..., :3, :3] @ batch.world_to_camera[..., :3, :3].transpose(-1, -2)
    assert torch.allclose(rotation, torch.eye(3).expand_as(rotation), atol=1e-5)
    ratio = boxes[:, 1] / batch.boxes[:, 1]
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5) and bool((ratio >= 1 - 1e-6).all())


def test_training_step_moves_the_cameras_not_the_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    batch = _batch()
    calls = {}
    for augment in (True, False):
        model = OddOneOut(**SMALL, distillation=False, scene_augmentation=augment, render_epochs=5)
        monkeypatch.setattr(model, "log", lambda *a, **k: None)
        original = model.model.forward

        def spy(*args, _store=augment, _original=original, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            calls[_store] = args
            return _original(*args, **kwargs)

        monkeypatch.setattr(model.model, "forward", spy)
        model.training_step(batch)
    source = batch.source_views[0]
    assert torch.equal(calls[False][2], batch.world_to_camera[:, source])
    assert not torch.allclose(calls[True][2], batch.world_to_camera[:, source])
    assert torch.equal(calls[True][0], calls[False][0])  # the same images


# ----------------------------------------------------------------------------------------------
# metrics


def test_evaluator_reports_object_auroc_per_scene_and_no_pixel_auroc() -> None:
    from anomalib_3d.metrics.objects import scene_object_auroc

    names = [m.name for m in OddOneOut.configure_evaluator().test_metrics]
    assert "object_SceneAUROC" in names and "object_AUROC" in names
    assert not any(name.startswith("pixel_") for name in names)
    # Per scene: scene 0 ranks its odd object above one of two normals, scene 1 above both; scene 2
    # holds no odd object and is left out of the mean.
    scores = torch.tensor([0.5, 0.6, 0.4, 0.9, 0.1, 0.2, 0.3, 0.4])
    labels = torch.tensor([True, False, False, True, False, False, False, False])
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    per_scene = scene_object_auroc(scores, labels, batch)
    assert per_scene[:2].tolist() == [0.5, 1.0] and math.isnan(float(per_scene[2]))
    # Pooled over objects the same scores rank differently (0.5 of scene 0 is below 0.6 of itself, above
    # everything of scene 1 but 0.9): the two numbers answer different questions.
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(labels.numpy(), scores.numpy()) == pytest.approx(11 / 12)


# ----------------------------------------------------------------------------------------------
# proposal_count


@pytest.mark.parametrize(("count", "expected"), [("estimate", [3, 3]), ("ground_truth", [3, 2])])
def test_proposal_count_ground_truth_passes_the_object_count_to_spectral_clustering(
        count: str, expected: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    model = OddOneOut(**{**SMALL, "grid_shape": (24, 24, 8), "voxel_size": 0.05}, distillation=False,
                      boxes="proposals", proposal_method="spectral", proposal_count=count).eval()
    batch = _batch()  # scene 0 holds 3 objects, scene 1 holds 2
    density = torch.zeros(2, 1, *model.grid.volume_shape)
    for x in (2, 10, 18):  # three well separated blobs in both scenes
        density[:, 0, 1:4, 8:12, x : x + 3] = 50.0
    features = torch.zeros(2, 8, *model.grid.volume_shape)
    monkeypatch.setattr(model.model, "build_volume", lambda *args: (features, density, None, torch.zeros_like(features)))
    with torch.no_grad():
        out = model._predict(batch)  # noqa: SLF001
    assert torch.bincount(out.pred_object_batch, minlength=2).tolist() == expected
