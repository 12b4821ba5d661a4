"""Odd-One-Out without downloaded weights: the self-supervised contrastive teacher, the privileged
canonical teacher, Eq. 5's correspondence accuracy against the ground truth, and the non-learned
neighbour-median baseline — on generated scenes whose geometry is known."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from anomalib_3d.data.errors import MissingWeightsError
from anomalib_3d.data.scenes import SceneBatch, load_scene
from anomalib_3d.data.synthetic.scenes import make_scene, render_scene, write_scene
from anomalib_3d_plugins.odd_one_out.backbones import build_teacher
from anomalib_3d_plugins.odd_one_out.baseline import NeighbourMedianBaseline, object_descriptors
from anomalib_3d_plugins.odd_one_out.diagnostics import correspondence_accuracy, crop_cell_centres
from anomalib_3d_plugins.odd_one_out.teachers import (
    CanonicalTeacher,
    ContrastiveTeacher,
    backproject_pixels,
    canonical_coordinates,
    view_correspondences,
)
from anomalib_3d_plugins.odd_one_out.torch_model import OddOneOutModel

VIEWS, SIZE = 4, 64


def _scene(tmp: Path, category: str, seed: int, num_odd: int, colour: float = 0.0) -> SceneBatch:
    scene = make_scene(category, seed, num_odd=num_odd, num_views=VIEWS, image_size=SIZE, points_per_object=2500,
                       min_objects=4, max_objects=4, colour_defect_probability=colour)
    folder = write_scene(scene, tmp / f"{category}_{seed}", render_scene(scene))
    return SceneBatch.collate([load_scene(folder, load_depth=True)])


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> list[SceneBatch]:
    tmp = tmp_path_factory.mktemp("teacher_scenes")
    return [_scene(tmp, "bracket", 3, 0), _scene(tmp, "cup", 4, 1, colour=1.0), _scene(tmp, "bottle", 5, 1, colour=1.0)]


# ----------------------------------------------------------------------------------------------
# geometry the teachers rely on


def test_view_correspondences_see_the_same_surface_point(scenes: list[SceneBatch]) -> None:
    batch = scenes[0]
    xy_a, xy_b, owner = view_correspondences(batch, 0, 0, 1, per_object=200, generator=torch.Generator().manual_seed(0))
    assert len(owner) > 50
    world = [backproject_pixels(batch.depth[0, v].double(), batch.intrinsics[0, v].double(),
                                batch.world_to_camera[0, v].double()) for v in (0, 1)]
    rows_a, cols_a = (xy_a[:, 1] - 0.5).long(), (xy_a[:, 0] - 0.5).long()
    rows_b, cols_b = xy_b[:, 1].floor().long(), xy_b[:, 0].floor().long()
    gap = (world[0][rows_a, cols_a] - world[1][rows_b, cols_b]).norm(dim=1)
    footprint = float(batch.depth[0, 0][rows_a, cols_a].mean()) / float(batch.intrinsics[0, 0, 0, 0])  # metres per pixel
    assert float(gap.median()) < footprint and float(gap.max()) < 4 * footprint  # the pixel grid of view b
    shuffled = (world[0][rows_a, cols_a] - world[1][rows_b, cols_b].roll(7, dims=0)).norm(dim=1)
    assert float(shuffled.median()) > 3 * footprint
    assert torch.equal(batch.object_index[0, 1][rows_b, cols_b], owner)


def test_canonical_coordinates_lie_in_the_box_and_agree_across_views(scenes: list[SceneBatch]) -> None:
    batch = scenes[0]
    coords, normals, valid = canonical_coordinates(batch, slice(None))
    sizes = batch.object_sizes[batch.object_index[valid]]
    # Outside the box by at most a splat radius (1.5 px, ~3 cm at this resolution), in metres.
    outside = ((coords[valid].abs() - 0.5).clamp(min=0) * sizes).amax(dim=1)
    assert float(outside.quantile(0.99)) < 0.035 and float(outside.median()) < 0.01
    lengths = normals[valid].norm(dim=1)
    known = (lengths - 1).abs() < 1e-4
    assert bool((known | (lengths == 0)).all()) and float(known.float().mean()) > 0.5  # edges are many at 64 px
    xy_a, xy_b, owner = view_correspondences(batch, 0, 0, 2, per_object=200, generator=torch.Generator().manual_seed(1))
    a = coords[0, 0][(xy_a[:, 1] - 0.5).long(), (xy_a[:, 0] - 0.5).long()]
    b = coords[0, 2][xy_b[:, 1].floor().long(), xy_b[:, 0].floor().long()]
    footprint = float(batch.depth[0, 0][batch.depth[0, 0] > 0].mean()) / float(batch.intrinsics[0, 0, 0, 0])
    assert float(((a - b) * batch.object_sizes[owner]).norm(dim=1).median()) < footprint  # metres
    # The same part of two normal instances: instances share the mesh, so their pixel clouds cover the
    # same canonical region (means agree within a few hundredths of the box).
    index = batch.object_index[0]
    means = [coords[0][valid[0] & (index == k)].mean(dim=0) for k in range(4)]
    assert max(float((m - means[0]).norm()) for m in means) < 0.12


def test_canonical_targets_are_a_kernel_of_the_canonical_distance(scenes: list[SceneBatch]) -> None:
    teacher = CanonicalTeacher(64, seed=0)
    targets = teacher.scene_targets(scenes[0], slice(None))
    _, _, valid = canonical_coordinates(scenes[0], slice(None))
    assert targets.shape == (1, VIEWS, 64, SIZE, SIZE)
    assert torch.equal(targets.abs().sum(dim=2) > 0, valid)
    flat = targets.permute(0, 1, 3, 4, 2)[valid]
    # Random Fourier features: |t|^2 = 2/C sum cos^2 ~ 1 on average.
    assert float((flat * flat).sum(dim=1).mean()) == pytest.approx(1.0, abs=0.15)
    assert not teacher.weight.requires_grad and build_teacher("canonical", 16).out_dim == 16


# ----------------------------------------------------------------------------------------------
# the contrastive teacher


def test_contrastive_teacher_learns_then_freezes_and_round_trips(scenes: list[SceneBatch], tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = build_teacher("contrastive", 8)
    assert isinstance(teacher, ContrastiveTeacher) and teacher.needs_fit
    history = teacher.fit(scenes, epochs=6, learning_rate=3e-3, per_object=48, seed=0)
    assert len(history) == 6 and history[-1] < history[0] - 0.2
    assert not teacher.needs_fit and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    images = scenes[0].image[0]
    out = teacher(images)
    assert out.shape == (VIEWS, 8, SIZE // 4, SIZE // 4) and not out.requires_grad
    path = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), path)
    loaded = build_teacher("contrastive", 8, weights=str(path))
    assert not loaded.needs_fit and torch.equal(loaded(images), out)
    with pytest.raises(MissingWeightsError, match="contrastive"):
        build_teacher("contrastive", 8, weights=str(tmp_path / "missing.pt"))
    no_depth = scenes[0]
    saved, no_depth.depth = no_depth.depth, None
    try:
        with pytest.raises(ValueError, match="depth"):
            ContrastiveTeacher(8).fit([no_depth], epochs=1)
    finally:
        no_depth.depth = saved


# ----------------------------------------------------------------------------------------------
# Eq. 5 against the ground truth


def _cell_beta(batch: SceneBatch, model: OddOneOutModel, teacher: CanonicalTeacher) -> torch.Tensor:
    """β of every crop cell = the canonical teacher's encoding of the cell centre (an oracle)."""
    centres = crop_cell_centres(batch.boxes, model.crop_size, model.crop_margin)
    poses, sizes = batch.object_poses, batch.object_sizes
    local = torch.einsum("kji,ktj->kti", poses[:, :3, :3], centres - poses[:, None, :3, 3]) / sizes[:, None]
    encoded = torch.cat([local, torch.zeros_like(local)], dim=-1) @ teacher.weight.T + teacher.phase
    return torch.cos(encoded)


