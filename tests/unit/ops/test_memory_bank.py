"""Memory bank: greedy coreset and nearest-neighbour queries against brute force."""

from __future__ import annotations

import pytest
import torch

from anomalib_3d.ops import MemoryBank, greedy_coreset, nearest_neighbors
from anomalib_3d.ops.memory_bank import canonical_order, reweighted_max


def _brute_force_k_center(features: torch.Tensor, num_samples: int, start: int) -> list[int]:
    distances = torch.cdist(features, features, compute_mode="donot_use_mm_for_euclid_dist")
    chosen = [start]
    for _ in range(num_samples - 1):
        nearest_center = distances[:, chosen].min(dim=1).values
        chosen.append(int(torch.argmax(nearest_center)))
    return chosen


@pytest.mark.parametrize("seed", [0, 3])
def test_coreset_equals_brute_force_k_center(seed: int) -> None:
    features = torch.randn(300, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    selected = greedy_coreset(features, 40, projection_dim=None, seed=seed)
    assert selected.dtype == torch.long
    assert selected.tolist() == _brute_force_k_center(features, 40, int(selected[0]))
    assert len(set(selected.tolist())) == 40


def _difference_form_coreset(features: torch.Tensor, num_samples: int, start: int) -> list[int]:
    """Greedy k-center with every distance taken as ``|x - c|^2`` (the plain, slow form)."""
    chosen = [start]
    min_sq = (features - features[start]).pow(2).sum(dim=1)
    for _ in range(num_samples - 1):
        index = int(torch.argmax(min_sq))
        chosen.append(index)
        min_sq = torch.minimum(min_sq, (features - features[index]).pow(2).sum(dim=1))
    return chosen


def test_coreset_is_row_for_row_the_difference_form_on_near_ties() -> None:
    """float32 rows far from the origin with near-duplicates (distances ~1e-7 of |x|^2): the norm
    expansion alone orders these wrongly (checked: it departs after ~200 steps); the exact
    recomputation of the rows in doubt must give the difference form's selection exactly."""
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(400, 16, generator=generator) * 3 + 100.0
    near = base + torch.randn(400, 16, generator=generator) * 1e-4
    features = torch.cat([base, near, base[:50]]).float()
    selected = greedy_coreset(features, 600, projection_dim=None, seed=0)
    assert selected.tolist() == _difference_form_coreset(features, 600, int(selected[0]))


def test_coreset_never_repeats_a_row_of_duplicated_data() -> None:
    features = torch.zeros(30, 4)
    features[:10, 0] = torch.arange(10, dtype=torch.float32)  # 10 distinct rows, 20 copies of the origin
    selected = greedy_coreset(features, 25, projection_dim=None, seed=0, start=1)
    assert len(set(selected.tolist())) == 25
    assert set(range(10)) <= set(selected.tolist())


def test_coreset_is_seeded_and_projection_keeps_rows() -> None:
    features = torch.randn(200, 300)
    a = greedy_coreset(features, 20, projection_dim=16, seed=1)
    torch.testing.assert_close(a, greedy_coreset(features, 20, projection_dim=16, seed=1))
    assert not torch.equal(a, greedy_coreset(features, 20, projection_dim=16, seed=2))
    assert greedy_coreset(features, 500).tolist() == list(range(200))
    # k-center covers the data better than any of 20 random subsets of the same size (2-D, where
    # covering radii differ clearly; in high dimensions all points are nearly equidistant).
    plane = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))

    def radius(index: torch.Tensor) -> float:
        return float(torch.cdist(plane, plane[index]).min(dim=1).values.max())

    generator = torch.Generator().manual_seed(1)
    best_random = min(radius(torch.randperm(500, generator=generator)[:20]) for _ in range(20))
    assert radius(greedy_coreset(plane, 20, projection_dim=None)) < best_random
    with pytest.raises(ValueError, match="num_samples"):
        greedy_coreset(features, 0)


