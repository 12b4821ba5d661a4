"""Operations on neighbourhood graphs and grids: scores carried from a subsample to every point,
score smoothing and connected components.

:func:`interpolate_nearest` carries values from sampled points to all points (inverse distance
over the ``k`` nearest). Smoothing comes in two forms, one per kind of input:

* :func:`smooth_scores`: a Gaussian over each point's neighbourhood (``k`` nearest or a radius;
  with ``radius = 3 sigma`` or more the Gaussian keeps >= 99 % of its mass on a surface);
* :func:`gaussian_filter_grid` / :func:`smooth_grid_scores`: organized clouds (one point per pixel
  of a sensor grid) are smoothed *on the grid*, exactly as ``scipy.ndimage.gaussian_filter``
  (separable kernel truncated at ``truncate * sigma``, ``mode="reflect"``, missing pixels are 0).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from anomalib_3d.ops.backend import check_batch, check_points, check_positive_int
from anomalib_3d.ops.neighbors import knn_blocks, radius_graph

__all__ = [
    "connected_components",
    "gaussian_filter_grid",
    "interpolate_nearest",
    "smooth_grid_scores",
    "smooth_scores",
]

# Largest number of (query, neighbour) pairs held at once by the radius smoothing.
_RADIUS_EDGE_BUDGET = 1 << 22


def interpolate_nearest(
    src_points: torch.Tensor,
    src_values: torch.Tensor,
    dst_points: torch.Tensor,
    batch_src: torch.Tensor | None = None,
    batch_dst: torch.Tensor | None = None,
    *,
    k: int = 1,
    eps: float = 1e-12,
    backend: str = "auto",
) -> torch.Tensor:
    """Carry values from ``src_points`` to ``dst_points`` (e.g. scores of a subsample to all points).

    Args:
        src_points: ``(N_src, D)``.
        src_values: ``(N_src, ...)`` values attached to ``src_points``.
        dst_points: ``(N_dst, D)``.
        batch_src / batch_dst: sorted cloud ids (both or neither).
        k: 1 copies the nearest source value; k > 1 averages the k nearest with inverse-distance
            weights ``1 / max(d, eps)`` (``d`` the Euclidean distance). A destination that coincides
            with a source point takes that point's value exactly.
        eps: distance floor of the weights.
        backend: kNN backend (see :func:`knn`).

    Returns:
        ``(N_dst, ...)`` values; floating for k > 1.
    """
    if not isinstance(src_values, torch.Tensor) or src_values.shape[:1] != src_points.shape[:1]:
        msg = "src_values must be a tensor with one row per source point."
        raise ValueError(msg)
    k = check_positive_int(k, "k")
    blocks = knn_blocks(src_points, dst_points, k, batch_src, batch_dst, backend=backend)
    if torch.is_grad_enabled() and src_values.requires_grad:
        return torch.cat([_interpolate_block(src_values, index, sq, eps) for _, index, sq in blocks])
    out = None
    for start, index, sq in blocks:
        part = _interpolate_block(src_values, index, sq, eps)
        if out is None:
            out = part.new_empty((dst_points.shape[0], *part.shape[1:]))
        out[start : start + part.shape[0]] = part
    if out is None:  # no destination point
        none = src_points.new_empty((0, k), dtype=torch.long)
        return _interpolate_block(src_values, none, src_points.new_empty((0, k)), eps)
    return out


def _interpolate_block(src_values: torch.Tensor, index: torch.Tensor, sq: torch.Tensor, eps: float) -> torch.Tensor:
    """Inverse-distance average of ``src_values`` over ``index (m, k)`` at squared distances ``sq``."""
    if index.shape[1] == 1:
        return src_values[index[:, 0]]
    values = src_values[index]  # (m, k, ...)
    weight = 1.0 / sq.detach().sqrt().clamp_min(eps)
    exact = sq[:, 0] == 0
    if bool(exact.any()):
        weight[exact] = 0.0
        weight[exact, 0] = 1.0
    weight = weight / weight.sum(dim=1, keepdim=True)
    out_dtype = values.dtype if values.is_floating_point() else weight.dtype
    weight = weight.view(weight.shape + (1,) * (values.dim() - 2)).to(out_dtype)
    return (values * weight).sum(dim=1)


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
        out = _smooth_over_knn(points, values, batch, k, float(sigma), backend)
    else:
        out = _smooth_within_radius(points, values, batch, float(radius), float(sigma), backend)
    return out if scores.dim() == 2 else out.squeeze(1)


def _smooth_over_knn(
    points: torch.Tensor, values: torch.Tensor, batch: torch.Tensor | None, k: int, sigma: float, backend: str
) -> torch.Tensor:
    """kNN-Gaussian average, block of queries after block (:func:`knn_blocks`): beyond the result,
    memory stays at one block's ``(m, k)`` neighbour lists whatever the size of the cloud."""
    blocks = knn_blocks(points, points, k, batch, batch, backend=backend)
    parts = []
    out = None if torch.is_grad_enabled() and values.requires_grad else torch.empty_like(values)
    for start, index, sq in blocks:
        weight = torch.exp(-sq.detach() / (2 * sigma * sigma)).to(values.dtype)  # (m, k)
        smoothed = (weight.unsqueeze(-1) * values[index]).sum(1) / weight.sum(1, keepdim=True)
        if out is None:
            parts.append(smoothed)  # keeps the graph to the scores
        else:
            out[start : start + smoothed.shape[0]] = smoothed
    return torch.cat(parts) if out is None else out


