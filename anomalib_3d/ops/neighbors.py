"""Nearest-neighbour and radius search on (batched) point clouds.

Conventions shared by every function here:

* Points are ``(N, D)`` floating tensors (3-D clouds use ``D = 3``; kNN / radius accept any D).
* Several clouds are packed into one tensor with a sorted batch vector ``batch: (N,) long``
  (torch-cluster / PyG style). Neighbours are only ever searched inside the same cloud.
* Returned indices are *global* indices into ``points`` (not offsets inside a cloud).
* Squared distances are recomputed from the coordinates as ``((p - q) ** 2).sum(-1)`` in the input
  dtype, whatever backend found the candidates, so every backend returns bit-identical distances and
  ordering. Neighbours are sorted by ascending squared distance; exact ties go to the lower index.
  A backend is asked for a few extra candidates (:data:`CANDIDATE_MARGIN`) so that small rounding
  differences between backends cannot change the result; a query whose tie group reaches past those
  candidates is resolved by an exact brute-force pass over its cloud.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from anomalib_3d.ops.backend import (
    CHUNK_ELEMENTS,
    check_batch,
    check_points,
    check_positive_int,
    cloud_ptr,
    paired_ptrs,
    resolve_backend,
    split_sizes,
)

__all__ = [
    "CANDIDATE_MARGIN",
    "QUERY_BLOCK",
    "knn",
    "knn_blocks",
    "knn_graph",
    "radius",
    "radius_graph",
]

#: Extra neighbours requested from a backend beyond ``k`` before the exact re-ranking.
CANDIDATE_MARGIN: int = 4

#: Queries searched at once (:func:`knn_blocks`): the candidate lists and their exact re-ranking
#: then take a few tens of MB whatever the size of the cloud.
QUERY_BLOCK: int = 1 << 16

# Relative slack applied to the search radius when collecting candidates; candidates are then
# filtered with the exact squared distance, so the slack only protects against rounding.
_RADIUS_SLACK = 1e-4


def _search_radius(r: float) -> float:
    """Candidate radius of the tree / torch_cluster searches: ``r`` widened by :data:`_RADIUS_SLACK`.

    The exact filter of :func:`_finish_radius` then keeps only ``dist <= r``; the ``1e-12`` covers
    ``r`` so small that the relative slack rounds away.
    """
    return r * (1.0 + _RADIUS_SLACK) + 1e-12


def _chunk_elements(device: torch.device) -> int:
    # GPUs have memory to spare and want large kernels; CPUs want cache-sized blocks.
    return CHUNK_ELEMENTS * 16 if device.type == "cuda" else CHUNK_ELEMENTS


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).sum(-1)


def _sort_by_distance_then_index(index: torch.Tensor, sq_dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Backends mostly hand candidates over already in order; only the other rows are sorted.
    later, earlier = sq_dist[:, 1:], sq_dist[:, :-1]
    in_order = (later > earlier) | ((later == earlier) & (index[:, 1:] > index[:, :-1]))
    rows = (~in_order.all(dim=1)).nonzero().flatten()
    if rows.numel() == 0:
        return index, sq_dist
    sub_index, order = index[rows].sort(dim=1)
    sub_dist = sq_dist[rows].gather(1, order)
    sub_dist, order = sub_dist.sort(dim=1, stable=True)
    index, sq_dist = index.clone(), sq_dist.clone()
    index[rows] = sub_index.gather(1, order)
    sq_dist[rows] = sub_dist
    return index, sq_dist


# ---------------------------------------------------------------------------------------------
# kNN candidate generation per backend. Each returns, per cloud, a (m_b, kc_b) tensor of *global*
# candidate indices on the points' device.
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def _torch_knn_dense(points: torch.Tensor, queries: torch.Tensor, kc: int) -> torch.Tensor:
    """(B, n, D), (B, m, D) -> (B, m, kc) local indices of the kc nearest (unordered)."""
    num_clouds, n, _ = points.shape
    m = queries.shape[1]
    # Centring each cloud keeps the |p|^2 - 2 q.p expansion accurate far from the origin.
    center = points.mean(dim=1, keepdim=True)
    points = points - center
    queries = queries - center
    # |q|^2 is constant along a row, so it does not change the ranking and is left out.
    points_sq = points.pow(2).sum(-1).unsqueeze(1)  # (B, 1, n)
    budget = _chunk_elements(points.device)
    rows = max(1, budget // max(n, 1))
    clouds_per_step = max(1, rows // max(m, 1))
    rows = min(rows, m)
    points_t = points.transpose(1, 2).contiguous()  # (B, D, n)
    out = torch.empty((num_clouds, m, kc), dtype=torch.long, device=points.device)
    # One reused distance buffer: allocating a fresh block per chunk fragments the CPU heap
    # (glibc keeps freed large blocks) and let RSS grow by gigabytes on long loops.
    buffer = torch.empty(min(num_clouds, clouds_per_step) * rows * n, dtype=points.dtype, device=points.device)
    for b0 in range(0, num_clouds, clouds_per_step):
        b1 = min(num_clouds, b0 + clouds_per_step)
        for r0 in range(0, m, rows):
            r1 = min(m, r0 + rows)
            dist = buffer[: (b1 - b0) * (r1 - r0) * n].view(b1 - b0, r1 - r0, n)
            torch.bmm(queries[b0:b1, r0:r1], points_t[b0:b1], out=dist)
            dist.mul_(-2.0).add_(points_sq[b0:b1])
            out[b0:b1, r0:r1] = dist.topk(kc, dim=2, largest=False, sorted=True).indices
    return out


def _blocks(size: int, block: int) -> range:
    return range(0, size, block)


def _torch_knn(
    points: torch.Tensor,
    queries: torch.Tensor,
    ptr_p: list[int],
    ptr_q: list[int],
    kcs: list[int],
    block: int,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    points = points.detach()
    queries = queries.detach()
    sizes_p, sizes_q = split_sizes(ptr_p), split_sizes(ptr_q)
    active = [b for b, m in enumerate(sizes_q) if m > 0]
    uniform = (
        len(active) == len(sizes_q)
        and len({sizes_p[b] for b in active}) == 1
        and len({sizes_q[b] for b in active}) == 1
        and len({kcs[b] for b in active}) == 1
    )
    if uniform and len(active) > 1 and queries.shape[0] <= block:
        # Equal-sized clouds (the common training batch) go through one batched matmul.
        n, m, kc = sizes_p[0], sizes_q[0], kcs[0]
        local = _torch_knn_dense(points.reshape(-1, n, points.shape[1]), queries.reshape(-1, m, queries.shape[1]), kc)
        offsets = torch.as_tensor(ptr_p[:-1], device=points.device).view(-1, 1, 1)
        for b, candidates in enumerate((local + offsets).unbind(0)):
            yield b, 0, candidates
        return
    for b in active:
        cloud = points[ptr_p[b] : ptr_p[b + 1]].unsqueeze(0)
        for q0 in _blocks(sizes_q[b], block):
            q = queries[ptr_q[b] + q0 : min(ptr_q[b + 1], ptr_q[b] + q0 + block)].unsqueeze(0)
            yield b, q0, _torch_knn_dense(cloud, q, kcs[b])[0] + ptr_p[b]


def _torch_cluster_inputs(points: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Detached ``points (N, D)`` and ``queries (M, D)`` in a dtype torch_cluster accepts.

    torch_cluster's kernels take float32 / float64 only; half precision is searched in float32
    (distances are recomputed in the input dtype afterwards anyway).
    """
    x, y = points.detach(), queries.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x, y = x.float(), y.float()
    return x, y