@pytest.mark.parametrize("oracle", [True, False])
def test_correspondence_accuracy_against_ground_truth(scenes: list[SceneBatch], oracle: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    batch = scenes[0]  # a bracket: no rotational symmetry, all four instances normal
    model = OddOneOutModel(feature_dim=8, projection_dim=32, crop_size=6, num_blocks=1, heads=2, token_dim=16).eval()
    beta = _cell_beta(batch, model, CanonicalTeacher(32, frequency=8.0)) if oracle else torch.randn(4, 216, 32)
    monkeypatch.setattr(model, "crop_tokens", lambda *args, **kwargs: (None, beta))
    result = correspondence_accuracy(model, batch, topk=8)
    assert result["cells"] > 100
    top1, chance = result["top1"] / result["cells"], result["chance"] / result["cells"]
    assert 0.0 < chance < 0.2
    if oracle:
        assert top1 > 0.8 and result["hit_k"] >= result["top1"]
    else:
        assert top1 < chance + 0.1


# ----------------------------------------------------------------------------------------------
# the non-learned baseline


def test_baseline_finds_the_recoloured_instance(scenes: list[SceneBatch]) -> None:
    baseline = NeighbourMedianBaseline(seed=0).fit([scenes[0]])
    for batch in scenes[1:]:
        scores = baseline.score(batch)
        odd = int(torch.nonzero(batch.object_labels)[0])
        assert int(scores["colour"].argmax()) == odd and int(scores["combined"].argmax()) == odd
    colour, shape = object_descriptors(scenes[0])
    assert torch.allclose(colour.sum(dim=1), torch.ones(4)) and torch.allclose(shape.sum(dim=1), torch.full((4,), 3.0))
    # Identical instances (scene 0 has no odd one): the colour descriptors nearly agree.
    assert float(baseline.score(scenes[0])["colour"].max()) < 0.5 * float(baseline.score(scenes[1])["colour"].max())
    assert math.isfinite(baseline.scale_colour) and baseline.scale_shape > 0


def test_baseline_needs_depth(scenes: list[SceneBatch]) -> None:
    batch = scenes[0]
    saved, batch.depth = batch.depth, None
    try:
        with pytest.raises(ValueError, match="depth"):
            object_descriptors(batch)
    finally:
        batch.depth = saved
