"""kNN / radius search against scipy cKDTree and brute force, for every available backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from anomalib_3d.ops import available_backends, interpolate_nearest, knn, knn_graph, radius, radius_graph
from anomalib_3d.ops.backend import BACKEND_OPS, resolve_backend

KNN_BACKENDS = [b for b in available_backends() if "knn" in BACKEND_OPS[b]]
RADIUS_BACKENDS = [b for b in available_backends() if "radius" in BACKEND_OPS[b]]


def _batched_cloud(sizes: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    points = torch.rand(sum(sizes), 3, generator=gen) * 10 - 5
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return points, batch


def _grid(nx: int, ny: int, nz: int) -> torch.Tensor:
    axes = [torch.arange(n, dtype=torch.float32) for n in (nx, ny, nz)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def test_torch_backend_always_available() -> None:
    assert available_backends()[0] == "torch"
    assert resolve_backend("knn", torch.device("cpu")) in available_backends()


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_knn_matches_ckdtree_single_cloud(backend: str) -> None:
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(3000, 3, generator=gen)
    queries = torch.rand(400, 3, generator=gen)
    index, sq = knn(points, queries, 12, backend=backend)
    ref_dist, ref_index = cKDTree(points.double().numpy()).query(queries.double().numpy(), k=12)
    assert index.dtype == torch.long
    assert index.shape == (400, 12)
    np.testing.assert_array_equal(index.numpy(), ref_index)
    np.testing.assert_allclose(sq.numpy(), ref_dist**2, rtol=1e-5, atol=1e-7)
    assert bool((sq[:, 1:] >= sq[:, :-1]).all())


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_knn_batched_matches_per_cloud_ckdtree(backend: str) -> None:
    points, batch = _batched_cloud([700, 40, 1200], seed=1)
    queries, batch_q = _batched_cloud([50, 9, 80], seed=2)
    index, _ = knn(points, queries, 9, batch, batch_q, backend=backend)
    p_off = [0, 700, 740]
    q_off = [0, 50, 59]
    for b, (p0, p1, q0, q1) in enumerate([(0, 700, 0, 50), (700, 740, 50, 59), (740, 1940, 59, 139)]):
        _, ref = cKDTree(points[p0:p1].double().numpy()).query(queries[q0:q1].double().numpy(), k=9)
        np.testing.assert_array_equal(index[q0:q1].numpy(), ref + p_off[b], err_msg=f"cloud {b}")
        assert q_off[b] == q0


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_knn_equal_sized_batch(backend: str) -> None:
    points, batch = _batched_cloud([500, 500, 500], seed=3)
    index, _ = knn(points, points, 5, batch, batch, backend=backend)
    for b in range(3):
        cloud = points[500 * b : 500 * (b + 1)].double().numpy()
        _, ref = cKDTree(cloud).query(cloud, k=5)
        np.testing.assert_array_equal(index[500 * b : 500 * (b + 1)].numpy(), ref + 500 * b)


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_knn_ties_go_to_lower_index(backend: str) -> None:
    grid = _grid(9, 8, 3)
    index, sq = knn(grid, grid, 11, backend=backend)
    dist = ((grid[:, None] - grid[None]) ** 2).sum(-1)
    expected = torch.sort(dist, dim=1, stable=True).indices[:, :11]
    torch.testing.assert_close(index, expected)
    torch.testing.assert_close(sq, torch.gather(dist, 1, expected))


def test_knn_distances_are_differentiable() -> None:
    points = torch.rand(50, 3, requires_grad=True)
    _, sq = knn(points, points.detach()[:5], 3)
    sq.sum().backward()
    assert points.grad is not None
    assert float(points.grad.abs().sum()) > 0


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_knn_graph_excludes_self(backend: str) -> None:
    points, batch = _batched_cloud([300, 200], seed=4)
    graph = knn_graph(points, 6, batch, backend=backend)
    assert graph.shape == (500, 6)
    assert not bool((graph == torch.arange(500).unsqueeze(1)).any())
    for b, (p0, p1) in enumerate([(0, 300), (300, 500)]):
        cloud = points[p0:p1].double().numpy()
        _, ref = cKDTree(cloud).query(cloud, k=7)
        np.testing.assert_array_equal(graph[p0:p1].numpy(), ref[:, 1:] + p0, err_msg=f"cloud {b}")
    with_loop = knn_graph(points, 6, batch, loop=True, backend=backend)
    torch.testing.assert_close(with_loop[:, 0], torch.arange(500))


def test_knn_graph_with_duplicates_keeps_other_copies() -> None:
    points = torch.tensor([[0.0, 0, 0], [0, 0, 0], [0, 0, 0], [5, 5, 5]])
    graph = knn_graph(points, 2, backend="torch")
    torch.testing.assert_close(graph[2], torch.tensor([0, 1]))
    torch.testing.assert_close(graph[0], torch.tensor([1, 2]))


def _radius_reference(points: np.ndarray, queries: np.ndarray, r: float) -> set[tuple[int, int]]:
    hits = cKDTree(points).query_ball_point(queries, r)
    return {(q, p) for q, row in enumerate(hits) for p in row}


@pytest.mark.parametrize("backend", RADIUS_BACKENDS)
def test_radius_matches_ckdtree_batched(backend: str) -> None:
    points, batch = _batched_cloud([800, 600], seed=5)
    queries, batch_q = _batched_cloud([60, 70], seed=6)
    edge = radius(points, queries, 1.3, batch, batch_q, backend=backend)
    got = set(map(tuple, edge.t().tolist()))
    expected = {(q, p) for q, p in _radius_reference(points[:800].double().numpy(), queries[:60].double().numpy(), 1.3)}
    expected |= {
        (q + 60, p + 800)
        for q, p in _radius_reference(points[800:].double().numpy(), queries[60:].double().numpy(), 1.3)
    }
    assert got == expected
    # Sorted by query, then distance.
    assert bool((edge[0][1:] >= edge[0][:-1]).all())
    sq = ((points[edge[1]] - queries[edge[0]]) ** 2).sum(-1)
    same = edge[0][1:] == edge[0][:-1]
    assert bool((sq[1:][same] >= sq[:-1][same]).all())


@pytest.mark.parametrize("backend", RADIUS_BACKENDS)
def test_radius_returns_everything_without_cap(backend: str) -> None:
    points = torch.rand(500, 3)
    edge = radius(points, points[:3], 10.0, backend=backend)
    assert edge.shape == (2, 1500)


@pytest.mark.parametrize("backend", RADIUS_BACKENDS)
def test_radius_cap_keeps_nearest(backend: str) -> None:
    gen = torch.Generator().manual_seed(7)
    points = torch.rand(1000, 3, generator=gen)
    queries = torch.rand(20, 3, generator=gen)
    edge = radius(points, queries, 0.4, max_num_neighbors=5, backend=backend)
    ref_dist, ref_index = cKDTree(points.double().numpy()).query(queries.double().numpy(), k=5)
    for q in range(20):
        got = edge[1][edge[0] == q].numpy()
        expected = ref_index[q][ref_dist[q] <= 0.4]
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("backend", RADIUS_BACKENDS)
def test_radius_graph_inclusive_boundary_and_loops(backend: str) -> None:
    grid = _grid(4, 4, 1)
    edge = radius_graph(grid, 1.0, backend=backend)
    # Each grid node links to its 4-neighbours at distance exactly 1 (boundary included).
    degree = torch.bincount(edge[0], minlength=16)
    assert degree.tolist() == [2, 3, 3, 2, 3, 4, 4, 3, 3, 4, 4, 3, 2, 3, 3, 2]
    assert not bool((edge[0] == edge[1]).any())
    loops = radius_graph(grid, 1.0, loop=True, backend=backend)
    assert loops.shape[1] == edge.shape[1] + 16


def test_interpolate_nearest() -> None:
    gen = torch.Generator().manual_seed(8)
    src = torch.rand(200, 3, generator=gen)
    values = torch.rand(200, 2, generator=gen)
    dst = torch.rand(50, 3, generator=gen)
    _, nearest = cKDTree(src.double().numpy()).query(dst.double().numpy(), k=1)
    torch.testing.assert_close(interpolate_nearest(src, values, dst), values[torch.from_numpy(nearest)])
    dist, idx = cKDTree(src.double().numpy()).query(dst.double().numpy(), k=3)
    weight = 1 / dist
    expected = (values.double().numpy()[idx] * weight[..., None]).sum(1) / weight.sum(1, keepdims=True)
    np.testing.assert_allclose(interpolate_nearest(src, values, dst, k=3).numpy(), expected, rtol=1e-4)
    # A destination sitting on a source point takes its value exactly.
    np.testing.assert_allclose(interpolate_nearest(src, values, src[:4], k=3).numpy(), values[:4].numpy())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 11}, "has 10 points"),
        ({"k": 0}, "positive integer"),
        ({"k": 2, "backend": "nope"}, "Unknown backend"),
        ({"k": 2, "backend": "fpsample"}, "does not implement"),
    ],
)
def test_knn_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        knn(torch.rand(10, 3), torch.rand(2, 3), **kwargs)


def test_knn_bad_batches_and_points() -> None:
    points = torch.rand(10, 3)
    with pytest.raises(ValueError, match="sorted"):
        knn(points, points, 2, torch.tensor([0, 1] * 5), torch.tensor([0, 1] * 5))
    with pytest.raises(ValueError, match="together"):
        knn(points, points, 2, torch.zeros(10, dtype=torch.long), None)
    with pytest.raises(ValueError, match="one entry per point"):
        knn(points, points, 2, torch.zeros(9, dtype=torch.long), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="Cloud 1 has 1 points"):
        knn(points, points, 2, torch.tensor([0] * 9 + [1]), torch.tensor([0] * 9 + [1]))
    with pytest.raises(ValueError, match="NaN"):
        knn(torch.full((4, 3), float("nan")), points, 1)
    with pytest.raises(ValueError, match="shape"):
        knn(torch.rand(10, 3), torch.rand(3, 2), 1)
    with pytest.raises(ValueError, match="floating"):
        knn(torch.ones(10, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="r must be"):
        radius(points, points, -1.0)
