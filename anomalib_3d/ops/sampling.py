"""Point samplers: farthest point (FPS), random, voxel and IMRNet's geometry-aware sampling (GPS).

All samplers take ``points (N, 3)`` with an optional sorted ``batch (N,) long`` vector and return
``(S_total,) long`` *global* indices into ``points``, cloud after cloud in batch order.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from anomalib_3d.ops.backend import (
    check_batch,
    check_cloud_sizes,
    check_points,
    check_positive_int,
    cloud_ptr,
    resolve_backend,
    split_sizes,
)
from anomalib_3d.ops.geometry import normals_from_neighbors
from anomalib_3d.ops.neighbors import knn

__all__ = [
    "farthest_point_sample",
    "geometry_aware_sample",
    "geometry_change_rate",
    "random_sample",
    "voxel_sample",
]


def _sample_counts(sizes: list[int], num_samples: int | None, ratio: float | None) -> list[int]:
    if (num_samples is None) == (ratio is None):
        msg = "Give exactly one of num_samples or ratio."
        raise ValueError(msg)
    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            msg = f"ratio must be in (0, 1], got {ratio!r}."
            raise ValueError(msg)
        return [math.ceil(ratio * n) for n in sizes]
    num_samples = check_positive_int(num_samples, "num_samples")
    check_cloud_sizes(sizes, num_samples, f" but num_samples={num_samples} were requested",
                      "lower num_samples or drop/upsample small clouds.")
    return [num_samples] * len(sizes)


def _checked_counts(
    points: torch.Tensor, batch: torch.Tensor | None, num_samples: int | None, ratio: float | None
) -> tuple[list[int], list[int], list[int]]:
    """Validated ``(ptr, sizes, counts)`` of a per-cloud sampling call (FPS, random sampling).

    Args:
        points: ``(N, D)``; batch: ``(N,) long`` sorted cloud ids, or None.
        num_samples / ratio: exactly one of them (see :func:`_sample_counts`).

    Returns:
        ``ptr`` (``B + 1`` cloud offsets), ``sizes`` (``B`` points per cloud) and ``counts``
        (``B`` samples per cloud).
    """
    check_points(points, "points")
    check_batch(batch, points.shape[0])
    ptr = cloud_ptr(batch, points.shape[0])
    sizes = split_sizes(ptr)
    return ptr, sizes, _sample_counts(sizes, num_samples, ratio)


def _start_offsets(sizes: list[int], random_start: bool, generator: torch.Generator | None) -> list[int]:
    if not random_start:
        return [0] * len(sizes)
    return [int(torch.randint(n, (1,), generator=generator)) if n else 0 for n in sizes]


# ---------------------------------------------------------------------------------------------
# FPS backends. Each takes cloud offsets, per-cloud sample counts and per-cloud start offsets
# and returns per-cloud *local* index tensors (CPU or points' device).
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def _torch_fps(points: torch.Tensor, ptr: list[int], counts: list[int], starts: list[int]) -> list[torch.Tensor]:
    sizes = split_sizes(ptr)
    active = [b for b, c in enumerate(counts) if c > 0]
    result = [torch.empty(0, dtype=torch.long, device=points.device) for _ in counts]
    if not active:
        return result
    dim = points.shape[1]
    n_max = max(sizes[b] for b in active)
    s_max = max(counts[b] for b in active)
    num = len(active)
    # (B, D, n) layout: every coordinate is a contiguous row, which makes the per-iteration
    # elementwise work several times faster on CPU than (n, D) rows.
    coords = points.new_zeros((num, dim, n_max))
    valid = torch.zeros((num, n_max), dtype=torch.bool, device=points.device)
    for row, b in enumerate(active):
        coords[row, :, : sizes[b]] = points[ptr[b] : ptr[b + 1]].t()
        valid[row, : sizes[b]] = True
    min_dist = torch.full((num, n_max), float("inf"), dtype=points.dtype, device=points.device)
    min_dist.masked_fill_(~valid, float("-inf"))
    rows = torch.arange(num, device=points.device)
    farthest = torch.as_tensor([starts[b] for b in active], dtype=torch.long, device=points.device)
    picked = torch.empty((num, s_max), dtype=torch.long, device=points.device)
    dist = torch.empty((num, n_max), dtype=points.dtype, device=points.device)
    tmp = torch.empty_like(dist)
    for i in range(s_max):
        picked[:, i] = farthest
        center = coords[rows, :, farthest]  # (B, D)
        torch.sub(coords[:, 0], center[:, 0:1], out=dist)
        dist.square_()
        for j in range(1, dim):
            torch.sub(coords[:, j], center[:, j : j + 1], out=tmp)
            dist.add_(tmp.square_())
        torch.minimum(min_dist, dist, out=min_dist)
        # Chosen points are pushed below every candidate so duplicates are taken before repeats.
        min_dist[rows, farthest] = -1.0
        farthest = min_dist.argmax(dim=1)  # first maximum = lowest index among ties
    for row, b in enumerate(active):
        result[b] = picked[row, : counts[b]]
    return result


@torch.no_grad()
def _torch_cluster_fps(
    points: torch.Tensor, ptr: list[int], counts: list[int], starts: list[int]
) -> list[torch.Tensor]:
    import torch_cluster

    sizes = split_sizes(ptr)
    x = points.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    order = None
    if any(starts):
        # torch_cluster only starts at a cloud's first point: move each start there, keeping the
        # other points in order so lowest-index tie-breaking is unchanged.
        parts = []
        for b, start in enumerate(starts):
            base = torch.arange(ptr[b], ptr[b + 1])
            parts.append(torch.cat([base[start : start + 1], base[:start], base[start + 1 :]]))
        order = torch.cat(parts).to(x.device)
        x = x[order]
    # One ratio per cloud, slightly below count / n so that its ceil(n * ratio) == count exactly.
    ratio = torch.tensor(
        [(c - 0.5) / n if n else 0.0 for c, n in zip(counts, sizes, strict=True)], dtype=x.dtype, device=x.device
    )
    ptr_tensor = torch.tensor(ptr, dtype=torch.long, device=x.device)
    picked = torch_cluster.fps(x, None, ratio, random_start=False, ptr=ptr_tensor)
    if picked.numel() != sum(counts):
        msg = f"torch_cluster.fps returned {picked.numel()} samples, expected {sum(counts)}."
        raise RuntimeError(msg)
    if order is not None:
        picked = order[picked]
    return [part - ptr[b] for b, part in enumerate(picked.split(counts))]


def _kdline_height(n: int) -> int:
    # Tree height of fpsample's bucket FPS: ~512 points per bucket (capped at 2**8 buckets) was
    # fastest for 1024 samples from 16k-500k points on 2 CPU threads (see benchmarks/ops.py).
    return max(1, min(8, int(math.log2(max(n, 2))) - 9))


def _kdline_internal_position(cloud: np.ndarray, target: int, height: int) -> int:
    """Position of point ``target`` after fpsample's kd-line tree build reorders the cloud.

    fpsample 1.0.x applies ``start_idx`` of the bucket FPS to the array *after* its kd-tree build
    has reordered it in place, so ``start_idx=0`` does not start at point 0. The build splits each
    node at the float32 mean (sequential sum) of its widest bounding-box axis with a Hoare
    partition; only the segment holding ``target`` is replayed here (O(2n)). The caller checks the
    first returned sample and falls back to vanilla FPS if this replay ever disagrees.
    """
    columns = np.ascontiguousarray(cloud.T)  # (D, n): each axis contiguous for fast reductions
    order = np.arange(cloud.shape[0])
    position = target  # current position of the target inside the segment
    offset = 0
    depth = 0
    while depth != height and order.shape[0] != 1:
        count = order.shape[0]
        split_dim = 0
        best = np.float32(0)
        for d in range(columns.shape[0]):
            span = columns[d].max() - columns[d].min()
            if span > best:  # strict: the first widest axis wins, as in the C++ build
                split_dim, best = d, span
        values = columns[split_dim]
        mean = np.float32(np.add.accumulate(values, dtype=np.float32)[-1]) / np.float32(count)
        left = values < mean
        num_left = int(np.count_nonzero(left))
        split = min(max(num_left, 1), count - 1)
        # Hoare partition: the i-th right-side value from the front swaps with the i-th left-side
        # value from the back; only the child holding the target is materialised.
        front_right = np.flatnonzero(~left[:num_left])
        back_left = np.flatnonzero(left[num_left:])[::-1] + num_left
        if position < num_left and not left[position]:
            position = int(back_left[np.searchsorted(front_right, position)])
        elif position >= num_left and left[position]:
            position = int(front_right[np.flatnonzero(back_left == position)[0]])
        if position < split:
            child = slice(0, split)
            child_columns, child_order = columns[:, child].copy(), order[child].copy()
            child_columns[:, front_right] = columns[:, back_left]
            child_order[front_right] = order[back_left]
        else:
            child = slice(split, count)
            child_columns, child_order = columns[:, child].copy(), order[child].copy()
            child_columns[:, back_left - split] = columns[:, front_right]
            child_order[back_left - split] = order[front_right]
            offset += split
            position -= split
        columns, order = child_columns, child_order
        depth += 1
    return offset + position


def _fpsample_fps(points: torch.Tensor, ptr: list[int], counts: list[int], starts: list[int]) -> list[torch.Tensor]:
    import fpsample

    points_np = points.detach().cpu().numpy().astype(np.float32, copy=False)
    result = []
    for b, (count, start) in enumerate(zip(counts, starts, strict=True)):
        cloud = np.ascontiguousarray(points_np[ptr[b] : ptr[b + 1]])
        n = cloud.shape[0]
        if count == 0:
            index = np.empty(0, dtype=np.int64)
        elif count == 1:
            index = np.array([start], dtype=np.int64)
        else:
            height = _kdline_height(n)
            index = None
            if 2**height <= n:
                internal = _kdline_internal_position(cloud, start, height)
                index = fpsample.bucket_fps_kdline_sampling(cloud, count, height, start_idx=internal)
                if int(index[0]) != start:
                    warnings.warn(
                        "fpsample's bucket FPS did not start where expected; using its vanilla FPS instead.",
                        RuntimeWarning,
                        stacklevel=4,
                    )
                    index = None
            if index is None:
                index = fpsample.fps_sampling(cloud, count, start_idx=start)
        result.append(torch.from_numpy(np.asarray(index, dtype=np.int64)))
    return result


def _fps_local(
    points: torch.Tensor, ptr: list[int], counts: list[int], starts: list[int], backend: str
) -> list[torch.Tensor]:
    name = resolve_backend("fps", points.device, backend)
    if name == "torch":
        return _torch_fps(points, ptr, counts, starts)
    if name == "torch_cluster":
        return _torch_cluster_fps(points, ptr, counts, starts)
    return _fpsample_fps(points, ptr, counts, starts)


def _to_global(local: list[torch.Tensor], ptr: list[int], device: torch.device) -> torch.Tensor:
    parts = [index.to(device) + ptr[b] for b, index in enumerate(local)]
    if not parts:
        return torch.empty(0, dtype=torch.long, device=device)
    return torch.cat(parts)


def farthest_point_sample(
    points: torch.Tensor,
    num_samples: int | None = None,
    batch: torch.Tensor | None = None,
    *,
    ratio: float | None = None,
    random_start: bool = False,
    generator: torch.Generator | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Farthest point sampling, cloud by cloud.

    The first sample of a cloud is its first point (``random_start=False``) or a point drawn
    uniformly with ``generator`` (a CPU ``torch.Generator``). Each next sample is the point whose
    squared distance to the already chosen samples is largest; among exactly equal distances the
    lowest index wins (``"torch"`` and ``"torch_cluster"``; fpsample's kd-tree buckets may settle
    exact ties differently - with real-valued scans that does not occur). Already chosen points are
    never chosen again, so duplicates are taken before any repeat.

    Args:
        points: ``(N, D)``.
        num_samples: samples per cloud; must not exceed any cloud's size.
        batch: ``(N,) long`` sorted cloud ids, or None.
        ratio: alternative to ``num_samples``: ``ceil(ratio * n_b)`` samples from cloud b.
        random_start: draw the start point instead of taking the first point.
        generator: random source for ``random_start``.
        backend: ``"auto"``, ``"torch"``, ``"torch_cluster"`` or ``"fpsample"``.

    Returns:
        ``(S_total,) long`` global indices, cloud after cloud, in selection order.
    """
    ptr, sizes, counts = _checked_counts(points, batch, num_samples, ratio)
    starts = _start_offsets(sizes, random_start, generator)
    return _to_global(_fps_local(points, ptr, counts, starts, backend), ptr, points.device)


