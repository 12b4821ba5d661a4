"""Local surface geometry: PCA normals and curvature, normal orientation, FPFH descriptors, and the
per-cloud normalisation that makes radii and features mean the same on every part."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from anomalib_3d.ops.backend import check_batch, check_points, check_positive_int, cloud_ptr, split_sizes
from anomalib_3d.ops.neighbors import knn

__all__ = ["estimate_normals", "fpfh", "normalize_clouds", "normals_from_neighbors", "orient_normals"]

# Points per block when building (block, k, 3, 3) covariance work; bounds peak memory on big clouds.
_PCA_BLOCK = 1 << 16


def normals_from_neighbors(
    points: torch.Tensor,
    neighbor_index: torch.Tensor,
    *,
    eps: float = 1e-12,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plane fit (PCA) of given neighbourhoods.

    Args:
        points: ``(N, 3)``.
        neighbor_index: ``(M, k) long`` indices into ``points`` forming each neighbourhood (include
            the centre point itself if it should take part, as Open3D does).
        eps: added to the eigenvalue sum so a degenerate (single-location) neighbourhood gives 0.

    Returns:
        ``(normals (M, 3), curvature (M,))`` in ``points.dtype``: the unit eigenvector of the smallest
        eigenvalue of the neighbourhood covariance (the total-least-squares plane normal; sign not
        oriented) and the surface variation ``lambda_min / (lambda_1 + lambda_2 + lambda_3 + eps)``.
    """
    normals = points.new_empty((neighbor_index.shape[0], 3))
    curvature = points.new_empty((neighbor_index.shape[0],))
    for start in range(0, neighbor_index.shape[0], _PCA_BLOCK):
        # Double precision keeps the smallest eigenvector stable on nearly flat patches.
        block = points[neighbor_index[start : start + _PCA_BLOCK]].double()  # (b, k, 3)
        centered = block - block.mean(dim=1, keepdim=True)
        cov = torch.einsum("bki,bkj->bij", centered, centered) / block.shape[1]
        eigenvalues, normal = _smallest_eigenpair(cov)
        eigenvalues = eigenvalues.clamp_min(0.0)
        normals[start : start + _PCA_BLOCK] = normal.to(points.dtype)
        curvature[start : start + _PCA_BLOCK] = (eigenvalues[:, 0] / (eigenvalues.sum(dim=1) + eps)).to(points.dtype)
    return normals, curvature


