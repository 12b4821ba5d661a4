"""FPS / random / voxel / geometry-aware sampling against brute-force references."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from anomalib_3d.ops import (
    available_backends,
    farthest_point_sample,
    geometry_aware_sample,
    geometry_change_rate,
    random_sample,
    voxel_sample,
)
from anomalib_3d.ops import sampling as sampling_module
from anomalib_3d.ops.backend import BACKEND_OPS

FPS_BACKENDS = [b for b in available_backends() if "fps" in BACKEND_OPS[b]]


def _cloud(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, generator=torch.Generator().manual_seed(seed))


def _assert_max_min_property(points: np.ndarray, picks: np.ndarray) -> None:
    """Every pick (after the first) is, up to float32 rounding, the farthest from those before it."""
    points = points.astype(np.float64)
    min_dist = np.full(points.shape[0], np.inf)
    for i, pick in enumerate(picks):
        if i > 0:
            candidates = min_dist.copy()
            candidates[picks[:i]] = -1
            assert min_dist[pick] >= candidates.max() * (1 - 1e-5), f"pick {i} is not the farthest point"
        min_dist = np.minimum(min_dist, ((points - points[pick]) ** 2).sum(1))


@pytest.mark.parametrize("backend", FPS_BACKENDS)
def test_fps_max_min_property_and_fixed_start(backend: str) -> None:
    points = _cloud(2000, 0)
    picks = farthest_point_sample(points, 64, backend=backend)
    assert picks.dtype == torch.long
    assert picks.shape == (64,)
    assert int(picks[0]) == 0
    assert picks.unique().numel() == 64
    _assert_max_min_property(points.numpy(), picks.numpy())


@pytest.mark.parametrize("backend", FPS_BACKENDS)
def test_fps_backends_agree_with_torch_batched(backend: str) -> None:
    sizes = [1500, 700, 3000]
    points = torch.cat([_cloud(n, 10 + i) for i, n in enumerate(sizes)])
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    ours = farthest_point_sample(points, 100, batch, backend=backend)
    reference = farthest_point_sample(points, 100, batch, backend="torch")
    torch.testing.assert_close(ours, reference)
    # Fixed start: each cloud begins at its first point.
    assert ours[::100].tolist() == [0, 1500, 2200]
    random_ours = farthest_point_sample(
        points, 50, batch, random_start=True, generator=torch.Generator().manual_seed(4), backend=backend
    )
    random_ref = farthest_point_sample(
        points, 50, batch, random_start=True, generator=torch.Generator().manual_seed(4), backend="torch"
    )
    torch.testing.assert_close(random_ours, random_ref)


def test_fps_ratio_and_large_cloud_bucket_path() -> None:
    points = _cloud(20000, 3)
    ratio_picks = farthest_point_sample(points, ratio=0.01, backend="torch")
    assert ratio_picks.numel() == 200
    if "fpsample" in available_backends():
        import fpsample

        ours = farthest_point_sample(points, 200, backend="fpsample")
        vanilla = fpsample.fps_sampling(points.numpy(), 200, start_idx=0)
        np.testing.assert_array_equal(ours.numpy(), vanilla)
        torch.testing.assert_close(ours, ratio_picks)


@pytest.mark.skipif("fpsample" not in available_backends(), reason="fpsample not installed")
def test_fpsample_start_replay_falls_back_when_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    points = _cloud(5000, 5)
    expected = farthest_point_sample(points, 30, backend="torch")
    monkeypatch.setattr(sampling_module, "_kdline_internal_position", lambda cloud, target, height: 17)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = farthest_point_sample(points, 30, backend="fpsample")
    torch.testing.assert_close(got, expected)
    assert any("vanilla" in str(w.message) for w in caught)


def test_fps_never_repeats_with_duplicates() -> None:
    points = torch.tensor([[0.0, 0, 0]] * 3 + [[1.0, 0, 0]])
    assert sorted(farthest_point_sample(points, 4, backend="torch").tolist()) == [0, 1, 2, 3]


def test_fps_bad_arguments() -> None:
    points = _cloud(10, 0)
    with pytest.raises(ValueError, match="num_samples=11"):
        farthest_point_sample(points, 11)
    with pytest.raises(ValueError, match="exactly one"):
        farthest_point_sample(points, 3, ratio=0.5)
    with pytest.raises(ValueError, match="exactly one"):
        farthest_point_sample(points)
    with pytest.raises(ValueError, match="ratio"):
        farthest_point_sample(points, ratio=1.5)
    with pytest.raises(ValueError, match="Cloud 1 has 2 points"):
        farthest_point_sample(points, 3, torch.tensor([0] * 8 + [1, 1]))


def test_random_sample_is_within_clouds_and_reproducible() -> None:
    points = _cloud(300, 1)
    batch = torch.tensor([0] * 100 + [1] * 200)
    first = random_sample(points, 40, batch, generator=torch.Generator().manual_seed(0))
    second = random_sample(points, 40, batch, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(first, second)
    assert first[:40].unique().numel() == 40
    assert bool((first[:40] < 100).all())
    assert bool((first[40:] >= 100).all())


def _voxel_reference(points: np.ndarray, size: float) -> list[int]:
    cells = np.floor((points - points.min(0)) / size).astype(np.int64)
    groups: dict[tuple, list[int]] = {}
    for i, cell in enumerate(map(tuple, cells)):
        groups.setdefault(cell, []).append(i)
    reps = []
    for members in groups.values():
        centroid = points[members].mean(0)
        dist = ((points[members] - centroid) ** 2).sum(1)
        reps.append(members[int(np.argmin(dist))])
    return sorted(reps)


def test_voxel_sample_matches_dict_reference() -> None:
    points = _cloud(3000, 2)
    got = voxel_sample(points, 0.2)
    assert got.tolist() == _voxel_reference(points.numpy(), 0.2)


def test_voxel_sample_num_samples_exact_per_cloud() -> None:
    points = torch.cat([_cloud(3000, 2), _cloud(2000, 3) * 5])
    batch = torch.tensor([0] * 3000 + [1] * 2000)
    got = voxel_sample(points, batch=batch, num_samples=128)
    assert got.numel() == 256
    assert got[:128].unique().numel() == 128
    assert bool((got[:128] < 3000).all())
    assert bool((got[128:] >= 3000).all())
    with pytest.raises(ValueError, match="exactly one"):
        voxel_sample(points, 0.1, num_samples=3)
    with pytest.raises(ValueError, match="distinct"):
        voxel_sample(torch.zeros(50, 3), num_samples=5)


def _plane_with_bump(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    xy = torch.rand(n, 2, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    radius_sq = (xy**2).sum(1)
    z = 0.25 * torch.exp(-radius_sq / (2 * 0.12**2))
    return torch.cat([xy, z.unsqueeze(1)], 1), radius_sq < 0.3**2


def test_gps_puts_more_samples_on_a_bump_than_fps() -> None:
    points, on_bump = _plane_with_bump(12000, 0)
    gps = geometry_aware_sample(points, 256)
    fps = farthest_point_sample(points, 256)
    assert gps.unique().numel() == 256
    gps_share = on_bump[gps].float().mean().item()
    fps_share = on_bump[fps].float().mean().item()
    assert gps_share > 1.3 * fps_share, (gps_share, fps_share)


def test_gps_threshold_zero_is_plain_fps_and_batches_work() -> None:
    points, _ = _plane_with_bump(3000, 1)
    torch.testing.assert_close(
        geometry_aware_sample(points, 64, threshold=0.0, backend="torch"),
        farthest_point_sample(points, 64, backend="torch"),
    )
    both = torch.cat([points, points[:2000]])
    batch = torch.tensor([0] * 3000 + [1] * 2000)
    picks = geometry_aware_sample(both, 100, batch)
    assert picks.numel() == 200
    assert bool((picks[:100] < 3000).all())
    assert bool((picks[100:] >= 3000).all())
    assert picks[100:].unique().numel() == 100


def test_gps_salient_share_follows_density_ratio() -> None:
    points, _ = _plane_with_bump(4000, 2)
    value = geometry_change_rate(points, 16)
    salient = set(torch.sort(value, descending=True, stable=True).indices[:1200].tolist())
    picks = geometry_aware_sample(points, 260, threshold=0.3, salient_density=2.0)
    in_salient = sum(int(p) in salient for p in picks)
    # rho |A| / (rho |A| + |B|) = 2400 / 5200 of the samples.
    assert in_salient == round(260 * 2400 / 5200)


def test_geometry_change_rate_matches_numpy_reference() -> None:
    points, _ = _plane_with_bump(1500, 3)
    k = 10
    got = geometry_change_rate(points, k).double().numpy()
    p = points.double().numpy()
    _, index = cKDTree(p).query(p, k=k + 1)
    normals = np.empty_like(p)
    curvature = np.empty(len(p))
    for i, row in enumerate(index):
        patch = p[row] - p[row].mean(0)
        eigval, eigvec = np.linalg.eigh(patch.T @ patch / len(row))
        normals[i] = eigvec[:, 0]
        curvature[i] = eigval[0] / eigval.sum()
    neighbors = index[:, 1:]
    dist = np.linalg.norm(p[neighbors] - p[:, None], axis=2)
    normal_rate = (1 - np.abs((normals[:, None] * normals[neighbors]).sum(2))) / dist
    curvature_rate = np.abs(curvature[:, None] - curvature[neighbors]) / dist
    expected = (normal_rate + curvature_rate).mean(1)
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=1e-6)
    flat = torch.cat([torch.rand(500, 2), torch.zeros(500, 1)], 1)
    assert float(geometry_change_rate(flat, 8).max()) < 1e-4


def test_gps_bad_arguments() -> None:
    points, _ = _plane_with_bump(100, 4)
    with pytest.raises(ValueError, match="threshold"):
        geometry_aware_sample(points, 10, threshold=1.5)
    with pytest.raises(ValueError, match="salient_density"):
        geometry_aware_sample(points, 10, salient_density=0)
    with pytest.raises(ValueError, match="num_samples=101"):
        geometry_aware_sample(points, 101)
    with pytest.raises(ValueError, match="needs at least 17"):
        geometry_change_rate(points[:16], 16)