def random_sample(
    points: torch.Tensor,
    num_samples: int | None = None,
    batch: torch.Tensor | None = None,
    *,
    ratio: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Uniform sampling without replacement, cloud by cloud (IMRNet Table 4 "RS").

    Args:
        points: ``(N, D)``.
        num_samples / ratio: as in :func:`farthest_point_sample`.
        batch: ``(N,) long`` sorted cloud ids, or None.
        generator: CPU ``torch.Generator`` for reproducible draws.

    Returns:
        ``(S_total,) long`` global indices, cloud after cloud, in draw order.
    """
    ptr, sizes, counts = _checked_counts(points, batch, num_samples, ratio)
    local = [torch.randperm(n, generator=generator)[:count] for n, count in zip(sizes, counts, strict=True)]
    return _to_global(local, ptr, points.device)


# ---------------------------------------------------------------------------------------------
# Voxel sampling
# ---------------------------------------------------------------------------------------------

# Keys pack three voxel coordinates of at most 2**20 cells each into one int64.
_VOXEL_BITS = 20


def _voxel_keys(cloud: torch.Tensor, origin: torch.Tensor, voxel_size: float) -> torch.Tensor:
    cells = torch.floor((cloud - origin) / voxel_size).long()
    key = torch.zeros(cloud.shape[0], dtype=torch.long, device=cloud.device)
    for d in range(cloud.shape[1]):
        key = (key << _VOXEL_BITS) | cells[:, d]
    return key


def _voxel_representatives(cloud: torch.Tensor, voxel_size: float, num_keep: int | None) -> torch.Tensor:
    """Local index of the point nearest each occupied voxel's centroid (lowest index on ties)."""
    origin = cloud.min(dim=0).values
    _, inverse, counts = torch.unique(_voxel_keys(cloud, origin, voxel_size), return_inverse=True, return_counts=True)
    num_voxels = counts.shape[0]
    sums = torch.zeros((num_voxels, cloud.shape[1]), dtype=cloud.dtype, device=cloud.device)
    sums.index_add_(0, inverse, cloud)
    centroids = sums / counts.unsqueeze(1).to(cloud.dtype)
    sq = (cloud - centroids[inverse]).pow(2).sum(1)
    best = torch.full((num_voxels,), float("inf"), dtype=cloud.dtype, device=cloud.device)
    best.scatter_reduce_(0, inverse, sq, reduce="amin")
    local = torch.arange(cloud.shape[0], device=cloud.device)
    candidate = torch.where(sq == best[inverse], local, torch.full_like(local, cloud.shape[0]))
    rep = torch.full((num_voxels,), cloud.shape[0], dtype=torch.long, device=cloud.device)
    rep.scatter_reduce_(0, inverse, candidate, reduce="amin")
    if num_keep is not None and num_voxels > num_keep:
        # Keep the most populated voxels (they carry most of the surface); ties keep the voxel
        # whose representative has the lower index.
        order = torch.argsort(rep)
        order = order[torch.sort(counts[order], descending=True, stable=True).indices]
        rep = rep[order[:num_keep]]
    return rep.sort().values


def _voxel_size_for(cloud: torch.Tensor, num_samples: int, max_iterations: int) -> float:
    extent = float((cloud.max(dim=0).values - cloud.min(dim=0).values).max())
    if num_samples == 1:
        return 2 * extent + 1.0
    too_few = (
        f"A cloud has fewer than num_samples={num_samples} distinct point locations, so voxel sampling "
        "cannot return that many. Fix: lower num_samples or remove duplicate points."
    )
    if extent == 0:
        raise ValueError(too_few)
    low = extent / float(2**_VOXEL_BITS - 2)  # finest grid the key packing allows
    origin = cloud.min(dim=0).values

    def occupied(size: float) -> int:
        return int(torch.unique(_voxel_keys(cloud, origin, size)).numel())

    if occupied(low) < num_samples:
        raise ValueError(too_few)
    high = 2 * extent
    # Occupancy falls (almost) monotonically with voxel size: bisect in log space for the largest
    # size still giving >= num_samples voxels, stopping early on an exact hit.
    for _ in range(max_iterations):
        mid = math.sqrt(low * high)
        count = occupied(mid)
        if count == num_samples:
            return mid
        if count > num_samples:
            low = mid
        else:
            high = mid
        if high / low < 1 + 1e-6:
            break
    return low


def voxel_sample(
    points: torch.Tensor,
    voxel_size: float | None = None,
    batch: torch.Tensor | None = None,
    *,
    num_samples: int | None = None,
    max_iterations: int = 40,
) -> torch.Tensor:
    """Voxel-grid down-sampling returning real points (IMRNet Table 4 "Voxel").

    Each cloud is cut into cubes of side ``voxel_size`` anchored at its bounding-box minimum; each
    occupied cube contributes the point nearest the centroid of its points (lowest index on ties).

    With ``num_samples`` instead of ``voxel_size`` the side is found per cloud by bisection (log
    scale, up to ``max_iterations`` steps) as the largest size giving at least ``num_samples``
    occupied voxels; if no size gives exactly ``num_samples``, the surplus voxels holding the fewest
    points are dropped, so exactly ``num_samples`` indices come back per cloud.

    Args:
        points: ``(N, 3)``.
        voxel_size: cube side (> 0); exclusive with ``num_samples``.
        batch: ``(N,) long`` sorted cloud ids, or None.
        num_samples: target count per cloud.
        max_iterations: bisection steps.

    Returns:
        ``(S_total,) long`` global indices, ascending within each cloud.
    """
    check_points(points, "points", dim=3)
    check_batch(batch, points.shape[0])
    if (voxel_size is None) == (num_samples is None):
        msg = "Give exactly one of voxel_size or num_samples."
        raise ValueError(msg)
    if voxel_size is not None and (isinstance(voxel_size, bool) or not voxel_size > 0):
        msg = f"voxel_size must be positive, got {voxel_size!r}."
        raise ValueError(msg)
    ptr = cloud_ptr(batch, points.shape[0])
    sizes = split_sizes(ptr)
    if num_samples is not None:
        _sample_counts(sizes, num_samples, None)
    detached = points.detach()
    local = []
    for b in range(len(sizes)):
        cloud = detached[ptr[b] : ptr[b + 1]]
        if cloud.shape[0] == 0:
            local.append(torch.empty(0, dtype=torch.long, device=points.device))
            continue
        if num_samples is None:
            extent = float((cloud.max(dim=0).values - cloud.min(dim=0).values).max())
            if extent / float(voxel_size) >= 2**_VOXEL_BITS - 1:
                msg = (
                    f"voxel_size={voxel_size} is too small for a cloud of extent {extent:g} "
                    "(over 2**20 cells per axis). Fix: use a larger voxel_size."
                )
                raise ValueError(msg)
            local.append(_voxel_representatives(cloud, float(voxel_size), None))
        else:
            size = _voxel_size_for(cloud, num_samples, max_iterations)
            local.append(_voxel_representatives(cloud, size, num_samples))
    return _to_global(local, ptr, points.device)


# ---------------------------------------------------------------------------------------------
# Geometry-aware sampling (IMRNet, Sec. 4.1)
# ---------------------------------------------------------------------------------------------


def _drop_self(index: torch.Tensor, sq: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    is_self = index == torch.arange(index.shape[0], device=index.device).unsqueeze(1)
    is_self[:, -1] |= ~is_self.any(dim=1)
    keep = ~is_self
    return index[keep].view(-1, k), sq[keep].view(-1, k)


def geometry_change_rate(
    points: torch.Tensor,
    k: int = 16,
    batch: torch.Tensor | None = None,
    *,
    normals: torch.Tensor | None = None,
    curvature: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """IMRNet's per-point "rate of change" memory value (Sec. 4.1, Eqs. 1-5).

    Reading of the paper used here (its formulas are not in our copy):

    * Neighbourhood ``N(i)``: the ``k`` nearest other points (the paper says "within a radius";
      kNN keeps the operator free of a scale parameter).
    * Normal ``n_i`` (Eq. 1): least-squares plane through ``{i} + N(i)``, i.e. the smallest
      eigenvector of its covariance; curvature (Eq. 2) ``c_i = l_min / (l_1 + l_2 + l_3 + eps)``.
    * Rates between ``i`` and a neighbour ``j`` (Eqs. 3-4), both taken "with respect to the vector
      from p_i to p_j", i.e. divided by its length ``d_ij = |p_j - p_i|``:
      ``R_n(i, j) = (1 - |n_i . n_j|) / d_ij`` (sign-free, normals are unoriented) and
      ``R_c(i, j) = |c_i - c_j| / d_ij``.
    * Memory value (Eq. 5): ``V_i = mean_{j in N(i)} (R_n(i, j) + R_c(i, j))``.

    ``d_ij`` is floored at 1e-3 of point i's mean neighbour distance so exact duplicates do not
    divide by zero. ``V`` scales as 1 / length, so only its ranking within a cloud is meaningful.

    Args:
        points: ``(N, 3)``.
        k: neighbours per point (every cloud needs ``> k`` points).
        batch: ``(N,) long`` sorted cloud ids, or None.
        normals: optional ``(N, 3)`` normals to use instead of the PCA ones.
        curvature: optional ``(N,)`` curvature to use instead of the PCA one.
        backend: kNN backend.

    Returns:
        ``(N,)`` non-negative rate-of-change values in ``points.dtype``.
    """
    check_points(points, "points", dim=3)
    k = check_positive_int(k, "k")
    check_batch(batch, points.shape[0])
    for b, n in enumerate(split_sizes(cloud_ptr(batch, points.shape[0]))):
        if 0 < n <= k:
            msg = f"Cloud {b} has {n} points; geometry_change_rate with k={k} needs at least {k + 1}. Fix: lower k."
            raise ValueError(msg)
    if normals is not None and normals.shape != points.shape:
        msg = f"normals must have shape {tuple(points.shape)}, got {tuple(normals.shape)}."
        raise ValueError(msg)
    if curvature is not None and curvature.shape != points.shape[:1]:
        msg = f"curvature must have shape ({points.shape[0]},), got {tuple(curvature.shape)}."
        raise ValueError(msg)
    if points.shape[0] == 0:
        return points.new_empty((0,))
    detached = points.detach()
    index, sq = knn(detached, detached, k + 1, batch, batch, backend=backend)
    if normals is None or curvature is None:
        pca_normals, pca_curvature = normals_from_neighbors(detached, index)
        normals = pca_normals if normals is None else normals
        curvature = pca_curvature if curvature is None else curvature
    normals = normals.detach().to(points.dtype)
    normals = normals / normals.norm(dim=1, keepdim=True).clamp_min(1e-12)
    curvature = curvature.detach().to(points.dtype)
    neighbors, sq = _drop_self(index, sq, k)
    dist = sq.sqrt()
    dist = dist.clamp_min(1e-3 * dist.mean(dim=1, keepdim=True) + torch.finfo(dist.dtype).tiny)
    normal_rate = (1 - (normals.unsqueeze(1) * normals[neighbors]).sum(-1).abs()).clamp_min(0) / dist
    curvature_rate = (curvature.unsqueeze(1) - curvature[neighbors]).abs() / dist
    return (normal_rate + curvature_rate).mean(dim=1)


def geometry_aware_sample(
    points: torch.Tensor,
    num_samples: int,
    batch: torch.Tensor | None = None,
    *,
    k: int = 16,
    threshold: float = 0.3,
    salient_density: float = 2.0,
    normals: torch.Tensor | None = None,
    curvature: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """IMRNet's geometry-aware point sampling (GPS, Sec. 4.1 Eq. 6).

    Per cloud of ``n`` points:

    1. ``V = geometry_change_rate(points, k)``; points are ranked by ``V`` descending (exact ties:
       lower index first).
    2. The first ``round(threshold * n)`` ranked points form the salient region ``A`` (the paper's
       "ranks 1 to t * N"), the rest form ``B``.
    3. ``A`` is sampled at ``salient_density`` times the density (samples per point) of ``B``
       (the paper: "the number of points sampled in salient regions is twice that of non-salient
       regions", read as density so that the split does not depend on how large ``A`` is):
       ``s_A = round(S * rho * |A| / (rho * |A| + |B|))``, ``s_B = S - s_A``, moved between the
       regions only if one is too small to hold its share.
    4. Each region is sampled by FPS inside that region (starting at its lowest-index point), so
       samples stay spread out; the FPS backend is chosen as in :func:`farthest_point_sample`.

    Args:
        points: ``(N, 3)``.
        num_samples: samples per cloud (``<=`` each cloud's size).
        batch: ``(N,) long`` sorted cloud ids, or None.
        k: neighbourhood size of :func:`geometry_change_rate`.
        threshold: salient fraction ``t`` in [0, 1] (paper: 0.3).
        salient_density: density ratio ``rho`` > 0 of salient vs other points (paper: 2).
        normals / curvature: optional precomputed geometry (see :func:`geometry_change_rate`).
        backend: FPS backend (kNN uses ``"auto"``).

    Returns:
        ``(S_total,) long`` global indices; per cloud the salient samples come first.
    """
    check_points(points, "points", dim=3)
    check_batch(batch, points.shape[0])
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        msg = f"threshold must be in [0, 1], got {threshold!r}."
        raise ValueError(msg)
    if isinstance(salient_density, bool) or not isinstance(salient_density, (int, float)) or not salient_density > 0:
        msg = f"salient_density must be positive, got {salient_density!r}."
        raise ValueError(msg)
    ptr = cloud_ptr(batch, points.shape[0])
    sizes = split_sizes(ptr)
    counts = _sample_counts(sizes, num_samples, None)
    value = geometry_change_rate(points, k, batch, normals=normals, curvature=curvature)
    region_index: list[torch.Tensor] = []
    region_counts: list[int] = []
    for b, (n, count) in enumerate(zip(sizes, counts, strict=True)):
        cloud_value = value[ptr[b] : ptr[b + 1]]
        ranking = torch.sort(cloud_value, descending=True, stable=True).indices
        n_salient = min(n, max(0, round(threshold * n)))
        n_rest = n - n_salient
        weight = salient_density * n_salient
        s_salient = round(count * weight / (weight + n_rest)) if weight + n_rest > 0 else 0
        s_salient = min(s_salient, n_salient)
        s_rest = count - s_salient
        if s_rest > n_rest:
            s_rest = n_rest
            s_salient = count - n_rest
        salient = ranking[:n_salient].sort().values + ptr[b]
        rest = ranking[n_salient:].sort().values + ptr[b]
        region_index += [salient, rest]
        region_counts += [s_salient, s_rest]
    if not region_index:
        return torch.empty(0, dtype=torch.long, device=points.device)
    gathered = torch.cat(region_index)
    region_ptr = [0]
    for part in region_index:
        region_ptr.append(region_ptr[-1] + part.numel())
    local = _fps_local(points.detach()[gathered], region_ptr, region_counts, [0] * len(region_counts), backend)
    return gathered[_to_global(local, region_ptr, points.device)]
