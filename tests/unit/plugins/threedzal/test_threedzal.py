"""3DzAL parts against hand-computed references: perturbation step, contrastive loss, pseudo-anomaly
labels, patch cells, generator CNN, missing weights, and viewable pseudo-anomalies."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from anomalib_3d.data.errors import MissingWeightsError
from anomalib_3d_plugins.threedzal.loss import DisentanglementLoss, ThreeDzALLoss, patch_contrastive_loss
from anomalib_3d_plugins.threedzal.pointnet2 import PatchPointNet2
from anomalib_3d_plugins.threedzal.pseudo_anomaly import (
    GeneratorCNN,
    add_points,
    camera_visible,
    interest_region,
    remove_points,
    soft_interest_map,
)
from anomalib_3d_plugins.threedzal.settings import ThreeDzALSettings
from anomalib_3d_plugins.threedzal.torch_model import OrganizedCloud, ThreeDzALModel, fit_patch_size, perturb_patches


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    del one_thread


class LinearClassifier(nn.Module):
    """logits = flatten(x) @ A: its input gradient is known in closed form."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1) @ self.weight


@pytest.mark.parametrize("direction", ["paper", "odin"])
def test_perturbation_is_the_hand_computed_signed_gradient_step(direction: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4, 3))
    a = rng.normal(size=(12, 2))
    eps = 0.1
    # d/dx [-log softmax_yhat(x A)] = A (p - onehot(yhat)), with p = softmax(x A).
    flat = x.reshape(5, -1)
    logits = flat @ a
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(2)[logits.argmax(1)]
    grad = (p - onehot) @ a.T
    sign = 1.0 if direction == "paper" else -1.0
    expected = (flat + sign * eps * np.sign(grad)).reshape(5, 4, 3)
    got = perturb_patches(LinearClassifier(torch.tensor(a)), torch.tensor(x), eps, direction)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)
    # the paper's step lowers the predicted class's probability, ODIN's raises it
    before = p[np.arange(5), logits.argmax(1)]
    after_logits = got.reshape(5, -1).numpy() @ a
    after = np.exp(after_logits) / np.exp(after_logits).sum(1, keepdims=True)
    after = after[np.arange(5), logits.argmax(1)]
    assert (after < before).all() if direction == "paper" else (after > before).all()


def test_perturbation_works_inside_inference_mode() -> None:
    net = PatchPointNet2(out_dim=2, num_centroids=4, group_size=4, widths=(8, 8))
    with torch.inference_mode():
        x = torch.randn(3, 16, 3)
        y = perturb_patches(net, x, 0.1)
    assert y.shape == x.shape and not torch.equal(x, y)
    step = (y - x).abs()
    # sign(gradient) is 0 for points no max-pool picked, else a step of exactly epsilon
    assert torch.all(torch.isclose(step, torch.tensor(0.1)) | (step == 0)) and (step > 0).any()
    assert perturb_patches(net, x, 0.0) is not None and torch.equal(perturb_patches(net, x, 0.0), x)


def test_contrastive_loss_matches_a_hand_computed_case() -> None:
    pos = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    neg = torch.tensor([[-1.0, 0.5]])
    tau = 0.5
    unit = [[c / math.hypot(*v) for c in v] for v in pos.tolist()]
    nunit = [[c / math.hypot(*v) for c in v] for v in neg.tolist()]
    cos = lambda u, v: u[0] * v[0] + u[1] * v[1]  # noqa: E731
    total = 0.0
    for i in range(3):
        others = [j for j in range(3) if j != i]
        denominator = sum(math.exp(cos(unit[i], unit[j]) / tau) for j in others)
        denominator += sum(math.exp(cos(unit[i], n) / tau) for n in nunit)
        total += -sum(math.log(math.exp(cos(unit[i], unit[j]) / tau) / denominator) for j in others) / 2
    expected = total / 3
    assert patch_contrastive_loss(pos, neg, tau).item() == pytest.approx(expected, rel=1e-6)
    # negatives far from the positives lower the loss; identical to them raise it
    far = patch_contrastive_loss(pos, -pos, tau)
    near = patch_contrastive_loss(pos, pos.clone(), tau)
    assert far < near
    with pytest.raises(ValueError, match="at least 2"):
        patch_contrastive_loss(pos[:1], neg)