def _smallest_eigenpair(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and the smallest eigenvector of symmetric (b, 3, 3) matrices.

    Closed form (trigonometric eigenvalues, eigenvector as the longest cross product of two rows of
    ``cov - lambda_min I``), an order of magnitude faster than batched LAPACK on CPU. Matrices whose
    two smallest eigenvalues nearly coincide (line-like or isotropic patches, where that cross product
    is ill-conditioned) go through ``torch.linalg.eigh`` instead.
    """
    a00, a11, a22 = cov[:, 0, 0], cov[:, 1, 1], cov[:, 2, 2]
    a01, a02, a12 = cov[:, 0, 1], cov[:, 0, 2], cov[:, 1, 2]
    mean = (a00 + a11 + a22) / 3
    b00, b11, b22 = a00 - mean, a11 - mean, a22 - mean
    off = a01 * a01 + a02 * a02 + a12 * a12
    scale = torch.sqrt((b00 * b00 + b11 * b11 + b22 * b22 + 2 * off) / 6)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    det = b00 * (b11 * b22 - a12 * a12) - a01 * (a01 * b22 - a12 * a02) + a02 * (a01 * a12 - b11 * a02)
    angle = torch.acos((det / safe.pow(3) / 2).clamp(-1.0, 1.0)) / 3
    largest = mean + 2 * scale * torch.cos(angle)
    smallest = mean + 2 * scale * torch.cos(angle + 2 * torch.pi / 3)
    middle = 3 * mean - largest - smallest
    eigenvalues = torch.stack([smallest, middle, largest], dim=1)
    row0 = torch.stack([a00 - smallest, a01, a02], dim=1)
    row1 = torch.stack([a01, a11 - smallest, a12], dim=1)
    row2 = torch.stack([a02, a12, a22 - smallest], dim=1)
    crosses = torch.stack(
        [torch.linalg.cross(row0, row1), torch.linalg.cross(row0, row2), torch.linalg.cross(row1, row2)], dim=1
    )
    norms_sq = crosses.pow(2).sum(-1)
    best_sq, best = norms_sq.max(dim=1)
    vector = crosses.gather(1, best.view(-1, 1, 1).expand(-1, 1, 3)).squeeze(1)
    vector = vector / best_sq.sqrt().clamp_min(torch.finfo(cov.dtype).tiny).unsqueeze(1)
    # |cross| ~ (l_mid - l_min)(l_max - l_min): small relative to trace^2 means ill-conditioned.
    trace_sq = (3 * mean).pow(2)
    fallback = (best_sq <= 1e-10 * trace_sq.pow(2)).nonzero().flatten()
    if fallback.numel():
        exact_values, exact_vectors = torch.linalg.eigh(cov[fallback])
        eigenvalues[fallback] = exact_values
        vector[fallback] = exact_vectors[:, :, 0]
    return eigenvalues, vector


def orient_normals(
    points: torch.Tensor,
    normals: torch.Tensor,
    batch: torch.Tensor | None = None,
    *,
    viewpoint: torch.Tensor | None = None,
) -> torch.Tensor:
    """Flip normals to a consistent side.

    Args:
        points: ``(N, 3)``.
        normals: ``(N, 3)`` unoriented normals.
        batch: ``(N,) long`` sorted cloud ids, or None.
        viewpoint: None orients every normal away from its cloud's centroid (outward on
            object-centred scans); a ``(3,)`` or ``(B, 3)`` camera position orients normals towards it.

    Returns:
        ``(N, 3)`` normals with ``n . (p - centroid) >= 0`` (or ``n . (viewpoint - p) >= 0``).
    """
    check_points(points, "points", dim=3)
    if normals.shape != points.shape:
        msg = f"normals must have the shape of points {tuple(points.shape)}, got {tuple(normals.shape)}."
        raise ValueError(msg)
    check_batch(batch, points.shape[0])
    batch_long = (
        torch.zeros(points.shape[0], dtype=torch.long, device=points.device) if batch is None else batch.long()
    )
    num_clouds = len(cloud_ptr(batch, points.shape[0])) - 1
    if viewpoint is None:
        sums = torch.zeros((num_clouds, 3), dtype=points.dtype, device=points.device).index_add_(0, batch_long, points)
        counts = torch.bincount(batch_long, minlength=num_clouds).clamp_min(1).to(points.dtype)
        centroid = (sums / counts.unsqueeze(1))[batch_long]
        direction = points - centroid
    else:
        viewpoint = torch.as_tensor(viewpoint, dtype=points.dtype, device=points.device)
        if viewpoint.shape == (3,):
            viewpoint = viewpoint.expand(num_clouds, 3)
        if viewpoint.shape != (num_clouds, 3):
            msg = f"viewpoint must have shape (3,) or ({num_clouds}, 3), got {tuple(viewpoint.shape)}."
            raise ValueError(msg)
        direction = viewpoint[batch_long] - points
    flip = (normals * direction).sum(dim=1) < 0
    return torch.where(flip.unsqueeze(1), -normals, normals)


def estimate_normals(
    points: torch.Tensor,
    k: int = 30,
    batch: torch.Tensor | None = None,
    *,
    orient: bool = True,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-point normals and curvature by PCA of the k-nearest-neighbour patch.

    The neighbourhood holds the point itself and its ``k - 1`` nearest neighbours, matching
    Open3D's ``estimate_normals(KDTreeSearchParamKNN(k))``; the normal is the smallest-eigenvalue
    eigenvector of the patch covariance (batched ``torch.linalg.eigh``, no per-point loop).

    Args:
        points: ``(N, 3)``.
        k: neighbourhood size including the point (every cloud needs ``>= k`` points).
        batch: ``(N,) long`` sorted cloud ids, or None.
        orient: flip normals away from each cloud's centroid (see :func:`orient_normals`);
            False leaves the eigen-solver's arbitrary sign.
        backend: kNN backend.

    Returns:
        ``(normals (N, 3) unit, curvature (N,))`` with curvature ``lambda_min / sum(lambda)`` in [0, 1/3].
    """
    check_points(points, "points", dim=3)
    k = check_positive_int(k, "k")
    check_batch(batch, points.shape[0])
    if points.shape[0] == 0:
        return points.new_empty((0, 3)), points.new_empty((0,))
    index, _ = knn(points, points, k, batch, batch, backend=backend)
    normals, curvature = normals_from_neighbors(points.detach(), index)
    if orient:
        normals = orient_normals(points.detach(), normals, batch)
    return normals, curvature


