"""Operations on neighbourhood graphs: score smoothing and connected components."""

from __future__ import annotations

import numpy as np
import torch

from anomalib_3d.ops.backend import check_batch, check_points
from anomalib_3d.ops.neighbors import knn, radius_graph

__all__ = ["connected_components", "smooth_scores"]


def smooth_scores(
    points: torch.Tensor,
    scores: torch.Tensor,
    batch: torch.Tensor | None = None,
    *,
    k: int | None = None,
    radius: float | None = None,
    sigma: float,
    backend: str = "auto",
) -> torch.Tensor:
    """Gaussian-weighted average of per-point scores over each point's neighbourhood.

    ``out_i = sum_j w_ij s_j / sum_j w_ij`` with ``w_ij = exp(-|p_i - p_j|^2 / (2 sigma^2))``, the
    sum running over the point itself and its neighbours: its ``k - 1`` nearest others (``k``
    counts the point itself) or every point within ``radius``.

    Args:
        points: ``(N, 3)``.
        scores: ``(N,)`` or ``(N, C)`` floating scores.
        batch: ``(N,) long`` sorted cloud ids, or None.
        k: neighbourhood size including the point (exclusive with ``radius``).
        radius: neighbourhood radius (exclusive with ``k``).
        sigma: Gaussian width (> 0), in the units of ``points``.
        backend: neighbour-search backend.

    Returns:
        Smoothed scores, same shape and dtype as ``scores``.
    """
    check_points(points, "points")
    check_batch(batch, points.shape[0])
    if not isinstance(scores, torch.Tensor) or scores.shape[:1] != points.shape[:1] or scores.dim() not in (1, 2):
        msg = f"scores must be a (N,) or (N, C) tensor with N={points.shape[0]}."
        raise ValueError(msg)
    if not scores.is_floating_point():
        msg = f"scores must be floating, got {scores.dtype}."
        raise ValueError(msg)
    if (k is None) == (radius is None):
        msg = "Give exactly one of k or radius."
        raise ValueError(msg)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        msg = f"sigma must be positive, got {sigma!r}."
        raise ValueError(msg)
    if points.shape[0] == 0:
        return scores.clone()
    values = scores if scores.dim() == 2 else scores.unsqueeze(1)
    if k is not None:
        index, sq = knn(points, points, k, batch, batch, backend=backend)
        weight = torch.exp(-sq.detach() / (2 * sigma * sigma)).to(values.dtype)  # (N, k)
        out = (weight.unsqueeze(-1) * values[index]).sum(1) / weight.sum(1, keepdim=True)
    else:
        edge = radius_graph(points, radius, batch, loop=True, backend=backend)
        center, neighbor = edge[0], edge[1]
        sq = (points.detach()[center] - points.detach()[neighbor]).pow(2).sum(-1)
        weight = torch.exp(-sq / (2 * sigma * sigma)).to(values.dtype)
        numerator = torch.zeros_like(values).index_add_(0, center, weight.unsqueeze(1) * values[neighbor])
        denominator = torch.zeros(points.shape[0], dtype=values.dtype, device=values.device)
        denominator.index_add_(0, center, weight)
        out = numerator / denominator.unsqueeze(1)
    return out if scores.dim() == 2 else out.squeeze(1)


def connected_components(
    points: torch.Tensor,
    radius: float,
    batch: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Connected components of the radius graph of the masked points.

    Two masked points of the same cloud are linked when their distance is ``<= radius``;
    components are the connected parts of that graph (built as a sparse edge list and solved with
    ``scipy.sparse.csgraph``, never as an N x N matrix).

    Args:
        points: ``(N, 3)``.
        radius: linking distance (> 0).
        batch: ``(N,) long`` sorted cloud ids, or None. Components never span clouds.
        mask: ``(N,) bool`` points taking part (e.g. ``scores > threshold``), or None for all.
        backend: radius-search backend.

    Returns:
        ``(N,) long`` labels: ``0 .. C-1`` numbered across the whole batch in order of each
        component's lowest point index; ``-1`` for points outside ``mask``.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as scipy_components

    check_points(points, "points")
    check_batch(batch, points.shape[0])
    num = points.shape[0]
    if mask is None:
        mask = torch.ones(num, dtype=torch.bool, device=points.device)
    if not isinstance(mask, torch.Tensor) or mask.shape != (num,) or mask.dtype != torch.bool:
        msg = f"mask must be a bool tensor of shape ({num},)."
        raise ValueError(msg)
    labels = torch.full((num,), -1, dtype=torch.long, device=points.device)
    selected = mask.nonzero().flatten()
    count = selected.numel()
    if count == 0:
        return labels
    sub_batch = None if batch is None else batch[selected]
    edge = radius_graph(points[selected], radius, sub_batch, loop=False, backend=backend).cpu().numpy()
    graph = coo_matrix((np.ones(edge.shape[1], dtype=np.int8), (edge[0], edge[1])), shape=(count, count))
    _, raw = scipy_components(graph, directed=False)
    # Renumber by lowest member index so labels do not depend on scipy's traversal order.
    _, first = np.unique(raw, return_index=True)
    ordered_raw = raw[np.sort(first)]
    remap = np.empty(first.shape[0], dtype=np.int64)
    remap[ordered_raw] = np.arange(first.shape[0])
    labels[selected] = torch.from_numpy(remap[raw]).to(points.device)
    return labels