@pytest.mark.parametrize(("k", "budget", "dim"), [(1, 1 << 24, 12), (4, 1 << 24, 12), (3, 97, 12), (1, 97, 3), (4, 97, 7)])
def test_query_equals_brute_force(k: int, budget: int, dim: int) -> None:
    """Chunked distance matrices (dim > 8) and the kd-tree path (dim <= 8) both match brute force."""
    generator = torch.Generator().manual_seed(5)
    bank = torch.randn(257, dim, dtype=torch.float64, generator=generator)
    queries = torch.randn(101, dim, dtype=torch.float64, generator=generator)
    distances, indices = nearest_neighbors(queries, bank, k, budget=budget)
    expected = torch.cdist(queries, bank, compute_mode="donot_use_mm_for_euclid_dist")
    expected_d, expected_i = torch.topk(expected, k, dim=1, largest=False)
    assert torch.equal(indices, expected_i)
    torch.testing.assert_close(distances, expected_d)


def test_memory_bank_fit_query_and_state_dict() -> None:
    features = torch.randn(400, 16, generator=torch.Generator().manual_seed(0))
    bank = MemoryBank(coreset_ratio=0.25, projection_dim=None, seed=0)
    with pytest.raises(RuntimeError, match="empty"):
        bank.query(features[:3])
    bank.fit(features)
    assert bank.bank.shape == (100, 16)
    ordered = features[canonical_order(features)]  # the bank sorts its rows first (order-free)
    expected_rows = ordered[greedy_coreset(ordered, 100, projection_dim=None, seed=0)]
    torch.testing.assert_close(bank.bank, expected_rows)
    # Every bank row is its own nearest neighbour at distance 0.
    distances, indices = bank.query(bank.bank, k=1)
    assert torch.equal(indices[:, 0], torch.arange(100))
    assert float(distances.max()) == 0.0
    restored = MemoryBank(coreset_ratio=0.25)
    restored.load_state_dict(bank.state_dict())
    torch.testing.assert_close(restored.bank, bank.bank)
    full = MemoryBank(coreset_ratio=1.0)
    full.fit(features)
    torch.testing.assert_close(full.bank, ordered)


def test_reweighted_max_matches_hand_computation() -> None:
    bank = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    features = torch.tensor([[0.1, 0.0], [0.0, 1.5], [4.0, 4.0], [0.9, 0.0]])
    batch = torch.tensor([0, 0, 1, 1])
    distances, indices = nearest_neighbors(features, bank, 1)
    scores = distances[:, 0]
    plain = reweighted_max(scores, features, indices[:, 0], bank, batch, num_neighbors=1)
    torch.testing.assert_close(plain, torch.tensor([0.5, 2**0.5]))
    weighted = reweighted_max(scores, features, indices[:, 0], bank, batch, num_neighbors=2)
    # cloud 0: top feature (0, 1.5) -> nn (0, 2); its 2-NN in bank: (0, 2), (0, 0)
    d0 = torch.tensor([0.5, 1.5])
    # cloud 1: top feature (4, 4) -> nn (5, 5); its 2-NN: (5, 5), (0, 2)
    d1 = torch.tensor([2**0.5, (16 + 4) ** 0.5])
    expected = torch.stack([(1 - torch.softmax(d0, 0)[0]) * 0.5, (1 - torch.softmax(d1, 0)[0]) * 2**0.5])
    torch.testing.assert_close(weighted, expected)


def test_bank_does_not_depend_on_the_order_of_the_training_rows() -> None:
    """Shuffled loaders and DDP shards deliver the same rows in another order: same bank."""
    from anomalib_3d.ops.memory_bank import MemoryBank

    features = torch.randn(300, 16, generator=torch.Generator().manual_seed(3))
    permutation = torch.randperm(300, generator=torch.Generator().manual_seed(4))
    first, second = MemoryBank(coreset_ratio=0.1, projection_dim=8), MemoryBank(coreset_ratio=0.1, projection_dim=8)
    first.fit(features)
    second.fit(features[permutation])
    assert torch.equal(first.bank, second.bank)
