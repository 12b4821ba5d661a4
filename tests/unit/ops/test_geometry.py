"""PCA normals / curvature against Open3D, orientation, FPFH wrapper."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest
import torch

from anomalib_3d.ops import estimate_normals, fpfh, orient_normals


def _torus(n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    u, v = rng.uniform(0, 2 * np.pi, (2, n))
    big, small = 1.0, 0.35
    xyz = np.stack(
        [(big + small * np.cos(v)) * np.cos(u), (big + small * np.cos(v)) * np.sin(u), small * np.sin(v)], 1
    )
    return torch.from_numpy(xyz.astype(np.float32))


def _open3d_cloud(points: torch.Tensor) -> o3d.geometry.PointCloud:
    return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.double().numpy()))


def test_normals_agree_with_open3d_up_to_sign() -> None:
    points = _torus(6000, 0)
    normals, _ = estimate_normals(points, k=20)
    cloud = _open3d_cloud(points)
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(20))
    reference = torch.from_numpy(np.asarray(cloud.normals)).float()
    cosine = (normals * reference).sum(1).abs()
    assert float((cosine > 0.99).float().mean()) > 0.98
    torch.testing.assert_close(normals.norm(dim=1), torch.ones(6000))


def test_curvature_matches_open3d_covariances() -> None:
    points = _torus(3000, 1)
    _, curvature = estimate_normals(points, k=15)
    cloud = _open3d_cloud(points)
    cloud.estimate_covariances(o3d.geometry.KDTreeSearchParamKNN(15))
    eigenvalues = np.linalg.eigvalsh(np.asarray(cloud.covariances))
    expected = eigenvalues[:, 0] / eigenvalues.sum(1)
    np.testing.assert_allclose(curvature.numpy(), expected, atol=1e-4)


def test_plane_and_batched_normals() -> None:
    plane = torch.cat([torch.rand(400, 2), torch.zeros(400, 1)], 1)
    tilted = plane @ torch.tensor([[1.0, 0, 0], [0, 0.6, 0.8], [0, -0.8, 0.6]]) + 3
    points = torch.cat([plane, tilted])
    batch = torch.tensor([0] * 400 + [1] * 400)
    normals, curvature = estimate_normals(points, k=10, batch=batch, orient=False)
    assert float(curvature.abs().max()) < 1e-5
    assert float((normals[:400] @ torch.tensor([0.0, 0, 1])).abs().min()) > 0.999
    assert float((normals[400:] @ torch.tensor([0.0, -0.8, 0.6])).abs().min()) > 0.999


def test_orientation_outward_and_towards_viewpoint() -> None:
    gen = torch.Generator().manual_seed(2)
    sphere = torch.randn(2000, 3, generator=gen)
    sphere = sphere / sphere.norm(dim=1, keepdim=True)
    normals, _ = estimate_normals(sphere, k=12)
    assert bool(((normals * sphere).sum(1) > 0).all())
    towards = orient_normals(sphere, normals, viewpoint=torch.zeros(3))
    assert bool(((towards * sphere).sum(1) < 0).all())
    with pytest.raises(ValueError, match="viewpoint"):
        orient_normals(sphere, normals, viewpoint=torch.zeros(2, 3))


def test_fpfh_matches_direct_open3d_call() -> None:
    points = _torus(1500, 3)
    normals, _ = estimate_normals(points, k=20)
    batch = torch.tensor([0] * 700 + [1] * 800)
    ours = fpfh(points, normals, radius=0.25, max_nn=50, batch=batch)
    assert ours.shape == (1500, 33)
    for start, stop in [(0, 700), (700, 1500)]:
        cloud = _open3d_cloud(points[start:stop])
        cloud.normals = o3d.utility.Vector3dVector(normals[start:stop].double().numpy())
        expected = o3d.pipelines.registration.compute_fpfh_feature(
            cloud, o3d.geometry.KDTreeSearchParamHybrid(radius=0.25, max_nn=50)
        )
        np.testing.assert_allclose(ours[start:stop].numpy(), np.asarray(expected.data).T, rtol=1e-5, atol=1e-4)
    assert fpfh(points[:300], radius=0.25).shape == (300, 33)


def test_geometry_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        estimate_normals(torch.rand(10, 2))
    with pytest.raises(ValueError, match="has 5 points"):
        estimate_normals(torch.rand(5, 3), k=6)
    with pytest.raises(ValueError, match="radius"):
        fpfh(torch.rand(10, 3), radius=0.0)


@pytest.mark.parametrize(
    "scales", [(1.0, 0.5, 0.01), (1.0, 1.0, 1e-6), (1.0, 1e-4, 1e-4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)]
)
def test_closed_form_eigenpair_matches_lapack(scales: tuple[float, float, float]) -> None:
    from anomalib_3d.ops.geometry import _smallest_eigenpair

    gen = torch.Generator().manual_seed(4)
    patch = torch.randn(500, 20, 3, generator=gen, dtype=torch.float64) * torch.tensor(scales, dtype=torch.float64)
    rotation = torch.linalg.qr(torch.randn(500, 3, 3, generator=gen, dtype=torch.float64))[0]
    patch = patch @ rotation
    patch = patch - patch.mean(1, keepdim=True)
    cov = torch.einsum("bki,bkj->bij", patch, patch) / 20
    values, vectors = torch.linalg.eigh(cov)
    got_values, got_vector = _smallest_eigenpair(cov)
    torch.testing.assert_close(got_values, values, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(got_vector.norm(dim=1), torch.ones(500, dtype=torch.float64))
    separated = (values[:, 1] - values[:, 0]) > 1e-3 * values.sum(1)
    cosine = (got_vector * vectors[:, :, 0]).sum(1).abs()
    assert bool((cosine[separated] > 1 - 1e-9).all())
