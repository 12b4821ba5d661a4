"""Odd-One-Out object proposals from a density volume: boxes against the volume's known objects,
DBSCAN against scikit-learn run directly, empty scenes, logging, switches."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from anomalib_3d_plugins.odd_one_out.proposals import (
    cluster_density,
    density_proposals,
    label_volume_boxes,
    occupancy,
    spectral_labels,
)
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score

from anomalib_3d.metrics.objects import box_iou_3d
from anomalib_3d.render.volume import VoxelGrid

GRID = VoxelGrid((48, 48, 12), 0.04, (0.0, 0.0, 0.2))
# Objects as voxel index ranges [start, stop) along (x, y, z); well apart, in a triangle.
OBJECTS = [((5, 12), (5, 12), (1, 6)), ((30, 40), (8, 14), (1, 8)), ((10, 17), (30, 42), (1, 5))]
NOISE = [(45, 45, 10), (25, 25, 2), (40, 2, 9), (2, 44, 3)]  # isolated specks (x, y, z)
SOLID = 50.0  # 1/m: opacity of one 4 cm voxel 1 - exp(-2) = 0.86


def _known_boxes(objects=OBJECTS, grid: VoxelGrid = GRID) -> torch.Tensor:
    """World boxes of voxel index ranges, computed from the grid's definition (min corner + index * size)."""
    low = np.array(grid.min_corner)
    boxes = []
    for (x0, x1), (y0, y1), (z0, z1) in objects:
        lo = low + grid.voxel_size * np.array([x0, y0, z0])
        hi = low + grid.voxel_size * np.array([x1, y1, z1])
        boxes.append([(lo + hi) / 2, hi - lo])
    return torch.tensor(np.array(boxes), dtype=torch.float32)


def _volume(seed: int = 0, noise: bool = True, objects=OBJECTS) -> torch.Tensor:
    """(1, 1, Z, Y, X): solid objects, faint background below the threshold, isolated dense specks."""
    generator = torch.Generator().manual_seed(seed)
    z, y, x = GRID.volume_shape
    # background opacity at most 1 - exp(-3 * 0.04) = 0.11 < 0.2
    density = torch.rand(1, 1, z, y, x, generator=generator) * 3.0
    for (x0, x1), (y0, y1), (z0, z1) in objects:
        density[0, 0, z0:z1, y0:y1, x0:x1] = SOLID + torch.rand(z1 - z0, y1 - y0, x1 - x0, generator=generator)
    if noise:
        for px, py, pz in NOISE:
            density[0, 0, pz, py, px] = SOLID
    return density


def _assert_recovers(boxes: torch.Tensor, expected: torch.Tensor) -> None:
    assert boxes.shape == expected.shape
    iou = box_iou_3d(boxes, expected)
    best = iou.max(dim=0).values
    assert bool((best > 0.9).all()), iou
    # one box per object, not one box on two objects
    assert sorted(iou.argmax(dim=1).tolist()) == list(range(expected.shape[0]))


@pytest.mark.parametrize("method", ["dbscan", "spectral"])
def test_proposals_recover_three_boxes_with_noise(method: str) -> None:
    boxes, batch = density_proposals(_volume(), GRID, threshold=0.2, method=method)
    _assert_recovers(boxes, _known_boxes())
    assert batch.tolist() == [0, 0, 0]
    # the box spans the voxels exactly: extent of the voxel centres + one voxel
    assert torch.allclose(box_iou_3d(boxes, _known_boxes()).max(dim=0).values, torch.ones(3), atol=1e-5)


def test_spectral_with_given_cluster_count_per_scene() -> None:
    density = torch.cat([_volume(0), _volume(1, objects=OBJECTS[:2])])
    boxes, batch = density_proposals(density, GRID, method="spectral", num_clusters=torch.tensor([3, 2]))
    assert batch.tolist() == [0, 0, 0, 1, 1]
    _assert_recovers(boxes[:3], _known_boxes())
    _assert_recovers(boxes[3:], _known_boxes(OBJECTS[:2]))


def test_dbscan_labels_equal_sklearn_on_the_same_points() -> None:
    density = _volume(3)
    # a blob touching nothing, a few loose voxels near an object: DBSCAN border / noise cases
    density[0, 0, 2, 20:22, 20:22] = SOLID
    density[0, 0, 2, 12, 13] = SOLID
    labels = cluster_density(density, GRID, threshold=0.2, method="dbscan", min_voxels=1)[0]
    # reference: threshold and voxel centres written out independently, sklearn called directly
    opacity = 1.0 - np.exp(-density[0, 0].double().numpy() * GRID.voxel_size)
    index = np.argwhere(opacity > 0.2)  # (z, y, x)
    points = np.array(GRID.min_corner) + (index[:, ::-1] + 0.5) * GRID.voxel_size
    reference = DBSCAN(eps=1.5 * GRID.voxel_size, min_samples=5).fit_predict(points)
    ours = labels[tuple(torch.from_numpy(index.T.copy()))].numpy()
    assert (labels >= 0).sum() == (reference >= 0).sum()
    assert np.array_equal(ours < 0, reference < 0)
    assert adjusted_rand_score(reference[reference >= 0], ours[ours >= 0]) == pytest.approx(1.0)
    assert len(set(ours[ours >= 0].tolist())) == len(set(reference[reference >= 0].tolist()))