def _smooth_within_radius(
    points: torch.Tensor, values: torch.Tensor, batch: torch.Tensor | None, radius: float, sigma: float, backend: str
) -> torch.Tensor:
    """Radius-Gaussian average, queries in chunks so the edge list stays within a budget."""
    from anomalib_3d.ops.neighbors import radius as radius_search

    if points.device.type == "cpu" and backend in ("auto", "scipy"):
        return _smooth_within_radius_kdtree(points, values, batch, radius, sigma)
    detached = points.detach()
    num = points.shape[0]
    out = torch.empty_like(values)
    # First guess of the chunk from a small probe: edges per query of this cloud and radius.
    probe = torch.linspace(0, num - 1, min(num, 64), device=points.device).long()
    probe_batch = None if batch is None else batch[probe]
    probe_edges = radius_search(detached, detached[probe], radius, batch, probe_batch, backend=backend).shape[1]
    per_query = max(1.0, probe_edges / probe.numel())
    step = max(1, int(_RADIUS_EDGE_BUDGET / per_query))
    for start in range(0, num, step):
        stop = min(num, start + step)
        query_batch = None if batch is None else batch[start:stop]
        edge = radius_search(detached, detached[start:stop], radius, batch, query_batch, backend=backend)
        center, neighbor = edge[0], edge[1]
        sq = (detached[start + center] - detached[neighbor]).pow(2).sum(-1)
        weight = torch.exp(-sq / (2 * sigma * sigma)).to(values.dtype)
        numerator = torch.zeros(stop - start, values.shape[1], dtype=values.dtype, device=values.device)
        numerator.index_add_(0, center, weight.unsqueeze(1) * values[neighbor])
        denominator = torch.zeros(stop - start, dtype=values.dtype, device=values.device).index_add_(0, center, weight)
        out[start:stop] = numerator / denominator.unsqueeze(1)
    return out


def _smooth_within_radius_kdtree(
    points: torch.Tensor, values: torch.Tensor, batch: torch.Tensor | None, radius: float, sigma: float
) -> torch.Tensor:
    """CPU path: each unordered pair within ``radius`` once (scipy's ``query_pairs``), added both ways.

    About 10x faster than listing sorted neighbours per query, with the same sums (the pair set
    is exactly the symmetric radius graph without self loops; self weights are 1).
    """
    from scipy.spatial import cKDTree

    coordinates = points.detach().double().numpy()
    num = points.shape[0]
    if batch is None:
        bounds = [0, num]
    else:
        bounds = [0, *torch.bincount(batch).cumsum(0).tolist()]
    numerator = values.clone()  # self term, weight 1
    denominator = torch.ones(num, dtype=values.dtype)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if hi - lo < 2:
            continue
        pairs = cKDTree(coordinates[lo:hi]).query_pairs(radius, output_type="ndarray")
        if pairs.size == 0:
            continue
        first = torch.from_numpy(pairs[:, 0] + lo)
        second = torch.from_numpy(pairs[:, 1] + lo)
        sq = ((coordinates[pairs[:, 0] + lo] - coordinates[pairs[:, 1] + lo]) ** 2).sum(1)
        weight = torch.from_numpy(np.exp(-sq / (2.0 * sigma * sigma))).to(values.dtype)
        numerator = numerator.index_add(0, first, weight.unsqueeze(1) * values[second])
        numerator = numerator.index_add(0, second, weight.unsqueeze(1) * values[first])
        denominator.index_add_(0, first, weight)
        denominator.index_add_(0, second, weight)
    return numerator / denominator.unsqueeze(1)


