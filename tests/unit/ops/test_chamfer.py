"""Chamfer-L2 against a dense brute-force reference (values, padding, gradients, chunking)."""

from __future__ import annotations

import pytest
import torch

from anomalib_3d.ops import chamfer_distance
from anomalib_3d.ops import chamfer as chamfer_module


def _dense(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dist = ((x.unsqueeze(2) - y.unsqueeze(1)) ** 2).sum(-1)
    dist_x, dist_y = dist.min(2).values, dist.min(1).values
    return dist_x.mean(1) + dist_y.mean(1), dist_x, dist_y


def test_chamfer_matches_brute_force_and_gradients() -> None:
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 300, 3, generator=gen) + 5).requires_grad_()
    y = (torch.rand(4, 250, 3, generator=gen) + 5).requires_grad_()
    total, (dist_x, dist_y) = chamfer_distance(x, y, reduction="none")
    ref_total, ref_x, ref_y = _dense(x, y)
    torch.testing.assert_close(total, ref_total)
    torch.testing.assert_close(dist_x, ref_x)
    torch.testing.assert_close(dist_y, ref_y)
    grad_x, grad_y = torch.autograd.grad(total.sum(), (x, y))
    ref_grad_x, ref_grad_y = torch.autograd.grad(ref_total.sum(), (x, y))
    torch.testing.assert_close(grad_x, ref_grad_x)
    torch.testing.assert_close(grad_y, ref_grad_y)
    mean_total, _ = chamfer_distance(x, y)
    torch.testing.assert_close(mean_total, ref_total.mean())
    # Point-MAE's ChamferDistanceL2: mean(dist1) + mean(dist2) over the whole batch.
    torch.testing.assert_close(mean_total, ref_x.mean() + ref_y.mean())
    sum_total, _ = chamfer_distance(x, y, reduction="sum")
    torch.testing.assert_close(sum_total, ref_total.sum())


def test_chamfer_padded_lengths() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 100, 3, generator=gen)
    y = torch.rand(2, 80, 3, generator=gen)
    x_len, y_len = torch.tensor([100, 37]), torch.tensor([12, 80])
    total, (dist_x, dist_y) = chamfer_distance(x, y, x_lengths=x_len, y_lengths=y_len, reduction="none")
    for b in range(2):
        ref_total, ref_x, ref_y = _dense(x[b : b + 1, : x_len[b]], y[b : b + 1, : y_len[b]])
        torch.testing.assert_close(total[b], ref_total[0])
        torch.testing.assert_close(dist_x[b, : x_len[b]], ref_x[0])
        torch.testing.assert_close(dist_y[b, : y_len[b]], ref_y[0])
    assert float(dist_x[1, 37:].abs().sum()) == 0.0
    assert float(dist_y[0, 12:].abs().sum()) == 0.0


def test_chamfer_chunked_equals_unchunked(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(3, 500, 3, generator=gen)
    y = torch.rand(3, 450, 3, generator=gen)
    full, (full_x, full_y) = chamfer_distance(x, y, reduction="none")
    monkeypatch.setattr(chamfer_module, "CHUNK_ELEMENTS", 3 * 450 * 7)  # 7 rows per chunk
    chunked, (chunked_x, chunked_y) = chamfer_distance(x, y, reduction="none")
    torch.testing.assert_close(chunked, full)
    torch.testing.assert_close(chunked_x, full_x)
    torch.testing.assert_close(chunked_y, full_y)


def test_chamfer_bad_input() -> None:
    x = torch.rand(2, 10, 3)
    with pytest.raises(ValueError, match="batch size"):
        chamfer_distance(x, torch.rand(3, 10, 3))
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        chamfer_distance(torch.rand(10, 3), x)
    with pytest.raises(ValueError, match="x_lengths"):
        chamfer_distance(x, x, x_lengths=torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="reduction"):
        chamfer_distance(x, x, reduction="max")
    with pytest.raises(ValueError, match="NaN"):
        chamfer_distance(x, torch.full((2, 4, 3), float("nan")))
