"""Splat radii: the point-count rule by hand, spacings against scipy, the sampling rule by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from anomalib_3d.render import pointad_rig, rig_preset
from anomalib_3d.render.radius import (
    MAX_RADIUS_PX,
    MIN_RADIUS_PX,
    cloud_radii,
    grid_pitch,
    median_nn_spacing,
    pixels_per_unit,
    radius_for_point_count,
    radius_from_sampling,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _lattice(side: int, pitch: float) -> torch.Tensor:
    """``side x side`` points of a plane lattice, row-major (row = y)."""
    steps = torch.arange(side, dtype=torch.float32) * pitch
    yy, xx = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([xx, yy, torch.full_like(xx, 0.5)], dim=-1).reshape(-1, 3)


@pytest.mark.parametrize(("num_points", "expected"), [
    (10_000, 336 * math.sqrt(2 / (math.pi * 10_000))),  # 2.681: inside the clamp
    (1, 4.0),  # few points: the largest disc
    (10**7, 1.5),  # very dense: the smallest disc
    (0, 4.0),  # no point: treated as one
])
def test_point_count_rule_by_hand(num_points: int, expected: float) -> None:
    assert radius_for_point_count(num_points, (336, 336)) == pytest.approx(expected, rel=1e-12)


def test_median_spacing_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(1501, 3)).astype(np.float32)  # odd: one middle value
    distances, _ = cKDTree(points).query(points, k=2)
    assert median_nn_spacing(torch.from_numpy(points)) == pytest.approx(float(np.median(distances[:, 1])), rel=1e-5)


def test_median_spacing_of_a_large_cloud_uses_an_evenly_strided_subset() -> None:
    rng = np.random.default_rng(1)
    points = rng.uniform(size=(5002, 3)).astype(np.float32)
    distances, _ = cKDTree(points).query(points[::2], k=2)  # 5002 // 2048 = stride 2: 2501 queries
    assert median_nn_spacing(torch.from_numpy(points)) == pytest.approx(float(np.median(distances[:, 1])), rel=1e-5)


def test_median_spacing_ignores_duplicates_and_tiny_clouds() -> None:
    points = torch.tensor([[0.0, 0, 0], [0.0, 0, 0], [1.0, 0, 0], [1.0, 2.0, 0]])
    # nearest other point: 0, 0, 1 (to [0,0,0]), 2 (to [1,0,0]): positive distances 1 and 2
    assert median_nn_spacing(points) == pytest.approx(1.0)  # torch's median of an even count: the lower
    assert median_nn_spacing(points[:1]) == 0.0
    assert median_nn_spacing(torch.zeros(5, 3)) == 0.0


def test_grid_pitch_of_a_lattice_with_holes() -> None:
    points = _lattice(10, 0.02)
    keep = torch.ones(100, dtype=torch.bool)
    keep[[11, 12, 55, 99]] = False  # holes: neighbours across them are not grid neighbours
    assert grid_pitch(points[keep], torch.arange(100)[keep], (10, 10)) == pytest.approx(0.02, rel=1e-5)
    isolated = torch.tensor([0, 2, 20, 22])  # no two of them are adjacent pixels
    assert grid_pitch(points[isolated], isolated, (10, 10)) == 0.0


@pytest.mark.parametrize("projection", ["orthographic", "pinhole"])
def test_sampling_rule_by_hand(projection: str) -> None:
    """Organized: sqrt(2/pi) x pitch; unorganized: sqrt(2/ln 2) x median NN distance, both in render
    pixels of the cloud fitted into the unit sphere (half-diagonal of the 50 x 50 lattice)."""
    rig = pointad_rig(1, image_size=336, projection=projection)
    plane = _lattice(50, 0.01)
    pitch = 0.01 / (math.hypot(0.49, 0.49) / 2)  # in unit-sphere units
    pixels = rig.ortho_scale_px if projection == "orthographic" else rig.focal_px / rig.camera_distance
    assert pixels_per_unit(rig) == pixels
    organized = radius_from_sampling(plane, rig, torch.arange(2500), (50, 50))
    assert organized == pytest.approx(min(MAX_RADIUS_PX, math.sqrt(2 / math.pi) * pitch * pixels), abs=1e-3)
    unorganized = radius_from_sampling(plane, rig)
    assert unorganized == pytest.approx(min(MAX_RADIUS_PX, math.sqrt(2 / math.log(2)) * pitch * pixels), abs=1e-3)


def test_sampling_rule_is_clamped_and_independent_of_position_and_scale() -> None:
    rig = rig_preset("pointad_real3d", image_size=64)
    plane = _lattice(20, 0.05)
    radius = radius_from_sampling(plane, rig)
    assert radius_from_sampling(plane * 7.0 + 3.0, rig) == radius  # fitted into the unit sphere first
    assert radius_from_sampling(_lattice(400, 0.001)[::7], rig) == MIN_RADIUS_PX  # very dense
    assert radius_from_sampling(_lattice(3, 1.0), rig) == MAX_RADIUS_PX  # very sparse


def test_cloud_radii_per_cloud_as_alone_and_empty_clouds() -> None:
    rig = rig_preset("pointad_real3d", image_size=64)
    sparse, dense = _lattice(8, 0.1), _lattice(30, 0.01)
    points = torch.cat([sparse, dense])
    batch = torch.cat([torch.zeros(64), torch.full((900,), 2)]).long()  # cloud 1 is empty
    radii = cloud_radii(points, batch, 3, rig)
    assert radii == [radius_from_sampling(sparse, rig), MIN_RADIUS_PX, radius_from_sampling(dense, rig)]
    index = torch.cat([torch.arange(64), torch.arange(900)])
    organized = cloud_radii(points, batch, 3, rig, grid_index=index, grid_shape=(30, 30))
    assert organized[2] == radius_from_sampling(dense, rig, torch.arange(900), (30, 30))
