"""Object proposals from a predicted density volume (Odd-One-Out, paper Sec. 3.3 "box estimator B").

The paper thresholds the predicted density ``V_σ`` (0.2) and clusters the occupied voxels with
DBSCAN "with its default parameters" to get one axis-aligned box per object. The official code
(VICO-UoE/OddOneOutAD, ``utils/misc.py``) does something else: it thresholds the raw density head
output (config ``threshold: 0.5``, first multiplied by 0.9), runs **spectral clustering** on the
occupied top-view ``(x, y)`` cells (Gaussian affinity with ``sigma`` = mean pairwise distance,
sparsified at ``1.4 x`` the mean affinity, symmetric normalised Laplacian, number of clusters
from the largest eigengap among the first 20 eigenvalues, k-means on the row-normalised
eigenvectors), gives every occupied voxel the cluster of its top-view position, dilates each
object by one voxel and takes the min/max voxel indices. At evaluation it passes the number of
ground-truth objects as the number of clusters (``estimate_number_objs=False``).

Both are here, as the switch ``method="dbscan" | "spectral"``. scikit-learn's DBSCAN defaults
(``eps=0.5``, ``min_samples=5``) mean nothing without the unit of the coordinates, which the paper
does not give; here the points are voxel centres in metres, ``eps`` defaults to 1.5 voxels (face and
edge neighbours linked) and ``min_samples`` keeps scikit-learn's 5.

What is thresholded (``threshold_on``):

* ``"opacity"`` (default): the per-voxel opacity ``alpha = 1 - exp(-sigma * voxel_size)``. The
  official code renders with PyTorch3D's ``EmissionAbsorptionRaymarcher``, which treats the
  density volume as a per-sample opacity in ``[0, 1]``, so its 0.5 (and the paper's 0.2) is a
  threshold on an opacity-like quantity. Our density ``sigma`` is in 1/metre and rendered with
  ``alpha = 1 - exp(-sigma delta)`` (:mod:`anomalib_3d.render.volume`), so the same number applies
  to the opacity of one voxel-length step.
* ``"density"``: ``sigma`` itself (1/metre), for volumes that already hold opacities.

Differences from the official code, on purpose:

* the top-view cells of the spectral method are the columns that hold an occupied voxel (the
  official code thresholds the column *sum* separately, with its own adaptive loop);
* each voxel takes the label of its column (the official code: the nearest 2D cluster centre;
  the same for separated objects);
* before spectral clustering, 3D connected components (26-neighbourhood) smaller than
  ``min_voxels`` are removed as noise: spectral clustering has no noise label, and every isolated
  speck would otherwise become its own connected component of the affinity graph and be counted
  by the eigengap;
* no dilation: a box spans its voxels exactly (extent of the voxel centres + one voxel);
* nothing is silent: clusters smaller than ``min_voxels`` and noise voxels are dropped and
  logged with their counts (``logging`` INFO, logger ``anomalib_3d_plugins.odd_one_out.proposals``);
  a scene without occupied voxels gets no box and a ``UserWarning``.

Everything runs on CPU (scikit-learn, SciPy); inputs may live on any device and the boxes come
back on the input's device. Deterministic: voxels are visited in ``(z, y, x)`` order, k-means
uses a fixed seed.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from anomalib_3d.render.volume import VoxelGrid

logger = logging.getLogger(__name__)

ProposalMethod = Literal["dbscan", "spectral"]

__all__ = [
    "ProposalMethod",
    "cluster_density",
    "density_proposals",
    "label_volume_boxes",
    "occupancy",
    "spectral_labels",
]


def occupancy(
    density: Tensor,
    grid: VoxelGrid,
    threshold: float = 0.2,
    threshold_on: Literal["opacity", "density"] = "opacity",
    floor_height: float | None = None,
) -> Tensor:
    """Occupied voxels of a density volume.

    Args:
        density: ``(B, 1, Z, Y, X)`` non-negative density ``sigma`` (1/metre) on ``grid``.
        grid: the volume's voxel grid.
        threshold: a voxel is occupied when its thresholded quantity is ``> threshold``.
        threshold_on: ``"opacity"`` (``1 - exp(-sigma * voxel_size)``) or ``"density"`` (``sigma``).
        floor_height: if given, voxels whose centre lies at or below this world height (metres)
            are never occupied (a reconstructed floor would join every object into one cluster).

    Returns:
        ``(B, Z, Y, X)`` bool.
    """
    if density.ndim != 5 or density.shape[1] != 1 or tuple(density.shape[2:]) != grid.volume_shape:
        msg = f"density must be (B, 1, *{grid.volume_shape}) on the grid, got {tuple(density.shape)}."
        raise ValueError(msg)
    if threshold_on not in ("opacity", "density"):
        msg = f"threshold_on must be 'opacity' or 'density', got {threshold_on!r}."
        raise ValueError(msg)
    sigma = density[:, 0].detach()
    value = -torch.expm1(-sigma * grid.voxel_size) if threshold_on == "opacity" else sigma
    occupied = value > threshold
    if floor_height is not None:
        heights = grid.voxel_centers(density.device, torch.float32)[..., 2]
        occupied = occupied & (heights > floor_height)
    return occupied


def spectral_labels(
    cells: np.ndarray,
    num_clusters: int | None = None,
    max_clusters: int = 20,
    sparsity: float = 1.4,
    max_points: int = 3000,
    seed: int = 0,
) -> np.ndarray:
    """Spectral clustering of 2D points (the official code's top-view clustering).

    Affinity ``S_ij = exp(-d_ij^2 / (2 sigma^2))`` with ``sigma`` the mean pairwise distance,
    entries below ``sparsity * mean(S)`` set to 0; symmetric normalised Laplacian
    ``L = I - D^-1/2 W D^-1/2``; ``k`` = ``num_clusters`` or ``1 + argmax`` of the gaps between the
    first ``max_clusters`` eigenvalues; k-means (fixed ``seed``) on the row-normalised first ``k``
    eigenvectors.

    Args:
        cells: ``(C, 2)`` points (any unit: the affinity is scale-free).
        num_clusters: ``k``; ``None`` estimates it by the eigengap.
        max_clusters: eigenvalues looked at by the eigengap.
        sparsity: affinity cut, in multiples of the mean affinity.
        max_points: above this many points, an evenly strided subset is clustered and every other
            point takes the label of its nearest clustered point (the eigenproblem is ``O(C^3)``).
        seed: k-means seed.

    Returns:
        ``(C,)`` int64 labels ``0 .. k-1``.
    """
    from scipy.spatial.distance import cdist
    from sklearn.cluster import KMeans

    cells = np.asarray(cells, dtype=np.float64)
    count = cells.shape[0]
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if count > max_points:
        keep = np.unique(np.linspace(0, count - 1, max_points).round().astype(np.int64))
        sub = spectral_labels(cells[keep], num_clusters, max_clusters, sparsity, max_points, seed)
        nearest = np.empty(count, dtype=np.int64)
        for start in range(0, count, 4096):
            nearest[start : start + 4096] = cdist(cells[start : start + 4096], cells[keep]).argmin(1)
        return sub[nearest]
    if count == 1:
        return np.zeros(1, dtype=np.int64)
    distance = cdist(cells, cells)
    sigma = max(float(distance.mean()), 1e-12)
    affinity = np.exp(-(distance**2) / (2.0 * sigma**2))
    weights = np.where(affinity >= sparsity * affinity.mean(), affinity, 0.0)
    degree = weights.sum(1)
    inv_sqrt = 1.0 / np.sqrt(np.where(degree > 0, degree, 1e-8))
    laplacian = np.eye(count) - inv_sqrt[:, None] * weights * inv_sqrt[None, :]
    eigenvalues, eigenvectors = np.linalg.eigh(laplacian)
    if num_clusters is None:
        gaps = np.diff(eigenvalues[: max(2, int(max_clusters))])
        k = int(np.argmax(gaps)) + 1
    else:
        k = int(num_clusters)
    k = max(1, min(k, count))
    embedding = eigenvectors[:, :k]
    embedding = embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-8)
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(embedding)
    # Number clusters by their first point so that labels do not depend on k-means' numbering.
    _, first = np.unique(labels, return_index=True)
    order = labels[np.sort(first)]
    remap = np.empty(int(labels.max()) + 1, dtype=np.int64)
    remap[order] = np.arange(order.shape[0])
    return remap[labels]


def _drop_small_components(voxels: np.ndarray, shape: tuple[int, int, int], min_voxels: int) -> np.ndarray:
    """``(N,)`` bool: the voxel lies in a 26-connected component of at least ``min_voxels`` voxels."""
    from scipy import ndimage

    mask = np.zeros(shape, dtype=bool)
    mask[tuple(voxels.T)] = True
    components, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    component_of = components[tuple(voxels.T)]
    sizes = np.bincount(component_of)
    return sizes[component_of] >= min_voxels


def _per_scene(value: int | Sequence[int] | Tensor | None, batch: int) -> list[int | None]:
    if value is None:
        return [None] * batch
    if isinstance(value, Tensor):
        value = value.reshape(-1).tolist()
    if isinstance(value, int | np.integer):
        return [int(value)] * batch
    values = [int(v) for v in value]
    if len(values) != batch:
        msg = f"num_clusters has {len(values)} entries for {batch} scenes."
        raise ValueError(msg)
    return values


def cluster_density(
    density: Tensor,
    grid: VoxelGrid,
    threshold: float = 0.2,
    method: ProposalMethod = "dbscan",
    eps: float | None = None,
    min_samples: int = 5,
    num_clusters: int | Sequence[int] | Tensor | None = None,
    min_voxels: int = 8,
    floor_height: float | None = None,
    threshold_on: Literal["opacity", "density"] = "opacity",
    max_clusters: int = 20,
    sparsity: float = 1.4,
) -> Tensor:
    """Label the occupied voxels of each scene by object (see the module docstring).

    Args:
        density: ``(B, 1, Z, Y, X)`` density ``sigma`` (1/metre) on ``grid``.
        grid: the volume's voxel grid.
        threshold, threshold_on, floor_height: occupancy (see :func:`occupancy`).
        method: ``"dbscan"`` (the paper) or ``"spectral"`` (the official code).
        eps: DBSCAN neighbourhood radius in metres; default ``1.5 * voxel_size`` (face and edge
            neighbours are linked, corner-only neighbours are not).
        min_samples: DBSCAN core-point count (scikit-learn's default, 5, counts the point itself).
        num_clusters: spectral only: objects per scene (one int, or one per scene, e.g.
            ``batch.num_objects`` for the official evaluation); ``None`` estimates it by the eigengap.
        min_voxels: clusters with fewer voxels are dropped (logged). For ``"spectral"`` also the
            size under which a 3D connected component counts as noise before clustering.
        max_clusters: spectral: eigenvalues looked at by the eigengap (official: 20).
        sparsity: spectral: affinity cut in multiples of the mean affinity (official: 1.4).

    Returns:
        ``(B, Z, Y, X)`` long: object ``0 .. P_b - 1`` of each voxel (numbered by the first voxel
        in ``(z, y, x)`` order), ``-1`` for empty, noise and dropped voxels. On ``density.device``.
    """
    if method not in ("dbscan", "spectral"):
        msg = f"method must be 'dbscan' or 'spectral', got {method!r}."
        raise ValueError(msg)
    if method == "dbscan" and num_clusters is not None:
        msg = "num_clusters applies to method='spectral' only (DBSCAN finds the number of objects itself)."
        raise ValueError(msg)
    if min_voxels < 1 or min_samples < 1:
        msg = f"min_voxels ({min_voxels}) and min_samples ({min_samples}) must be >= 1."
        raise ValueError(msg)
    occupied = occupancy(density, grid, threshold, threshold_on, floor_height).cpu().numpy()
    batch, shape = occupied.shape[0], occupied.shape[1:]
    clusters_per_scene = _per_scene(num_clusters, batch)
    radius = 1.5 * grid.voxel_size if eps is None else float(eps)
    centres = grid.voxel_centers("cpu", torch.float64).numpy()  # (Z, Y, X, 3)
    labels_out = np.full(occupied.shape, -1, dtype=np.int64)
    for scene in range(batch):
        voxels = np.argwhere(occupied[scene])  # (N, 3) (z, y, x), lexicographic: deterministic
        if voxels.shape[0] == 0:
            msg = (f"density_proposals: scene {scene} has no voxel above the {threshold_on} threshold "
                   f"{threshold}; it gets no object box. Lower the threshold or check the density volume.")
            warnings.warn(msg, UserWarning, stacklevel=3)
            logger.warning(msg)
            continue
        if method == "dbscan":
            from sklearn.cluster import DBSCAN

            points = centres[tuple(voxels.T)]
            labels = DBSCAN(eps=radius, min_samples=int(min_samples)).fit_predict(points)
        else:
            keep = _drop_small_components(voxels, shape, int(min_voxels))
            labels = np.full(voxels.shape[0], -1, dtype=np.int64)
            if keep.any():
                columns, column_of = np.unique(voxels[keep][:, 1:], axis=0, return_inverse=True)
                column_labels = spectral_labels(columns, clusters_per_scene[scene], max_clusters, sparsity)
                labels[keep] = column_labels[column_of.reshape(-1)]
        noise = int((labels < 0).sum())  # DBSCAN noise, or the spectral method's small components
        kept, dropped_sizes = 0, []
        scene_labels = np.full(voxels.shape[0], -1, dtype=np.int64)
        if (labels >= 0).any():
            _, first = np.unique(labels[labels >= 0], return_index=True)
            for label in labels[labels >= 0][np.sort(first)]:
                members = labels == label
                size = int(members.sum())
                if size < min_voxels:
                    dropped_sizes.append(size)
                    continue
                scene_labels[members] = kept
                kept += 1
        labels_out[scene][tuple(voxels.T)] = scene_labels
        if dropped_sizes or noise:
            logger.info(
                "density_proposals (%s): scene %d: %d occupied voxels, %d objects kept; dropped %d noise voxels "
                "and %d clusters smaller than min_voxels=%d (sizes %s).",
                method, scene, voxels.shape[0], kept, noise, len(dropped_sizes), min_voxels, sorted(dropped_sizes),
            )
        if kept == 0:
            msg = (f"density_proposals: scene {scene}: all {voxels.shape[0]} occupied voxels were noise or in "
                   f"clusters smaller than min_voxels={min_voxels}; it gets no object box.")
            warnings.warn(msg, UserWarning, stacklevel=3)
            logger.warning(msg)
    return torch.from_numpy(labels_out).to(density.device)


def label_volume_boxes(labels: Tensor, grid: VoxelGrid, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Axis-aligned world box of every labelled object.

    A box spans its voxels: from the lowest voxel centre minus half a voxel to the highest plus
    half a voxel on each axis (extent of the centres + one voxel).

    Args:
        labels: ``(B, Z, Y, X)`` long, objects ``0 .. P_b - 1`` per scene, ``-1`` elsewhere
            (as :func:`cluster_density` returns).
        grid: the voxel grid.

    Returns:
        ``boxes (ΣP, 2, 3)`` ``[centre xyz, size xyz]`` and ``batch (ΣP,)`` long (sorted), on
        ``labels.device``.
    """
    if labels.ndim != 4 or tuple(labels.shape[1:]) != grid.volume_shape:
        msg = f"labels must be (B, *{grid.volume_shape}), got {tuple(labels.shape)}."
        raise ValueError(msg)
    device = labels.device
    labels = labels.cpu()  # small; float64 extents on CPU (some accelerators lack float64)
    centres = grid.voxel_centers("cpu", torch.float64).reshape(-1, 3)
    half = grid.voxel_size / 2
    boxes, scenes = [], []
    for scene in range(labels.shape[0]):
        flat = labels[scene].reshape(-1)
        count = int(flat.max()) + 1 if flat.numel() else 0
        if count <= 0:
            continue
        valid = flat >= 0
        index = flat[valid].unsqueeze(1).expand(-1, 3)
        points = centres[valid]
        low = torch.full((count, 3), float("inf"), dtype=torch.float64)
        high = torch.full((count, 3), float("-inf"), dtype=torch.float64)
        low = low.scatter_reduce(0, index, points, "amin")
        high = high.scatter_reduce(0, index, points, "amax")
        low, high = low - half, high + half
        boxes.append(torch.stack([(low + high) / 2, high - low], dim=1))
        scenes.append(torch.full((count,), scene, dtype=torch.long))
    if not boxes:
        return torch.zeros(0, 2, 3, dtype=dtype, device=device), torch.zeros(0, dtype=torch.long, device=device)
    return torch.cat(boxes).to(dtype).to(device), torch.cat(scenes).to(device)


def density_proposals(density: Tensor, grid: VoxelGrid, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:  # noqa: ANN401
    """Object boxes from a predicted density volume: threshold, cluster, one box per cluster.

    Args: as :func:`cluster_density` (``density (B, 1, Z, Y, X)`` on ``grid``): every option after
        ``grid`` (same names, order and defaults) is passed on to it unchanged.

    Returns:
        ``boxes (ΣP, 2, 3)`` world ``[centre xyz, size xyz]`` (``density.dtype`` if floating) and
        ``batch (ΣP,)`` long scene of each box (sorted), on ``density.device``. A scene without
        occupied voxels contributes no box (and a ``UserWarning``).

    Example:
        >>> grid = VoxelGrid((24, 24, 8), 0.05)
        >>> density = torch.zeros(1, 1, 8, 24, 24)
        >>> density[0, 0, 1:4, 2:6, 2:6] = 50.0
        >>> boxes, batch = density_proposals(density, grid)
        >>> boxes.shape, batch.tolist()
        (torch.Size([1, 2, 3]), [0])
    """
    labels = cluster_density(density, grid, *args, **kwargs)
    dtype = density.dtype if density.is_floating_point() else torch.float32
    return label_volume_boxes(labels, grid, dtype)


# The options are declared once, on cluster_density; help() and signature-reading tools show them
# on density_proposals too (with its own return type).
density_proposals.__signature__ = inspect.signature(cluster_density).replace(  # type: ignore[attr-defined]
    return_annotation=inspect.signature(density_proposals).return_annotation,
)
