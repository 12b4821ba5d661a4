"""Volume rendering and back-projection against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from anomalib_3d.render.volume import (
    VoxelGrid,
    backproject_features,
    camera_rays,
    project_points,
    render_volume,
)

# A camera at the world origin looking along +z (OpenCV: x right, y down), one pixel whose centre
# (0.5, 0.5) lies on the optical axis.
IDENTITY_POSE = torch.eye(4).view(1, 1, 4, 4)


def _k(f: float, cx: float, cy: float) -> torch.Tensor:
    return torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]]).view(1, 1, 3, 3)


# Grid of 4 x 4 x 4 voxels of 10 cm centred at z = 1: it spans z in [0.8, 1.2].
GRID = VoxelGrid(shape=(4, 4, 4), voxel_size=0.1, center=(0.0, 0.0, 1.0))


def test_voxel_grid_geometry() -> None:
    grid = VoxelGrid()
    assert grid.volume_shape == (16, 96, 96)
    assert grid.min_corner == pytest.approx((-1.92, -1.92, -0.32))
    centers = GRID.voxel_centers()
    assert centers.shape == (4, 4, 4, 3)
    # voxel (i, j, k) = (0, 1, 2) sits at index [k, j, i]
    assert torch.allclose(centers[2, 1, 0], torch.tensor([-0.15, -0.05, 1.05]))
    # grid_sample coordinates of a voxel centre: -1 + (2 i + 1) / n
    assert torch.allclose(GRID.to_normalized(centers[2, 1, 0]), torch.tensor([-0.75, -0.25, 0.25]))


def test_camera_rays_reproject_to_pixel_centres() -> None:
    generator = torch.Generator().manual_seed(0)
    angle = 0.3
    rotation = torch.tensor(
        [[math.cos(angle), 0.0, math.sin(angle)], [0.0, 1.0, 0.0], [-math.sin(angle), 0.0, math.cos(angle)]]
    )
    pose = torch.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = torch.tensor([0.1, -0.2, 0.5])
    k = _k(50.0, 20.0, 15.0)
    origins, directions, z_per_metre = camera_rays(k, pose.view(1, 1, 4, 4), (30, 40))
    assert directions.shape == (1, 1, 30, 40, 3)
    assert torch.allclose(directions.norm(dim=-1), torch.ones(1, 1, 30, 40), atol=1e-6)
    distance = 1.0 + torch.rand(1, 1, 30, 40, generator=generator)
    points = origins.view(1, 1, 1, 1, 3) + directions * distance.unsqueeze(-1)
    xy, z = project_points(points.view(1, -1, 3), k, pose.view(1, 1, 4, 4))
    rows, cols = torch.meshgrid(torch.arange(30) + 0.5, torch.arange(40) + 0.5, indexing="ij")
    assert torch.allclose(xy.view(30, 40, 2), torch.stack([cols, rows], dim=-1), atol=1e-3)
    assert torch.allclose(z.view(1, 1, 30, 40), distance * z_per_metre, atol=1e-5)


@pytest.mark.parametrize("interpolation", ["trilinear", "nearest"])
def test_uniform_slab_transmittance_is_exp_minus_sigma_d(interpolation: str) -> None:
    sigma = 5.0
    density = torch.zeros(1, 1, 4, 4, 4, dtype=torch.float64)
    density[:, :, 1:3] = sigma  # z-voxels 1 and 2: the slab z in [0.9, 1.1], d = 0.2
    features = torch.ones(1, 3, 4, 4, 4, dtype=torch.float64)
    out = render_volume(
        density, features, _k(10.0, 0.5, 0.5).double(), IDENTITY_POSE.double(), (1, 1), GRID,
        num_samples=40, interpolation=interpolation,
    )
    transmittance = 1.0 - out.opacity.item()
    assert transmittance == pytest.approx(math.exp(-sigma * 0.2), rel=1e-9)
    # Uniform features: the rendered feature is exactly the opacity.
    assert torch.allclose(out.features[0, 0, :, 0, 0], out.opacity[0, 0, 0, 0].expand(3))


def test_single_opaque_voxel() -> None:
    # Voxel (i, j, k) = (1, 1, 1): centre (-0.05, -0.05, 0.95), front face at z = 0.9.
    density = torch.zeros(1, 1, 4, 4, 4)
    density[0, 0, 1, 1, 1] = 1e3
    features = torch.zeros(1, 3, 4, 4, 4)
    features[0, :, 1, 1, 1] = torch.tensor([0.2, 0.4, 0.6])
    f = 100.0
    through = _k(f, 0.5 + f * 0.05 / 0.95, 0.5 + f * 0.05 / 0.95)  # the pixel's ray hits the voxel centre
    beside = _k(f, 0.5 - f * 0.05 / 0.95, 0.5 + f * 0.05 / 0.95)  # ray through the voxel's neighbour in x
    out = render_volume(
        density.expand(1, -1, -1, -1, -1),
        features,
        torch.cat([through, beside], dim=1),
        IDENTITY_POSE.expand(1, 2, 4, 4),
        (1, 1),
        GRID,
        num_samples=400,
        interpolation="nearest",
        background=1.0,
    )
    assert out.opacity[0, 0, 0, 0].item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(out.features[0, 0, :, 0, 0], torch.tensor([0.2, 0.4, 0.6]), atol=1e-5)
    assert out.depth[0, 0, 0, 0].item() == pytest.approx(0.9, abs=3e-3)
    assert out.opacity[0, 1, 0, 0].item() == 0.0
    assert torch.allclose(out.features[0, 1, :, 0, 0], torch.ones(3))  # background only


def test_trilinear_opaque_voxel_renders_its_colour() -> None:
    density = torch.zeros(1, 1, 4, 4, 4)
    density[0, 0, 1, 1, 1] = 1e4
    features = torch.tensor([0.9, 0.1, 0.3]).view(1, 3, 1, 1, 1).expand(1, 3, 4, 4, 4)
    f = 100.0
    k = _k(f, 0.5 + f * 0.05 / 0.95, 0.5 + f * 0.05 / 0.95)
    out = render_volume(density, features, k, IDENTITY_POSE, (1, 1), GRID, num_samples=200)
    assert out.opacity.item() == pytest.approx(1.0, abs=1e-4)
    assert torch.allclose(out.features.view(3), torch.tensor([0.9, 0.1, 0.3]), atol=1e-4)


def test_ray_missing_the_grid_renders_nothing() -> None:
    density = torch.full((1, 1, 4, 4, 4), 100.0)
    features = torch.ones(1, 2, 4, 4, 4)
    pose = torch.eye(4)
    pose[0, 3] = 5.0  # camera moved to x = -5: its axis passes beside the box
    out = render_volume(density, features, _k(10.0, 0.5, 0.5), pose.view(1, 1, 4, 4), (1, 1), GRID, num_samples=8)
    assert out.opacity.item() == 0.0
    assert out.features.abs().max().item() == 0.0


def test_backprojection_of_a_known_projected_point() -> None:
    grid = VoxelGrid(shape=(4, 4, 4), voxel_size=0.1, center=(0.0, 0.0, 1.0))
    height, width = 64, 64
    k = _k(100.0, 32.0, 32.0)
    # Feature of every pixel = its flat index, so the voxel's value names the pixel it read.
    features = torch.arange(height * width, dtype=torch.float64).view(1, 1, 1, height, width)
    volume, count = backproject_features(features, k, IDENTITY_POSE, (height, width), grid)
    centre = grid.voxel_centers(dtype=torch.float64)[2, 1, 0]  # (-0.15, -0.05, 1.05)
    col = math.floor(100.0 * centre[0].item() / centre[2].item() + 32.0)
    row = math.floor(100.0 * centre[1].item() / centre[2].item() + 32.0)
    assert (col, row) == (17, 27)
    assert volume[0, 0, 2, 1, 0].item() == row * width + col
    assert count[0, 0, 2, 1, 0].item() == 1.0

    # A stride-4 feature map: the same point reads pixel (floor(col / 4), floor(row / 4)).
    coarse = torch.arange(16 * 16, dtype=torch.float64).view(1, 1, 1, 16, 16)
    volume, _ = backproject_features(coarse, k, IDENTITY_POSE, (height, width), grid)
    assert volume[0, 0, 2, 1, 0].item() == (row // 4) * 16 + col // 4


def test_backprojection_averages_views_and_zeroes_unseen_voxels() -> None:
    grid = VoxelGrid(shape=(2, 2, 2), voxel_size=0.1, center=(0.0, 0.0, 1.0))
    k = _k(10.0, 2.0, 2.0).expand(1, 3, 3, 3)
    behind = torch.eye(4)
    behind[2, 2] = -1.0  # z flipped: everything lies behind this camera
    behind[0, 0] = -1.0  # keep a proper rotation
    poses = torch.stack([torch.eye(4), torch.eye(4), behind]).view(1, 3, 4, 4)
    features = torch.stack([torch.full((2, 4, 4), 1.0), torch.full((2, 4, 4), 3.0), torch.full((2, 4, 4), 50.0)])
    volume, count = backproject_features(features.view(1, 3, 2, 4, 4), k, poses, (4, 4), grid)
    assert torch.all(count == 2.0)
    assert torch.allclose(volume, torch.full_like(volume, 2.0))
    # Views dropped by the mask: nothing sees the grid, every voxel is 0.
    volume, count = backproject_features(
        features.view(1, 3, 2, 4, 4), k, poses, (4, 4), grid, view_mask=torch.tensor([[False, False, True]])
    )
    assert count.sum().item() == 0.0
    assert volume.abs().max().item() == 0.0


def test_render_gradients_pass_gradcheck() -> None:
    grid = VoxelGrid(shape=(2, 2, 2), voxel_size=0.5, center=(0.0, 0.0, 2.0))
    generator = torch.Generator().manual_seed(0)
    density = (0.5 + torch.rand(1, 1, 2, 2, 2, generator=generator, dtype=torch.float64)).requires_grad_()
    features = torch.rand(1, 2, 2, 2, 2, generator=generator, dtype=torch.float64).requires_grad_()
    k = _k(2.0, 1.0, 1.0).double()

    def fn(d: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = render_volume(d, f, k, IDENTITY_POSE.double(), (2, 2), grid, num_samples=6)
        return out.features, out.opacity, out.depth

    assert torch.autograd.gradcheck(fn, (density, features), eps=1e-6, atol=1e-5)


def test_backprojection_gradients_pass_gradcheck() -> None:
    grid = VoxelGrid(shape=(2, 2, 2), voxel_size=0.1, center=(0.0, 0.0, 1.0))
    generator = torch.Generator().manual_seed(1)
    features = torch.rand(1, 2, 2, 3, 3, generator=generator, dtype=torch.float64).requires_grad_()
    k = _k(10.0, 1.5, 1.5).double().expand(1, 2, 3, 3)
    poses = IDENTITY_POSE.double().expand(1, 2, 4, 4)
    assert torch.autograd.gradcheck(lambda f: backproject_features(f, k, poses, (3, 3), grid)[0], (features,))


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="spatial shape"):
        render_volume(torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 1, 2, 2, 2), _k(1, 0.5, 0.5), IDENTITY_POSE, (1, 1), GRID)
    with pytest.raises(ValueError, match="world_to_camera"):
        backproject_features(torch.zeros(1, 1, 1, 2, 2), _k(1, 0.5, 0.5), torch.eye(3).view(1, 1, 3, 3), (2, 2), GRID)
    with pytest.raises(ValueError, match="shape"):
        VoxelGrid(shape=(4, 0, 4))


def test_sparse_feature_sampling_matches_dense_rendering() -> None:
    grid = VoxelGrid(shape=(8, 8, 8), voxel_size=0.05, center=(0.0, 0.0, 1.0))
    generator = torch.Generator().manual_seed(2)
    density = torch.zeros(2, 1, 8, 8, 8, dtype=torch.float64)
    density[:, :, 3:5, 2:6, 2:6] = 40.0  # a sparse block: most samples carry no weight
    features = torch.rand(2, 4, 8, 8, 8, generator=generator, dtype=torch.float64)
    k = _k(12.0, 3.0, 3.0).double().expand(2, 2, 3, 3)
    pose = torch.eye(4, dtype=torch.float64)
    pose[0, 3] = 0.02
    poses = torch.stack([torch.eye(4, dtype=torch.float64), pose]).expand(2, 2, 4, 4)
    dense = render_volume(density, features, k, poses, (6, 6), grid, num_samples=64)
    sparse = render_volume(density, features, k, poses, (6, 6), grid, num_samples=64, min_weight=1e-9)
    assert dense.opacity.max() > 0.5
    assert torch.allclose(dense.features, sparse.features, atol=1e-7)
    density.requires_grad_()
    features.requires_grad_()
    render_volume(density, features, k, poses, (6, 6), grid, num_samples=64, min_weight=1e-9).features.sum().backward()
    assert features.grad.abs().sum() > 0 and density.grad.abs().sum() > 0


def test_crop_boxes_samples_box_cell_centres() -> None:
    from anomalib_3d.render.volume import crop_boxes

    grid = VoxelGrid(shape=(12, 10, 8), voxel_size=0.05, center=(0.1, -0.2, 0.3))
    centres = grid.voxel_centers(dtype=torch.float64)  # (Z, Y, X, 3)
    # A volume linear in the world position: trilinear sampling reproduces it exactly inside.
    volume = centres.permute(3, 0, 1, 2).unsqueeze(0).repeat(2, 1, 1, 1, 1)
    volume[1] *= 2.0
    boxes = torch.tensor([[[0.1, -0.2, 0.3], [0.2, 0.1, 0.1]], [[0.15, -0.15, 0.32], [0.1, 0.2, 0.08]]],
                         dtype=torch.float64)
    crops = crop_boxes(volume, boxes, grid, box_batch=torch.tensor([0, 1]), size=(4, 2, 3))
    assert crops.shape == (2, 3, 3, 2, 4)
    # cell (k, j, i) = (0, 1, 3) of box 0: centre + size * ((3, 1, 0) + 0.5) / (4, 2, 3) - size / 2
    expected = torch.tensor([0.1 + 0.2 * (3.5 / 4 - 0.5), -0.2 + 0.1 * (1.5 / 2 - 0.5), 0.3 + 0.1 * (0.5 / 3 - 0.5)],
                            dtype=torch.float64)
    assert torch.allclose(crops[0, :, 0, 1, 3], expected, atol=1e-9)
    expected = torch.tensor([0.15 + 0.1 * (0.5 / 4 - 0.5), -0.15 + 0.2 * (0.5 / 2 - 0.5), 0.32 + 0.08 * (2.5 / 3 - 0.5)],
                            dtype=torch.float64)
    assert torch.allclose(crops[1, :, 2, 0, 0], 2.0 * expected, atol=1e-9)  # box 1 reads scene 1
    # The whole grid at its own resolution returns the volume itself.
    whole = torch.tensor([[grid.center, grid.extent]], dtype=torch.float64)
    assert torch.allclose(crop_boxes(volume[:1], whole, grid, size=grid.shape, mode="nearest"), volume[:1])
    assert crop_boxes(volume, boxes[:0], grid).shape == (0, 3, 8, 8, 8)


@pytest.mark.parametrize("min_weight", [0.0, 1e-9])
def test_stop_gradient_channels_keep_values_and_cut_only_the_density_gradient(min_weight: float) -> None:
    grid = VoxelGrid(shape=(4, 4, 4), voxel_size=0.25, center=(0.0, 0.0, 2.0))
    generator = torch.Generator().manual_seed(3)
    density = (0.5 + 3 * torch.rand(1, 1, 4, 4, 4, generator=generator, dtype=torch.float64)).requires_grad_()
    features = torch.rand(1, 3, 4, 4, 4, generator=generator, dtype=torch.float64).requires_grad_()
    k = _k(3.0, 1.5, 1.5).double()

    def render(stop: int):  # noqa: ANN202
        return render_volume(density, features, k, IDENTITY_POSE.double(), (3, 3), grid, num_samples=16,
                             min_weight=min_weight, stop_gradient_channels=stop)

    plain, split = render(0), render(2)
    assert torch.allclose(plain.features, split.features, atol=1e-12)
    # A loss on the detached channels reaches the features but not the density ...
    (gd,) = torch.autograd.grad(split.features[:, :, 1:].sum(), density, retain_graph=True)
    assert gd.abs().max() == 0
    (gf,) = torch.autograd.grad(split.features[:, :, 1:].sum(), features, retain_graph=True)
    assert gf[:, 1:].abs().sum() > 0
    # ... while the first channel's loss still shapes the density, exactly as without the split.
    (gd0,) = torch.autograd.grad(split.features[:, :, :1].sum(), density)
    (gd_plain,) = torch.autograd.grad(plain.features[:, :, :1].sum(), density)
    assert gd0.abs().sum() > 0 and torch.allclose(gd0, gd_plain)
    with pytest.raises(ValueError, match="stop_gradient_channels"):
        render(4)
