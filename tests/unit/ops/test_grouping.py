"""Point-MAE style patch grouping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from anomalib_3d.ops import Patches, available_backends, farthest_point_sample, group_patches


def _clouds(sizes: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    points = torch.rand(sum(sizes), 3, generator=torch.Generator().manual_seed(seed))
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return points, batch


def test_group_patches_fps_matches_references() -> None:
    points, batch = _clouds([600, 900], 0)
    patches = group_patches(points, 32, 16, batch)
    assert isinstance(patches, Patches)
    assert patches.centers.shape == (2, 32, 3)
    assert patches.neighborhoods.shape == (2, 32, 16, 3)
    assert patches.center_index.shape == (2, 32)
    assert patches.group_index.shape == (2, 32, 16)
    torch.testing.assert_close(patches.center_index.flatten(), farthest_point_sample(points, 32, batch))
    torch.testing.assert_close(patches.centers, points[patches.center_index])
    torch.testing.assert_close(
        patches.neighborhoods, points[patches.group_index] - patches.centers.unsqueeze(2)
    )
    # The centre is its own nearest neighbour, and patches stay in their cloud.
    torch.testing.assert_close(patches.group_index[..., 0], patches.center_index)
    assert bool((patches.group_index[0] < 600).all())
    assert bool((patches.group_index[1] >= 600).all())
    cloud = points[600:].double().numpy()
    _, ref = cKDTree(cloud).query(points[patches.center_index[1]].double().numpy(), k=16)
    np.testing.assert_array_equal(patches.group_index[1].numpy(), ref + 600)


@pytest.mark.parametrize("sampler", ["gps", "random", "voxel"])
def test_group_patches_other_samplers_and_dense_input(sampler: str) -> None:
    points = torch.rand(2, 800, 3, generator=torch.Generator().manual_seed(1))
    patches = group_patches(points, 24, 10, sampler=sampler, generator=torch.Generator().manual_seed(0))
    assert patches.neighborhoods.shape == (2, 24, 10, 3)
    flat = points.reshape(-1, 3)
    torch.testing.assert_close(patches.centers, flat[patches.center_index])
    assert bool((patches.center_index[1] >= 800).all())
    assert patches.center_index[0].unique().numel() == 24
    assert patches.num_groups == 24
    assert patches.group_size == 10


def test_group_patches_random_start_is_reproducible() -> None:
    points, _ = _clouds([500], 2)
    first = group_patches(points, 8, 4, random_start=True, generator=torch.Generator().manual_seed(3))
    second = group_patches(points, 8, 4, random_start=True, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(first.center_index, second.center_index)


def test_group_patches_bad_input() -> None:
    points, batch = _clouds([100, 20], 3)
    with pytest.raises(ValueError, match="Cloud 1 has 20 points"):
        group_patches(points, 16, 32, batch)
    with pytest.raises(ValueError, match="Unknown sampler"):
        group_patches(points, 4, 4, batch, sampler="poisson")
    with pytest.raises(ValueError, match="batch must be None"):
        group_patches(points.view(2, 60, 3), 4, 4, batch)


def test_group_patches_single_op_backends_are_routed() -> None:
    points, batch = _clouds([400, 300], 4)
    reference = group_patches(points, 16, 8, batch, backend="torch")
    for backend in [b for b in ("scipy", "fpsample") if b in available_backends()]:
        other = group_patches(points, 16, 8, batch, backend=backend)
        torch.testing.assert_close(other.group_index, reference.group_index)
    with pytest.raises(ValueError, match="Unknown backend"):
        group_patches(points, 16, 8, batch, backend="faiss")
