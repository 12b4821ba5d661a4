"""Connected components vs scipy, score smoothing vs brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import connected_components as scipy_components
from scipy.spatial.distance import cdist

from anomalib_3d.ops import connected_components, smooth_scores


def test_connected_components_hand_case() -> None:
    points = torch.tensor(
        [
            [0.0, 0, 0],  # component A
            [10.0, 0, 0],  # component B
            [0.9, 0, 0],  # A (links to 0)
            [1.8, 0, 0],  # A (chain)
            [10.5, 0, 0],  # B
            [5.0, 0, 0],  # masked out
            [20.0, 0, 0],  # singleton C
        ]
    )
    mask = torch.tensor([True, True, True, True, True, False, True])
    labels = connected_components(points, 1.0, mask=mask)
    assert labels.tolist() == [0, 1, 0, 0, 1, -1, 2]


def test_connected_components_match_scipy_and_respect_batches() -> None:
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(400, 3, generator=gen) * 4
    labels = connected_components(points, 0.35).numpy()
    adjacency = cdist(points.double().numpy(), points.double().numpy()) <= 0.35
    count, expected = scipy_components(adjacency, directed=False)
    assert labels.max() + 1 == count
    # Same partition (labels may be numbered differently).
    pairs = set(zip(labels.tolist(), expected.tolist(), strict=True))
    assert len(pairs) == count
    # Numbered by lowest member index.
    first_seen = [int(np.flatnonzero(labels == c)[0]) for c in range(count)]
    assert first_seen == sorted(first_seen)
    # Two identical clouds in one batch never share a component.
    both = torch.cat([points[:50], points[:50]])
    batch = torch.tensor([0] * 50 + [1] * 50)
    batched = connected_components(both, 0.35, batch)
    assert not set(batched[:50].tolist()) & set(batched[50:].tolist())


def test_smooth_scores_matches_brute_force() -> None:
    gen = torch.Generator().manual_seed(1)
    points = torch.rand(300, 3, generator=gen)
    scores = torch.rand(300, generator=gen)
    d2 = torch.cdist(points.double(), points.double()) ** 2
    sigma = 0.1
    weight = torch.exp(-d2 / (2 * sigma**2))
    # k = 8 nearest including self.
    knn_mask = torch.zeros_like(weight, dtype=torch.bool)
    knn_mask.scatter_(1, torch.sort(d2, dim=1, stable=True).indices[:, :8], True)
    expected_knn = (weight * knn_mask * scores.double()).sum(1) / (weight * knn_mask).sum(1)
    torch.testing.assert_close(
        smooth_scores(points, scores, k=8, sigma=sigma).double(), expected_knn, rtol=1e-5, atol=1e-6
    )
    ball = d2 <= 0.15**2
    expected_ball = (weight * ball * scores.double()).sum(1) / (weight * ball).sum(1)
    torch.testing.assert_close(
        smooth_scores(points, scores, radius=0.15, sigma=sigma).double(), expected_ball, rtol=1e-5, atol=1e-6
    )
    two_channels = smooth_scores(points, torch.stack([scores, 2 * scores], 1), k=8, sigma=sigma)
    torch.testing.assert_close(two_channels[:, 1], 2 * two_channels[:, 0])


def test_graph_bad_input() -> None:
    points = torch.rand(20, 3)
    with pytest.raises(ValueError, match="exactly one"):
        smooth_scores(points, torch.rand(20), sigma=1.0)
    with pytest.raises(ValueError, match="sigma"):
        smooth_scores(points, torch.rand(20), k=3, sigma=0.0)
    with pytest.raises(ValueError, match="scores"):
        smooth_scores(points, torch.rand(19), k=3, sigma=1.0)
    with pytest.raises(ValueError, match="mask"):
        connected_components(points, 0.1, mask=torch.ones(20))


@pytest.mark.parametrize("sigma", [0.7, 4.0, 9.0])
def test_gaussian_filter_grid_equals_scipy(sigma: float) -> None:
    from scipy.ndimage import gaussian_filter

    from anomalib_3d.ops.graph import gaussian_filter_grid

    maps = torch.rand(2, 3, 17, 29, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = np.stack([[gaussian_filter(m, sigma) for m in row] for row in maps.numpy()])
    torch.testing.assert_close(gaussian_filter_grid(maps, sigma), torch.from_numpy(expected), atol=1e-12, rtol=0)
    float32 = gaussian_filter_grid(maps.float(), sigma)
    assert float32.dtype == torch.float32
    torch.testing.assert_close(float32.double(), torch.from_numpy(expected), atol=1e-5, rtol=0)


def test_smooth_grid_scores_equals_scipy_on_the_2d_map() -> None:
    """PointAD's organized smoothing: scores on a 336-style grid, 0 where no point, gaussian_filter(sigma=4)."""
    from scipy.ndimage import gaussian_filter

    from anomalib_3d.ops.graph import smooth_grid_scores

    gen = torch.Generator().manual_seed(2)
    height, width = 30, 40
    index_a = torch.randperm(height * width, generator=gen)[:700].sort().values
    index_b = torch.randperm(height * width, generator=gen)[:300].sort().values
    scores = torch.rand(1000, 2, generator=gen, dtype=torch.float64)
    grid_index = torch.cat([index_a, index_b])
    batch = torch.cat([torch.zeros(700), torch.ones(300)]).long()
    out = smooth_grid_scores(scores, grid_index, (height, width), batch, sigma=4.0)
    for cloud, index in enumerate((index_a, index_b)):
        for channel in range(2):
            canvas = np.zeros(height * width)
            canvas[index.numpy()] = scores[batch == cloud, channel].numpy()
            expected = gaussian_filter(canvas.reshape(height, width), sigma=4).reshape(-1)[index.numpy()]
            torch.testing.assert_close(out[batch == cloud, channel], torch.from_numpy(expected), atol=1e-12, rtol=0)
    one = smooth_grid_scores(scores[:700, 0], index_a, (height, width), sigma=4.0)
    torch.testing.assert_close(one, out[:700, 0])
    with pytest.raises(ValueError, match="grid_index"):
        smooth_grid_scores(scores[:700, 0], index_a + height * width, (height, width), sigma=4.0)


def test_radius_smoothing_in_chunks_equals_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    """Queries processed in many small chunks (tiny edge budget), and the CPU pair-list path, give
    the brute-force 3-sigma Gaussian, clouds kept apart."""
    import anomalib_3d.ops.graph as graph

    monkeypatch.setattr(graph, "_RADIUS_EDGE_BUDGET", 500)
    gen = torch.Generator().manual_seed(5)
    points = torch.rand(400, 3, generator=gen)
    scores = torch.rand(400, generator=gen)
    batch = torch.cat([torch.zeros(150), torch.ones(250)]).long()
    sigma = 0.08
    chunked = smooth_scores(points, scores, batch, radius=3 * sigma, sigma=sigma, backend="torch")
    pairs = smooth_scores(points, scores, batch, radius=3 * sigma, sigma=sigma)  # CPU: scipy pair list
    p = points.double().numpy()
    d2 = ((p[:, None] - p[None]) ** 2).sum(-1)
    same = batch.numpy()[:, None] == batch.numpy()[None]
    weight = np.exp(-d2 / (2 * sigma**2)) * (d2 <= (3 * sigma) ** 2) * same
    expected = weight @ scores.double().numpy() / weight.sum(1)
    torch.testing.assert_close(chunked.double(), torch.from_numpy(expected), atol=1e-6, rtol=0)
    torch.testing.assert_close(pairs.double(), torch.from_numpy(expected), atol=1e-6, rtol=0)