def _torch_cluster_candidates(x: torch.Tensor, y: torch.Tensor, kc: int, batch_x, batch_y) -> torch.Tensor:  # noqa: ANN001
    """``(M, kc)`` candidate indices into ``x`` for the rows of ``y``, ordered by query."""
    import torch_cluster

    edge = torch_cluster.knn(x, y, kc, batch_x, batch_y, num_workers=max(1, torch.get_num_threads()))
    row, col = edge[0], edge[1]
    if row.numel() != y.shape[0] * kc:
        msg = f"torch_cluster.knn returned {row.numel()} edges, expected {y.shape[0] * kc}."
        raise RuntimeError(msg)
    order = torch.sort(row, stable=True).indices
    return col[order].view(y.shape[0], kc)


def _torch_cluster_knn(
    points: torch.Tensor,
    queries: torch.Tensor,
    ptr_p: list[int],
    ptr_q: list[int],
    kcs: list[int],
    batch_points: torch.Tensor | None,
    batch_queries: torch.Tensor | None,
    block: int,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    x, y = _torch_cluster_inputs(points, queries)
    sizes_q = split_sizes(ptr_q)
    if y.shape[0] <= block:
        # One call for every cloud of the batch.
        kc = min(kc for kc, m in zip(kcs, sizes_q, strict=True) if m > 0)
        candidates = _torch_cluster_candidates(
            x,
            y,
            kc,
            None if batch_points is None else batch_points.long(),
            None if batch_queries is None else batch_queries.long(),
        )
        for b in range(len(ptr_q) - 1):
            yield b, 0, candidates[ptr_q[b] : ptr_q[b + 1]]
        return
    for b, m in enumerate(sizes_q):
        cloud = x[ptr_p[b] : ptr_p[b + 1]]
        for q0 in _blocks(m, block):
            q = y[ptr_q[b] + q0 : min(ptr_q[b + 1], ptr_q[b] + q0 + block)]
            yield b, q0, _torch_cluster_candidates(cloud, q, kcs[b], None, None) + ptr_p[b]


def _kdtree_knn(
    library: str,
    points: torch.Tensor,
    queries: torch.Tensor,
    ptr_p: list[int],
    ptr_q: list[int],
    kcs: list[int],
    block: int,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    points_np = points.detach().cpu().numpy()
    queries_np = queries.detach().cpu().numpy()
    if library == "pykdtree" and points_np.dtype not in (np.float32, np.float64):
        points_np, queries_np = points_np.astype(np.float32), queries_np.astype(np.float32)
    for b in range(len(ptr_q) - 1):
        m = ptr_q[b + 1] - ptr_q[b]
        if m == 0:
            continue
        p = np.ascontiguousarray(points_np[ptr_p[b] : ptr_p[b + 1]])
        if library == "scipy":
            from scipy.spatial import cKDTree

            tree = cKDTree(p)
        else:
            from pykdtree.kdtree import KDTree

            tree = KDTree(p)
        for q0 in _blocks(m, block):
            q = np.ascontiguousarray(queries_np[ptr_q[b] + q0 : ptr_q[b] + min(m, q0 + block)])
            _, index = tree.query(q, k=kcs[b], workers=-1) if library == "scipy" else tree.query(q, k=kcs[b])
            index = np.asarray(index, dtype=np.int64).reshape(q.shape[0], kcs[b]) + ptr_p[b]
            yield b, q0, torch.from_numpy(index).to(points.device)


@torch.no_grad()
def _exact_knn_rows(cloud: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    """Brute-force kNN with exact (difference-based) distances and lowest-index tie-breaking."""
    n = cloud.shape[0]
    rows = max(1, _chunk_elements(cloud.device) // max(n * cloud.shape[1], 1))
    out = []
    for r0 in range(0, queries.shape[0], rows):
        dist = _sq_dist(queries[r0 : r0 + rows].unsqueeze(1), cloud.unsqueeze(0))
        out.append(dist.sort(dim=1, stable=True).indices[:, :k])
    return torch.cat(out)


def _select_k(
    points: torch.Tensor,
    queries: torch.Tensor,
    candidates: torch.Tensor,
    k: int,
    cloud_start: int,
    cloud_end: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact re-ranking of backend candidates; returns (index (m, k), sq_dist (m, k))."""
    sq = _sq_dist(points[candidates], queries.unsqueeze(1))
    candidates, sq = _sort_by_distance_then_index(candidates, sq)
    num_candidates = candidates.shape[1]
    if num_candidates > k and cloud_end - cloud_start > num_candidates:
        # The k-th distance is shared up to the last candidate: other points outside the
        # candidate list may tie too and have a lower index, so settle these rows exactly.
        tied = (sq[:, k - 1] == sq[:, -1]).nonzero().flatten()
        if tied.numel():
            exact = _exact_knn_rows(points[cloud_start:cloud_end].detach(), queries[tied].detach(), k) + cloud_start
            candidates = candidates.clone()
            candidates[tied, :k] = exact
            sq = sq.clone()
            sq[tied, :k] = _sq_dist(points[exact], queries[tied].unsqueeze(1))
    return candidates[:, :k], sq[:, :k]


def _paired_ptrs_same_device(
    points: torch.Tensor,
    queries: torch.Tensor,
    batch_points: torch.Tensor | None,
    batch_queries: torch.Tensor | None,
) -> tuple[list[int], list[int]]:
    """Cloud offsets ``(ptr_p, ptr_q)`` (``B + 1`` each) of a points/queries pair on one device.

    Shared by kNN and radius search, which both pair the clouds of ``points (N, D)`` and
    ``queries (M, D)`` through their sorted batch vectors ``(N,)`` / ``(M,)`` (or None).

    Raises:
        ValueError: mismatched / unsorted batches, or points and queries on different devices.
    """
    ptr_p, ptr_q = paired_ptrs(points.shape[0], queries.shape[0], batch_points, batch_queries)
    if queries.device != points.device:
        msg = f"points ({points.device}) and queries ({queries.device}) must be on the same device."
        raise ValueError(msg)
    return ptr_p, ptr_q


def _check_knn(
    points: torch.Tensor,
    queries: torch.Tensor,
    k: int,
    batch_points: torch.Tensor | None,
    batch_queries: torch.Tensor | None,
) -> tuple[int, list[int], list[int]]:
    """Validated ``(k, ptr_p, ptr_q)`` of a kNN call."""
    check_points(points, "points")
    check_points(queries, "queries", dim=points.shape[1])
    k = check_positive_int(k, "k")
    ptr_p, ptr_q = _paired_ptrs_same_device(points, queries, batch_points, batch_queries)
    for b, (n, m) in enumerate(zip(split_sizes(ptr_p), split_sizes(ptr_q), strict=True)):
        if m and n < k:
            msg = (
                f"Cloud {b} has {n} points but k={k} neighbours were requested for its {m} queries. "
                "Fix: lower k or drop clouds smaller than k."
            )
            raise ValueError(msg)
    return k, ptr_p, ptr_q


def knn_blocks(
    points: torch.Tensor,
    queries: torch.Tensor,
    k: int,
    batch_points: torch.Tensor | None = None,
    batch_queries: torch.Tensor | None = None,
    *,
    backend: str = "auto",
    block: int | None = None,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """:func:`knn` for consecutive blocks of at most ``block`` queries, in query order.

    The search structure of each cloud (kd-tree) is built once; only one block's candidates exist
    at a time, so a caller that reduces each block right away (a smoothing, a score) holds memory
    proportional to the cloud, not to ``queries x k`` intermediates.

    Args:
        points, queries, k, batch_points, batch_queries, backend: as in :func:`knn`.
        block: queries per block (>= 1; None: :data:`QUERY_BLOCK`).

    Yields:
        ``(start, index (m, k) long, sq_dist (m, k))`` for queries ``start .. start + m - 1``,
        exactly the rows :func:`knn` returns for them.
    """
    k, ptr_p, ptr_q = _check_knn(points, queries, k, batch_points, batch_queries)
    block = check_positive_int(QUERY_BLOCK if block is None else block, "block")
    if queries.shape[0] == 0:
        return
    name = resolve_backend("knn", points.device, backend)
    kcs = [min(n, k + CANDIDATE_MARGIN) for n in split_sizes(ptr_p)]
    if name == "torch":
        candidates = _torch_knn(points, queries, ptr_p, ptr_q, kcs, block)
    elif name == "torch_cluster":
        candidates = _torch_cluster_knn(points, queries, ptr_p, ptr_q, kcs, batch_points, batch_queries, block)
    else:
        candidates = _kdtree_knn(name, points, queries, ptr_p, ptr_q, kcs, block)
    for b, q0, cloud_candidates in candidates:
        if cloud_candidates.shape[0] == 0:
            continue
        start = ptr_q[b] + q0
        index, sq_dist = _select_k(
            points, queries[start : start + cloud_candidates.shape[0]], cloud_candidates, k, ptr_p[b], ptr_p[b + 1]
        )
        yield start, index, sq_dist


def knn(
    points: torch.Tensor,
    queries: torch.Tensor,
    k: int,
    batch_points: torch.Tensor | None = None,
    batch_queries: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest points (of the same cloud) of every query.

    Queries are searched in blocks (:func:`knn_blocks`), so beyond the ``(M, k)`` result the
    memory held is bounded whatever the size of the clouds.

    Args:
        points: ``(N, D)`` searched points.
        queries: ``(M, D)`` query points.
        k: number of neighbours; every cloud that has queries must hold at least ``k`` points.
        batch_points: ``(N,) long`` sorted cloud id of each point, or None for a single cloud.
        batch_queries: ``(M,) long`` sorted cloud id of each query (required iff ``batch_points``).
        backend: ``"auto"``, ``"torch"``, ``"torch_cluster"``, ``"scipy"`` or ``"pykdtree"``.

    Returns:
        ``(index, sq_dist)``: ``index (M, k) long`` global indices into ``points``;
        ``sq_dist (M, k)`` squared Euclidean distances in ``points.dtype``, ascending, exact ties
        ordered by lower index (differentiable w.r.t. ``points`` and ``queries``).

    Raises:
        ValueError: malformed tensors, unsorted / mismatched batches, or a cloud with fewer than
            ``k`` points.
    """
    k, _, _ = _check_knn(points, queries, k, batch_points, batch_queries)
    blocks = knn_blocks(points, queries, k, batch_points, batch_queries, backend=backend)
    if torch.is_grad_enabled() and (points.requires_grad or queries.requires_grad):
        parts = list(blocks)
        if not parts:
            return torch.empty((0, k), dtype=torch.long, device=points.device), points.new_empty((0, k))
        return torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])
    index = torch.empty((queries.shape[0], k), dtype=torch.long, device=points.device)
    sq_dist = points.new_empty((queries.shape[0], k))
    for start, block_index, block_sq in blocks:
        index[start : start + block_index.shape[0]] = block_index
        sq_dist[start : start + block_index.shape[0]] = block_sq
    return index, sq_dist


def knn_graph(
    points: torch.Tensor,
    k: int,
    batch: torch.Tensor | None = None,
    *,
    loop: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """The ``k`` nearest neighbours of every point within its own cloud.

    Args:
        points: ``(N, D)``.
        k: neighbours per point.
        batch: ``(N,) long`` sorted cloud ids, or None.
        loop: if False (default) a point is not its own neighbour (its duplicates still can be).
        backend: see :func:`knn`.

    Returns:
        ``(N, k) long`` global neighbour indices, nearest first, ties by lower index.
    """
    k = check_positive_int(k, "k")
    check_points(points, "points")
    if loop:
        return knn(points, points, k, batch, batch, backend=backend)[0]
    check_batch(batch, points.shape[0])
    for b, n in enumerate(split_sizes(cloud_ptr(batch, points.shape[0]))):
        if 0 < n < k + 1:
            msg = f"Cloud {b} has {n} points; knn_graph without self loops needs k+1={k + 1}. Fix: lower k."
            raise ValueError(msg)
    index, _ = knn(points, points, k + 1, batch, batch, backend=backend)
    self_index = torch.arange(points.shape[0], device=points.device).unsqueeze(1)
    is_self = index == self_index
    # With more than k duplicates of a point sharing distance 0, self may rank past k+1 and then
    # the (k+1)-th entry is the one to drop.
    missing_self = ~is_self.any(dim=1)
    is_self[:, -1] |= missing_self
    return index[~is_self].view(points.shape[0], k)


# ---------------------------------------------------------------------------------------------
# Radius search
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def _torch_radius(
    points: torch.Tensor, queries: torch.Tensor, r: float, ptr_p: list[int], ptr_q: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    points, queries = points.detach(), queries.detach()
    rows_all, cols_all = [], []
    budget = _chunk_elements(points.device)
    for b in range(len(ptr_q) - 1):
        p = points[ptr_p[b] : ptr_p[b + 1]]
        q = queries[ptr_q[b] : ptr_q[b + 1]]
        if p.shape[0] == 0 or q.shape[0] == 0:
            continue
        center = p.mean(0)
        p = p - center
        q = q - center
        p_sq = p.pow(2).sum(-1)
        q_sq = q.pow(2).sum(-1)
        # The |q|^2 + |p|^2 - 2 q.p expansion loses ~eps * (|p|^2 + |q|^2); widen the threshold by
        # that much and let the exact filter decide.
        eps = torch.finfo(p.dtype).eps
        slack = 8 * eps * (float(p_sq.max()) + float(q_sq.max())) + _RADIUS_SLACK * r * r
        threshold = r * r + slack
        rows = min(q.shape[0], max(1, budget // p.shape[0]))
        p_t = p.t().contiguous()
        # Reused buffers, see _torch_knn_dense.
        dist_buffer = torch.empty(rows * p.shape[0], dtype=p.dtype, device=p.device)
        mask_buffer = torch.empty(rows * p.shape[0], dtype=torch.bool, device=p.device)
        for r0 in range(0, q.shape[0], rows):
            r1 = min(q.shape[0], r0 + rows)
            dist = dist_buffer[: (r1 - r0) * p.shape[0]].view(r1 - r0, p.shape[0])
            mask = mask_buffer[: (r1 - r0) * p.shape[0]].view(r1 - r0, p.shape[0])
            torch.mm(q[r0:r1], p_t, out=dist)
            dist.mul_(-2.0).add_(p_sq.unsqueeze(0)).add_(q_sq[r0:r1].unsqueeze(1))
            torch.le(dist, threshold, out=mask)
            hit = mask.nonzero()
            rows_all.append(hit[:, 0] + r0 + ptr_q[b])
            cols_all.append(hit[:, 1] + ptr_p[b])
    if not rows_all:
        empty = torch.empty(0, dtype=torch.long, device=points.device)
        return empty, empty
    return torch.cat(rows_all), torch.cat(cols_all)


@torch.no_grad()
def _torch_cluster_radius(
    points: torch.Tensor,
    queries: torch.Tensor,
    r: float,
    batch_points: torch.Tensor | None,
    batch_queries: torch.Tensor | None,
    start_cap: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    import torch_cluster

    x, y = _torch_cluster_inputs(points, queries)
    bx = None if batch_points is None else batch_points.long()
    by = None if batch_queries is None else batch_queries.long()
    r_search = _search_radius(r)
    pending = torch.arange(y.shape[0], device=y.device)
    cap = max(1, start_cap)
    rows_all, cols_all = [], []
    # torch_cluster truncates at max_num_neighbors without saying so; re-query saturated queries
    # with a larger cap until none is saturated, so nothing is dropped.
    while pending.numel():
        edge = torch_cluster.radius(
            x,
            y[pending],
            r_search,
            bx,
            None if by is None else by[pending],
            max_num_neighbors=cap,
            num_workers=max(1, torch.get_num_threads()),
        )
        counts = torch.bincount(edge[0], minlength=pending.numel())
        saturated = counts >= cap
        keep = ~saturated[edge[0]]
        rows_all.append(pending[edge[0][keep]])
        cols_all.append(edge[1][keep])
        pending = pending[saturated]
        cap = min(cap * 4, x.shape[0] + 1)
    return torch.cat(rows_all), torch.cat(cols_all)


def _scipy_radius(
    points: torch.Tensor, queries: torch.Tensor, r: float, ptr_p: list[int], ptr_q: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    from scipy.spatial import cKDTree

    points_np = points.detach().cpu().numpy().astype(np.float64, copy=False)
    queries_np = queries.detach().cpu().numpy().astype(np.float64, copy=False)
    r_search = _search_radius(r)
    rows_all, cols_all = [], []
    for b in range(len(ptr_q) - 1):
        p = points_np[ptr_p[b] : ptr_p[b + 1]]
        q = queries_np[ptr_q[b] : ptr_q[b + 1]]
        if len(p) == 0 or len(q) == 0:
            continue
        pairs = cKDTree(q).sparse_distance_matrix(cKDTree(p), r_search, output_type="ndarray")
        rows_all.append(pairs["i"].astype(np.int64) + ptr_q[b])
        cols_all.append(pairs["j"].astype(np.int64) + ptr_p[b])
    if not rows_all:
        empty = torch.empty(0, dtype=torch.long, device=points.device)
        return empty, empty
    rows = torch.from_numpy(np.concatenate(rows_all)).to(points.device)
    cols = torch.from_numpy(np.concatenate(cols_all)).to(points.device)
    return rows, cols


def _rank_in_group(group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``(E,) long`` position of each entry inside its group (0 for the first of each query).

    Args:
        group: ``(E,) long`` sorted group (query) of each edge, values in ``[0, num_groups)``.
        num_groups: number of groups (queries), so that trailing empty groups count.

    Returns:
        ``(E,) long``; ``rank < m`` keeps the first ``m`` edges of every group (the nearest, as
        edges are sorted by distance within a group).
    """
    counts = torch.bincount(group, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(group.numel(), device=group.device) - starts[group]


def _finish_radius(
    points: torch.Tensor,
    queries: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    r: float,
    max_num_neighbors: int | None,
) -> torch.Tensor:
    sq = _sq_dist(points.detach()[cols], queries.detach()[rows])
    inside = sq <= r * r
    rows, cols, sq = rows[inside], cols[inside], sq[inside]
    # Lexicographic order (query, distance, point index) via stable sorts, least significant first.
    order = torch.argsort(cols)
    rows, cols, sq = rows[order], cols[order], sq[order]
    order = torch.sort(sq, stable=True).indices
    rows, cols = rows[order], cols[order]
    order = torch.sort(rows, stable=True).indices
    rows, cols = rows[order], cols[order]
    if max_num_neighbors is not None and rows.numel():
        keep = _rank_in_group(rows, queries.shape[0]) < max_num_neighbors
        rows, cols = rows[keep], cols[keep]
    return torch.stack([rows, cols])


def radius(
    points: torch.Tensor,
    queries: torch.Tensor,
    r: float,
    batch_points: torch.Tensor | None = None,
    batch_queries: torch.Tensor | None = None,
    *,
    max_num_neighbors: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """All points (of the same cloud) within distance ``r`` (inclusive) of each query.

    Args:
        points: ``(N, D)``.
        queries: ``(M, D)``.
        r: search radius (> 0); a point at exactly distance ``r`` is included.
        batch_points: ``(N,) long`` sorted cloud ids, or None.
        batch_queries: ``(M,) long`` sorted cloud ids (required iff ``batch_points``).
        max_num_neighbors: None returns every neighbour (no truncation); an int keeps the nearest
            ``max_num_neighbors`` per query.
        backend: ``"auto"``, ``"torch"``, ``"torch_cluster"`` or ``"scipy"``.

    Returns:
        ``edge_index (2, E) long``: row 0 the query index, row 1 the global point index, sorted by
        query, then ascending distance, then point index.
    """
    check_points(points, "points")
    check_points(queries, "queries", dim=points.shape[1])
    if not isinstance(r, (int, float)) or isinstance(r, bool) or not r > 0 or not np.isfinite(r):
        msg = f"r must be a positive finite number, got {r!r}."
        raise ValueError(msg)
    r = float(r)
    if max_num_neighbors is not None:
        max_num_neighbors = check_positive_int(max_num_neighbors, "max_num_neighbors")
    ptr_p, ptr_q = _paired_ptrs_same_device(points, queries, batch_points, batch_queries)
    name = resolve_backend("radius", points.device, backend)
    if points.shape[0] == 0 or queries.shape[0] == 0:
        return torch.empty((2, 0), dtype=torch.long, device=points.device)
    if name == "torch":
        rows, cols = _torch_radius(points, queries, r, ptr_p, ptr_q)
    elif name == "torch_cluster":
        start_cap = 64 if max_num_neighbors is None else max_num_neighbors + CANDIDATE_MARGIN
        rows, cols = _torch_cluster_radius(points, queries, r, batch_points, batch_queries, start_cap)
    else:
        rows, cols = _scipy_radius(points, queries, r, ptr_p, ptr_q)
    return _finish_radius(points, queries, rows, cols, r, max_num_neighbors)


def radius_graph(
    points: torch.Tensor,
    r: float,
    batch: torch.Tensor | None = None,
    *,
    loop: bool = False,
    max_num_neighbors: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Radius graph of each cloud: ``edge_index (2, E)`` with row 0 = centre, row 1 = neighbour.

    Same ordering / truncation rules as :func:`radius`; self edges are dropped unless ``loop``
    (``max_num_neighbors`` counts neighbours after that removal).
    """
    check_points(points, "points")
    check_batch(batch, points.shape[0])
    edge = radius(points, points, r, batch, batch, backend=backend)
    if not loop:
        edge = edge[:, edge[0] != edge[1]]
    if max_num_neighbors is not None and edge.shape[1]:
        max_num_neighbors = check_positive_int(max_num_neighbors, "max_num_neighbors")
        edge = edge[:, _rank_in_group(edge[0], points.shape[0]) < max_num_neighbors]
    return edge