def _reflect_index(length: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of ``scipy.ndimage``'s ``reflect`` extension (``d c b a | a b c d | d c b a``)."""
    raw = torch.arange(-pad, length + pad, device=device)
    period = raw.remainder(2 * length)
    return torch.where(period < length, period, 2 * length - 1 - period)


def gaussian_filter_grid(maps: torch.Tensor, sigma: float, *, truncate: float = 4.0) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter(map, sigma, mode="reflect", truncate=truncate)`` of each 2D map.

    Args:
        maps: ``(..., H, W)`` floating maps; the last two dimensions are filtered, the others are
            independent maps.
        sigma: standard deviation in pixels (> 0; 0 returns the input).
        truncate: the kernel reaches ``int(truncate * sigma + 0.5)`` pixels each side (scipy's rule).

    Returns:
        ``(..., H, W)`` filtered maps, same dtype as ``maps``.
    """
    if not isinstance(maps, torch.Tensor) or maps.dim() < 2 or not maps.is_floating_point():
        msg = "maps must be a floating tensor of shape (..., H, W)."
        raise ValueError(msg)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or sigma < 0:
        msg = f"sigma must be >= 0, got {sigma!r}."
        raise ValueError(msg)
    if sigma == 0 or maps.numel() == 0:
        return maps.clone()
    reach = int(float(truncate) * float(sigma) + 0.5)
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float64, device=maps.device)
    kernel = torch.exp(-0.5 * (offsets / float(sigma)) ** 2)
    kernel = (kernel / kernel.sum()).to(maps.dtype)
    height, width = maps.shape[-2:]
    flat = maps.reshape(-1, height, width)
    # Separable: rows then columns, each with scipy's reflect extension gathered explicitly
    # (torch's "reflect" padding is scipy's "mirror"; scipy's "reflect" repeats the edge pixel).
    rows = flat.index_select(1, _reflect_index(height, reach, maps.device))  # (M, H + 2r, W)
    rows = F.conv1d(rows.permute(0, 2, 1).reshape(-1, 1, height + 2 * reach), kernel.view(1, 1, -1))
    rows = rows.view(flat.shape[0], width, height).permute(0, 2, 1)
    cols = rows.index_select(2, _reflect_index(width, reach, maps.device))  # (M, H, W + 2r)
    cols = F.conv1d(cols.reshape(-1, 1, width + 2 * reach), kernel.view(1, 1, -1))
    return cols.view(maps.shape)


def smooth_grid_scores(
    scores: torch.Tensor,
    grid_index: torch.Tensor,
    grid_shape: tuple[int, int] | torch.Tensor,
    batch: torch.Tensor | None = None,
    *,
    sigma: float,
    truncate: float = 4.0,
    num_clouds: int | None = None,
) -> torch.Tensor:
    """Gaussian smoothing of the per-point scores of organized clouds on their sensor grid.

    Every cloud's scores are written into its ``H x W`` grid (0 where the grid has no point, as
    PointAD's authors do before ``gaussian_filter``), filtered by :func:`gaussian_filter_grid` and
    read back at each point's pixel.

    Args:
        scores: ``(N,)`` or ``(N, C)`` floating scores.
        grid_index: ``(N,) long`` flat pixel ``row * W + col`` of each point.
        grid_shape: ``(H, W)`` shared by the clouds (or ``(B, 2)``, all rows equal).
        batch: ``(N,) long`` cloud of each point, or None for one cloud.
        sigma: Gaussian width in pixels.
        truncate: kernel reach in sigmas (scipy's default 4).
        num_clouds: ``B`` (default ``batch.max() + 1``).

    Returns:
        Smoothed scores, same shape and dtype as ``scores``.
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() not in (1, 2) or not scores.is_floating_point():
        msg = "scores must be a floating (N,) or (N, C) tensor."
        raise ValueError(msg)
    num = scores.shape[0]
    if not isinstance(grid_index, torch.Tensor) or grid_index.shape != (num,):
        msg = f"grid_index must be a (N,) tensor with N={num}."
        raise ValueError(msg)
    shape = torch.as_tensor(grid_shape).reshape(-1, 2)
    if not bool((shape == shape[0]).all()):
        msg = f"all clouds must share one grid shape, got {shape.tolist()}."
        raise ValueError(msg)
    height, width = (int(v) for v in shape[0].tolist())
    grid_index = grid_index.long()
    if num and (int(grid_index.min()) < 0 or int(grid_index.max()) >= height * width):
        msg = f"grid_index outside the {height} x {width} grid."
        raise ValueError(msg)
    check_batch(batch, num)
    if batch is None:
        batch = torch.zeros(num, dtype=torch.long, device=scores.device)
    if num_clouds is None:
        num_clouds = int(batch.max()) + 1 if num else 0
    values = scores if scores.dim() == 2 else scores.unsqueeze(1)
    channels = values.shape[1]
    grid = values.new_zeros(num_clouds, height * width, channels)
    grid[batch, grid_index] = values
    maps = grid.permute(0, 2, 1).reshape(num_clouds, channels, height, width)
    smoothed = gaussian_filter_grid(maps, sigma, truncate=truncate).reshape(num_clouds, channels, -1)
    out = smoothed.permute(0, 2, 1)[batch, grid_index]
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