def fpfh(
    points: torch.Tensor,
    normals: torch.Tensor | None = None,
    *,
    radius: float,
    max_nn: int = 100,
    batch: torch.Tensor | None = None,
    normal_k: int = 30,
) -> torch.Tensor:
    """Fast Point Feature Histograms (33-D) computed by Open3D, cloud by cloud.

    Args:
        points: ``(N, 3)``.
        normals: ``(N, 3)`` or None (then :func:`estimate_normals` with ``normal_k`` neighbours).
        radius: feature radius of Open3D's hybrid search.
        max_nn: at most this many neighbours per point (Open3D's hybrid search keeps the nearest).
        batch: ``(N,) long`` sorted cloud ids, or None.
        normal_k: neighbourhood size used only when ``normals`` is None.

    Returns:
        ``(N, 33)`` descriptors in ``points.dtype`` on ``points.device``.
    """
    import open3d as o3d

    check_points(points, "points", dim=3)
    check_batch(batch, points.shape[0])
    if not radius > 0:
        msg = f"radius must be positive, got {radius!r}."
        raise ValueError(msg)
    max_nn = check_positive_int(max_nn, "max_nn")
    if normals is None:
        sizes = [n for n in split_sizes(cloud_ptr(batch, points.shape[0])) if n > 0]
        k = min([normal_k, *sizes]) if sizes else normal_k
        normals, _ = estimate_normals(points, k=k, batch=batch)
    elif normals.shape != points.shape:
        msg = f"normals must have the shape of points {tuple(points.shape)}, got {tuple(normals.shape)}."
        raise ValueError(msg)
    points_np = points.detach().cpu().double().numpy()
    normals_np = normals.detach().cpu().double().numpy()
    ptr = cloud_ptr(batch, points.shape[0])
    out = np.zeros((points.shape[0], 33), dtype=np.float64)
    search = o3d.geometry.KDTreeSearchParamHybrid(radius=float(radius), max_nn=max_nn)
    for b in range(len(ptr) - 1):
        if ptr[b + 1] == ptr[b]:
            continue
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points_np[ptr[b] : ptr[b + 1]]))
        cloud.normals = o3d.utility.Vector3dVector(normals_np[ptr[b] : ptr[b + 1]])
        out[ptr[b] : ptr[b + 1]] = np.asarray(o3d.pipelines.registration.compute_fpfh_feature(cloud, search).data).T
    return torch.from_numpy(out).to(device=points.device, dtype=points.dtype)


def normalize_clouds(
    points: torch.Tensor,
    batch: torch.Tensor,
    mode: Literal["bbox", "rms", "none"] = "bbox",
) -> torch.Tensor:
    """Put every cloud in a common frame so features and radii mean the same on every part.

    Args:
        points: ``(N, 3)``.
        batch: ``(N,) long`` sorted cloud ids.
        mode: ``"bbox"``: bounding-box centre at 0, bounding-box diagonal 1 (robust to density and
            to missing regions, but it depends on the pose); ``"rms"``: centroid at 0, RMS distance to
            it 1/2 (pose-invariant: use it before rigid registration); ``"none"``: unchanged.

    Returns:
        ``(N, 3)`` float points.
    """
    points = points.float()
    if mode == "none":
        return points
    num_clouds = int(batch.max()) + 1 if batch.numel() else 0
    if mode == "rms":
        counts = torch.bincount(batch, minlength=num_clouds).clamp_min(1).to(points.dtype)
        center = points.new_zeros((num_clouds, 3)).index_add_(0, batch, points) / counts.unsqueeze(1)
        centered = points - center[batch]
        mean_sq = points.new_zeros(num_clouds).index_add_(0, batch, centered.pow(2).sum(dim=1)) / counts
        return centered / (2 * mean_sq.sqrt().clamp_min(1e-12))[batch].unsqueeze(1)
    if mode != "bbox":
        msg = f"normalization must be 'bbox', 'rms' or 'none', got {mode!r}."
        raise ValueError(msg)
    index = batch.unsqueeze(1).expand(-1, 3)
    low = points.new_full((num_clouds, 3), math.inf).scatter_reduce(0, index, points, "amin")
    high = points.new_full((num_clouds, 3), -math.inf).scatter_reduce(0, index, points, "amax")
    center = (low + high) / 2
    diagonal = (high - low).norm(dim=1).clamp_min(1e-12)
    return (points - center[batch]) / diagonal[batch].unsqueeze(1)