def test_empty_volume_gives_no_boxes_and_warns() -> None:
    density = torch.zeros(2, 1, *GRID.volume_shape)
    density[1] = _volume()[0]
    with pytest.warns(UserWarning, match="scene 0 has no voxel above"):
        boxes, batch = density_proposals(density, GRID)
    assert boxes.shape == (3, 2, 3)
    assert batch.tolist() == [1, 1, 1]
    with pytest.warns(UserWarning, match="no voxel above"):
        boxes, batch = density_proposals(torch.zeros(1, 1, *GRID.volume_shape), GRID, method="spectral")
    assert boxes.shape == (0, 2, 3)
    assert batch.shape == (0,)
    assert batch.dtype == torch.long


def test_small_clusters_are_dropped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    density = _volume(noise=False)
    density[0, 0, 8:10, 25:27, 25:27] = SOLID  # 8 voxels: a cluster of its own
    with caplog.at_level(logging.INFO, logger="anomalib_3d_plugins.odd_one_out.proposals"):
        boxes, _ = density_proposals(density, GRID, min_voxels=9)
    _assert_recovers(boxes, _known_boxes())
    assert "1 clusters smaller than min_voxels=9 (sizes [8])" in caplog.text
    boxes, _ = density_proposals(density, GRID, min_voxels=8)
    assert boxes.shape[0] == 4


def test_all_noise_scene_warns() -> None:
    density = torch.zeros(1, 1, *GRID.volume_shape)
    density[0, 0, 3, 3, 3] = SOLID
    for method in ("dbscan", "spectral"):
        with pytest.warns(UserWarning, match="gets no object box"):
            boxes, _ = density_proposals(density, GRID, method=method)
        assert boxes.shape == (0, 2, 3)


def test_threshold_on_opacity_or_density() -> None:
    density = torch.zeros(1, 1, *GRID.volume_shape)
    density[0, 0, 1:4, 1:4, 1:4] = 4.0  # opacity 1 - exp(-0.16) = 0.148
    assert math.isclose(1 - math.exp(-4.0 * 0.04), 0.1479, abs_tol=1e-4)
    assert not occupancy(density, GRID, 0.2, "opacity").any()
    assert occupancy(density, GRID, 0.14, "opacity").sum() == 27
    assert occupancy(density, GRID, 0.2, "density").sum() == 27


def test_floor_height_separates_objects_standing_on_a_floor() -> None:
    density = _volume(noise=False, objects=[((a, b), (c, d), (1, z1)) for (a, b), (c, d), (_, z1) in OBJECTS])
    density[0, 0, 0] = SOLID  # a reconstructed floor slab joins everything
    boxes, _ = density_proposals(density, GRID)
    assert boxes.shape[0] == 1
    floor_top = GRID.min_corner[2] + GRID.voxel_size  # voxel layer 0 ends here
    boxes, _ = density_proposals(density, GRID, floor_height=floor_top - 1e-6)
    _assert_recovers(boxes, _known_boxes())


def test_deterministic_and_dtype_device_follow_the_input() -> None:
    density = _volume(5).double()
    first = density_proposals(density, GRID, method="spectral")
    second = density_proposals(density, GRID, method="spectral")
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1], second[1])
    assert first[0].dtype == torch.float64
    assert first[0].device == density.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_input_gives_cuda_boxes() -> None:
    boxes, batch = density_proposals(_volume().cuda(), GRID)
    assert boxes.is_cuda
    assert batch.is_cuda
    _assert_recovers(boxes.cpu(), _known_boxes())


def test_spectral_labels_find_the_number_of_blobs() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [30.0, 0.0], [0.0, 30.0], [30.0, 30.0]])
    points = np.concatenate([c + rng.uniform(-3, 3, size=(40, 2)) for c in centres])
    truth = np.repeat(np.arange(4), 40)
    labels = spectral_labels(points)
    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)
    # subsampled path: same partition
    assert adjusted_rand_score(truth, spectral_labels(points, max_points=50)) == pytest.approx(1.0)


def test_label_volume_boxes_hand_computed() -> None:
    grid = VoxelGrid((4, 4, 2), 1.0)  # min corner (-2, -2, -1)
    labels = torch.full((1, 2, 4, 4), -1, dtype=torch.long)
    labels[0, 0, 0, 0] = 0  # voxel x=0, y=0, z=0: centre (-1.5, -1.5, -0.5)
    labels[0, 1, 2:4, 1] = 1  # x=1, y=2..3, z=1
    boxes, batch = label_volume_boxes(labels, grid)
    expected = torch.tensor([[[-1.5, -1.5, -0.5], [1.0, 1.0, 1.0]], [[-0.5, 1.0, 0.5], [1.0, 2.0, 1.0]]])
    assert torch.allclose(boxes, expected)
    assert batch.tolist() == [0, 0]


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="num_clusters applies to method='spectral'"):
        density_proposals(_volume(), GRID, method="dbscan", num_clusters=3)
    with pytest.raises(ValueError, match="method must be"):
        density_proposals(_volume(), GRID, method="kmeans")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="density must be"):
        density_proposals(torch.zeros(1, 1, 4, 4, 4), GRID)
    with pytest.raises(ValueError, match="num_clusters has 1 entries for 2 scenes"):
        density_proposals(torch.cat([_volume(), _volume()]), GRID, method="spectral", num_clusters=[3])