def test_disentanglement_loss_is_squared_cosine_to_projected_fpfh() -> None:
    loss = DisentanglementLoss(feature_dim=4, seed=3)
    fpfh = torch.rand(6, 33)
    projected = fpfh @ loss.projection
    assert loss(projected, fpfh).item() == pytest.approx(1.0, abs=1e-6)
    assert loss(-projected, fpfh).item() == pytest.approx(1.0, abs=1e-6)  # anti-copies are redundant too
    # a feature orthogonal to the projected FPFH scores 0
    e = torch.randn(6, 4)
    orthogonal = e - (e * projected).sum(1, keepdim=True) / projected.square().sum(1, keepdim=True) * projected
    assert loss(orthogonal, fpfh).item() == pytest.approx(0.0, abs=1e-10)
    assert DisentanglementLoss(4, mode="signed", seed=3)(-projected, fpfh).item() == pytest.approx(-1.0, abs=1e-6)


def test_loss_switches_drop_their_terms() -> None:
    pos, neg = torch.randn(4, 8), torch.randn(4, 8)
    logits, labels = torch.randn(8, 2), torch.tensor([0] * 4 + [1] * 4)
    full = ThreeDzALLoss(feature_dim=8)(pos, neg, torch.rand(4, 33), logits, labels)
    assert set(full) == {"loss", "contrastive", "disentanglement", "classification"}
    expected = full["contrastive"] + 100 * full["disentanglement"] + full["classification"]
    assert full["loss"].item() == pytest.approx(expected.item())
    only = ThreeDzALLoss(contrastive=False, disentanglement=False, feature_dim=8)(pos, neg, torch.rand(4, 33), logits, labels)
    assert set(only) == {"loss", "classification"}


def _plane(n_side: int = 12) -> torch.Tensor:
    g = torch.arange(n_side, dtype=torch.float32)
    x, y = torch.meshgrid(g, g, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1), torch.zeros(n_side * n_side)], dim=1) * 0.01


def test_adding_point_labels_are_exact() -> None:
    cloud = _plane() + torch.rand(144, 3, generator=torch.Generator().manual_seed(1)) * 1e-3  # no distance ties
    region = torch.randn(10, 3) * 5 + 100  # far away and in other units: re-centred and re-scaled
    made = add_points(cloud, region, anchor=50, patch_size=16)
    n = cloud.shape[0]
    assert made.kind == "adding" and made.points.shape == (n + 10, 3)
    assert torch.equal(made.points[:n], cloud)
    assert torch.equal(made.labels, torch.arange(n + 10) >= n)
    # placed at the anchor, RMS radius equal to the anchor's 16-NN patch
    placed = made.points[n:]
    assert torch.allclose(placed.mean(0), cloud[50], atol=1e-6)
    d = (cloud - cloud[50]).norm(dim=1)
    patch = cloud[d.argsort()[:16]]
    rms = lambda p: (p - p.mean(0)).square().sum(1).mean().sqrt()  # noqa: E731
    assert rms(placed).item() == pytest.approx(rms(patch).item(), rel=1e-5)
    # the kNN patch over the union is exactly the 16 nearest points of the anchor
    union_d = (made.points - cloud[50]).norm(dim=1)
    assert set(made.patch_index.tolist()) == set(union_d.argsort()[:16].tolist())
    # cell mode: the given points plus every added point
    cell = torch.tensor([1, 2, 3])
    made = add_points(cloud, region, anchor=2, patch_size=16, patch_index=cell)
    assert made.patch_index.tolist() == [1, 2, 3, *range(n, n + 10)]


def test_removing_point_labels_are_exact() -> None:
    cloud = _plane()
    g = torch.Generator().manual_seed(0)
    made = remove_points(cloud, anchor=70, patch_size=20, drop_fraction=0.4, generator=g)
    d = (cloud - cloud[70]).norm(dim=1)
    patch = set(d.argsort(stable=True)[:20].tolist())
    assert made.points.shape[0] == cloud.shape[0] - 8
    # the remaining points are the original ones, in order, minus 8 patch points
    kept = [i for i in range(cloud.shape[0]) if any(torch.equal(cloud[i], p) for p in made.points)]
    assert len(kept) == cloud.shape[0] - 8
    assert torch.equal(made.points, cloud[kept])
    removed = set(range(cloud.shape[0])) - set(kept)
    assert removed <= patch
    expected_labels = torch.tensor([i in patch for i in kept])
    assert torch.equal(made.labels, expected_labels)
    assert made.patch_index.numel() == 12 and made.labels[made.patch_index].all()
    with pytest.raises(ValueError, match="drop_fraction"):
        remove_points(cloud, 0, 4, 1.0)


def test_generator_is_seeded_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a, b = GeneratorCNN("small", seed=1), GeneratorCNN("small", seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    c = GeneratorCNN("small", seed=2)
    x = torch.randn(1, 3, 64, 64)
    assert all(torch.equal(u, v) for u, v in zip(a(x), b(x), strict=True))
    assert not torch.equal(a(x)[-1], c(x)[-1])
    assert not any(p.requires_grad for p in a.parameters())


def test_interest_map_and_region() -> None:
    xyz = torch.zeros(32, 32, 3)
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    xyz[..., 0], xyz[..., 1], xyz[..., 2] = cols * 0.01, rows * 0.01, 0.5
    valid = torch.zeros(32, 32, dtype=torch.bool)
    valid[4:28, 4:28] = True
    xyz[~valid] = 0
    soft = soft_interest_map(GeneratorCNN("small", seed=0), xyz, valid)
    assert soft.shape == (32, 32) and float(soft.min()) >= 0 and float(soft.max()) <= 1 + 1e-6
    region = interest_region(xyz, valid, soft, top_fraction=0.01, region_size=12)
    assert region.shape == (12, 3)
    # every region point is a valid surface point, and they are the seed centroid's nearest ones
    surface = xyz[valid]
    assert all(((surface - r).norm(dim=1) < 1e-7).any() for r in region)


def test_pretrained_generator_and_rgb_without_weights_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(MissingWeightsError, match="torchvision's cache"):
        GeneratorCNN("resnet18", pretrained=True)
    with pytest.raises(MissingWeightsError):
        ThreeDzALModel(ThreeDzALSettings(grid_size=16, rgb_backbone="wide_resnet50_2"))
    with pytest.raises(MissingWeightsError):
        ThreeDzALModel(ThreeDzALSettings(grid_size=16, rgb_backbone="wide_resnet50_2", rgb_weights=str(tmp_path / "nope.pth")))


def test_cell_patches_hold_exactly_each_cells_points() -> None:
    model = ThreeDzALModel(ThreeDzALSettings(grid_size=16, patch_size=4, learned_branch=False, classifier=False))
    rng = torch.Generator().manual_seed(0)
    xyz = torch.rand(16, 16, 3, generator=rng) + 0.1
    valid = torch.rand(16, 16, generator=rng) > 0.4
    valid[:4, :4] = False  # an empty cell
    xyz[~valid] = 0
    cloud = OrganizedCloud(xyz, valid, None, (16, 16), torch.arange(int(valid.sum())))
    patches = model.cell_patches(cloud)
    points = xyz[valid]
    assert 0 not in patches.cells.tolist()
    for p in range(patches.cells.numel()):
        r, c = divmod(int(patches.cells[p]), 4)
        cell_valid = valid[4 * r : 4 * r + 4, 4 * c : 4 * c + 4]
        cell_points = xyz[4 * r : 4 * r + 4, 4 * c : 4 * c + 4][cell_valid]
        assert int(patches.counts[p]) == cell_points.shape[0]
        assert {tuple(v) for v in patches.points[p].tolist()} == {tuple(v) for v in cell_points.tolist()}
        assert torch.equal(points[patches.point_index[p]], patches.points[p])
        assert torch.allclose(patches.centers[p], cell_points.mean(0))


def test_fit_patch_size_and_pointnet_shapes() -> None:
    pts = torch.randn(5, 3)
    assert torch.equal(fit_patch_size(pts, 12)[:5], pts) and fit_patch_size(pts, 12).shape == (12, 3)
    assert fit_patch_size(torch.randn(20, 3), 12).shape == (12, 3)
    net = PatchPointNet2(out_dim=7, num_centroids=4, group_size=4, widths=(8, 16))
    x = torch.randn(6, 16, 3, requires_grad=True)
    out = net(x)
    assert out.shape == (6, 7)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_pseudo_anomaly_before_after_is_viewable(tmp_path: Path) -> None:
    """Writes the before / after clouds (PLY, labels as colours) and a PNG of them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from anomalib_3d.data.io import read_point_cloud, write_ply

    cloud = _plane(20)
    cloud[:, 2] = 0.02 * torch.sin(cloud[:, 0] * 20)
    region = torch.randn(30, 3)
    made = add_points(cloud, region, anchor=210, patch_size=40)
    colours = np.where(made.labels.numpy()[:, None], [255, 0, 0], [160, 160, 160]).astype(np.uint8)
    write_ply(tmp_path / "before.ply", cloud.numpy())
    write_ply(tmp_path / "after.ply", made.points.numpy(), colors=colours)
    assert read_point_cloud(tmp_path / "before.ply").points.shape == (400, 3)
    after = read_point_cloud(tmp_path / "after.ply")
    assert after.points.shape == (430, 3)
    assert (np.asarray(after.colors)[:, 1] == 0).sum() == 30  # exactly the added points are red
    fig = plt.figure(figsize=(6, 3))
    for i, (pts, col, title) in enumerate(((cloud.numpy(), "grey", "before"), (made.points.numpy(), colours / 255, "after"))):
        ax = fig.add_subplot(1, 2, i + 1, projection="3d")
        ax.scatter(*pts.T, c=col, s=2)
        ax.set_title(title)
    fig.savefig(tmp_path / "pseudo_anomaly.png")
    plt.close(fig)
    from PIL import Image

    assert Image.open(tmp_path / "pseudo_anomaly.png").size[0] > 100


def _pixel_cell(size: int = 8, pitch: float = 0.01, depth: float = 1.0) -> torch.Tensor:
    """A flat organized cell: one point per pixel ray on a ``size`` x ``size`` lattice at ``depth``."""
    u = (torch.arange(size, dtype=torch.float32) - (size - 1) / 2) * pitch
    uu, vv = torch.meshgrid(u, u, indexing="ij")
    return torch.stack([uu.reshape(-1) * depth, vv.reshape(-1) * depth, torch.full((size * size,), depth)], dim=1)


def test_camera_visible_is_a_z_buffer_on_the_cells_pixel_lattice() -> None:
    """Brute force: for every point, find its nearest lattice pixel; per pixel keep the nearest
    point along z; points beyond the footprint are never visible."""
    cell = _pixel_cell()
    rng = torch.Generator().manual_seed(0)
    added = torch.cat([torch.rand(40, 2, generator=rng) * 0.1 - 0.05, 0.8 + 0.4 * torch.rand(40, 1, generator=rng)], dim=1)
    added[:, :2] *= added[:, 2:3]  # camera-frame points whose rays spread over (and beyond) the cell
    points = torch.cat([cell, added])
    visible = camera_visible(points, cell)
    lattice = cell[:, :2] / cell[:, 2:3]
    rays = points[:, :2] / points[:, 2:3]
    half = 0.01 / 2
    inside = ((rays >= lattice.amin(0) - half) & (rays <= lattice.amax(0) + half)).all(dim=1)
    pixel = torch.cdist(rays, lattice).argmin(dim=1)
    expected = torch.zeros_like(visible)
    for p in pixel[inside].unique().tolist():
        members = (inside & (pixel == p)).nonzero().squeeze(1)
        expected[members[points[members, 2].argmin()]] = True
    assert torch.equal(visible, expected)
    assert camera_visible(cell, cell).all()  # an unmodified cell is entirely visible
    behind = cell.clone()
    behind[:, :2] *= 1.5 / behind[:, 2:3]
    behind[:, 2] = 1.5
    assert not camera_visible(torch.cat([cell, behind]), cell)[64:].any()  # the same rays, farther: hidden


def test_pseudo_anomalous_patches_are_centred_like_real_cells() -> None:
    """Removal patches are padded by cycling; they must be centred on their distinct points' mean
    (as normal / test cells are), not on the padded patch's mean."""
    model = ThreeDzALModel(ThreeDzALSettings(grid_size=16, patch_size=8, learned_branch=False, classifier=True, adding_ratio=0.0,
                           rotation_augment=False))
    xyz = torch.zeros(16, 16, 3)
    xyz[..., :2] = torch.stack(torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij"), -1) * 0.01
    xyz[..., 2] = 1.0 + 0.05 * torch.sin(xyz[..., 0] * 40)
    valid = torch.ones(16, 16, dtype=torch.bool)
    cloud = OrganizedCloud(xyz, valid, None, (16, 16), torch.arange(256))
    patches = model.cell_patches(cloud)
    model.patch_scale.fill_(1.0)
    made, counts = model.pseudo_anomalous_patches(cloud, patches, 6)
    assert counts.shape == (6,) and (counts < 64).all()
    for patch in made:
        distinct = torch.unique(patch, dim=0)
        assert distinct.shape[0] < 64  # padded
        assert torch.allclose(distinct.mean(0), torch.zeros(3), atol=1e-6)
