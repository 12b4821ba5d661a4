"""Rigid registration of point clouds: FPFH + RANSAC global alignment and ICP refinement (Open3D).

Used wherever a test cloud must be brought into the frame of a training template before
point-wise comparison (Reg3D-AD, IMRNet on unaligned data, the nearest-template baselines).
Every transform is a ``(4, 4)`` homogeneous matrix mapping *source* coordinates into the
*target* frame: ``target ≈ source @ R.T + t``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from anomalib_3d.ops.backend import check_points

__all__ = [
    "Registration",
    "apply_transform",
    "best_template",
    "default_voxel_size",
    "register",
    "register_global",
    "register_icp",
]

RegistrationMethod = Literal["icp", "global+icp", "none"]

# Voxel size = bounding-box diagonal / this: ~1.5k voxels on a compact part, enough for FPFH to
# be distinctive while RANSAC stays fast on a CPU.
_VOXELS_PER_DIAGONAL = 40.0


@dataclass(frozen=True)
class Registration:
    """Result of aligning a source cloud to a target.

    Attributes:
        transform: ``(4, 4)`` source → target.
        fitness: fraction of source points with a target point within the final correspondence
            distance (higher is better).
        inlier_rmse: RMS distance of those correspondences (lower is better).
    """

    transform: torch.Tensor
    fitness: float
    inlier_rmse: float

    def better_than(self, other: Registration | None) -> bool:
        """Higher fitness wins; equal fitness → lower RMSE."""
        if other is None:
            return True
        if self.fitness != other.fitness:
            return self.fitness > other.fitness
        return self.inlier_rmse < other.inlier_rmse


def apply_transform(points: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """Apply a rigid/affine ``transform (4, 4)`` to ``points (N, 3)``; returns ``(N, 3)`` in ``points.dtype``."""
    check_points(points, "points", dim=3)
    if tuple(transform.shape) != (4, 4):
        msg = f"transform must be (4, 4), got {tuple(transform.shape)}."
        raise ValueError(msg)
    transform = transform.to(device=points.device, dtype=points.dtype)
    return points @ transform[:3, :3].T + transform[:3, 3]


def default_voxel_size(points: torch.Tensor) -> float:
    """Voxel size for registration: the bounding-box diagonal of ``points (N, 3)`` / 40."""
    extent = (points.amax(dim=0) - points.amin(dim=0)).double().norm()
    return max(float(extent) / _VOXELS_PER_DIAGONAL, 1e-9)


def _to_o3d(points: torch.Tensor):  # noqa: ANN202
    import open3d as o3d

    return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.detach().cpu().double().numpy()))


def _as_tensor(matrix: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(matrix).copy(), dtype=torch.float64).to(like.device)


def _fpfh_features(cloud, voxel_size: float):  # noqa: ANN001, ANN202
    """Downsampled cloud with its FPFH (normal radius 2 voxels, feature radius 5 voxels)."""
    import open3d as o3d

    from anomalib_3d.ops.geometry import estimate_normals, fpfh

    down = cloud.voxel_down_sample(voxel_size)
    points = torch.from_numpy(np.asarray(down.points).copy())
    normals, _ = estimate_normals(points, k=min(30, points.shape[0]))
    features = fpfh(points, normals, radius=5 * voxel_size, max_nn=100)
    feature = o3d.pipelines.registration.Feature()
    feature.data = features.double().numpy().T.copy()
    return down, feature


def register_global(
    source: torch.Tensor,
    target: torch.Tensor,
    voxel_size: float | None = None,
    seed: int = 0,
    *,
    max_iterations: int = 100_000,
    confidence: float = 0.999,
) -> torch.Tensor:
    """Coarse alignment from FPFH correspondences and RANSAC (Rusu et al. 2009; Open3D).

    Both clouds are voxel-downsampled, FPFH-described (:func:`anomalib_3d.ops.fpfh`), matched in
    feature space and aligned by RANSAC over 3-point samples with edge-length and distance checks.
    Open3D's random generator is seeded, so the result is reproducible for a fixed thread count.

    Args:
        source: ``(N, 3)`` cloud to move.
        target: ``(M, 3)`` reference cloud.
        voxel_size: downsampling voxel; None uses :func:`default_voxel_size` of the target.
        seed: RANSAC seed.
        max_iterations: RANSAC iterations.
        confidence: RANSAC early-stop confidence.

    Returns:
        ``(4, 4) float64`` source → target on ``source.device``.
    """
    import open3d as o3d

    check_points(source, "source", dim=3)
    check_points(target, "target", dim=3)
    voxel = float(voxel_size) if voxel_size is not None else default_voxel_size(target)
    reg = o3d.pipelines.registration
    src_down, src_feature = _fpfh_features(_to_o3d(source), voxel)
    tgt_down, tgt_feature = _fpfh_features(_to_o3d(target), voxel)
    distance = 1.5 * voxel
    o3d.utility.random.seed(int(seed))
    # Open3D warns on every sparse mutual match (then falls back to all matches, as intended).
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        result = reg.registration_ransac_based_on_feature_matching(
            src_down,
            tgt_down,
            src_feature,
            tgt_feature,
            True,
            distance,
            reg.TransformationEstimationPointToPoint(False),
            3,
            [reg.CorrespondenceCheckerBasedOnEdgeLength(0.9), reg.CorrespondenceCheckerBasedOnDistance(distance)],
            reg.RANSACConvergenceCriteria(max_iterations, confidence),
        )
    return _as_tensor(result.transformation, source)


def _centroid_shift(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    transform = torch.eye(4, dtype=torch.float64, device=source.device)
    transform[:3, 3] = (target.double().mean(dim=0) - source.double().mean(dim=0)).to(source.device)
    return transform


def register_icp(
    source: torch.Tensor,
    target: torch.Tensor,
    init: torch.Tensor | None = None,
    max_correspondence_distance: float | None = None,
    max_iterations: int = 50,
) -> tuple[torch.Tensor, float, float]:
    """Point-to-point ICP refinement (Besl & McKay 1992; Open3D).

    Args:
        source: ``(N, 3)`` cloud to move.
        target: ``(M, 3)`` reference cloud.
        init: ``(4, 4)`` starting transform; None starts from the centroid shift (source centroid
            onto target centroid).
        max_correspondence_distance: pairs farther apart are ignored. None runs coarse to fine:
            diagonal/8, then diagonal/40 (= :func:`default_voxel_size`), diagonal taken from the
            target's bounding box, so rotations up to ~30° converge.
        max_iterations: ICP iterations per stage.

    Returns:
        ``(transform (4, 4) float64, fitness, inlier_rmse)``; fitness and RMSE at the last
        (smallest) correspondence distance.
    """
    import open3d as o3d

    check_points(source, "source", dim=3)
    check_points(target, "target", dim=3)
    reg = o3d.pipelines.registration
    current = _centroid_shift(source, target) if init is None else init.detach().to(source.device, torch.float64)
    if tuple(current.shape) != (4, 4):
        msg = f"init must be (4, 4), got {tuple(current.shape)}."
        raise ValueError(msg)
    if max_correspondence_distance is None:
        voxel = default_voxel_size(target)
        distances = [voxel * _VOXELS_PER_DIAGONAL / 8, voxel]
    else:
        distances = [float(max_correspondence_distance)]
    src, tgt = _to_o3d(source), _to_o3d(target)
    criteria = reg.ICPConvergenceCriteria(max_iteration=int(max_iterations))
    result = None
    for distance in distances:
        result = reg.registration_icp(
            src, tgt, distance, current.cpu().numpy(), reg.TransformationEstimationPointToPoint(False), criteria
        )
        current = _as_tensor(result.transformation, source)
    return current, float(result.fitness), float(result.inlier_rmse)


def _evaluate(source: torch.Tensor, target: torch.Tensor, transform: torch.Tensor, distance: float) -> tuple[float, float]:
    import open3d as o3d

    result = o3d.pipelines.registration.evaluate_registration(
        _to_o3d(source), _to_o3d(target), distance, transform.detach().cpu().double().numpy()
    )
    return float(result.fitness), float(result.inlier_rmse)


def register(
    source: torch.Tensor,
    target: torch.Tensor,
    method: RegistrationMethod = "global+icp",
    *,
    voxel_size: float | None = None,
    max_correspondence_distance: float | None = None,
    max_iterations: int = 50,
    seed: int = 0,
    init: torch.Tensor | None = None,
) -> Registration:
    """Align ``source (N, 3)`` to ``target (M, 3)``.

    Methods: ``"none"`` (``init`` or identity, only scored), ``"icp"`` (:func:`register_icp` from
    ``init``, default the centroid shift), ``"global+icp"`` (:func:`register_global`, then ICP; when
    ICP from the centroid shift alone fits better — RANSAC can miss on symmetric or featureless
    parts — that one is kept; ``init`` is ignored).

    Fitness and RMSE are always measured at the same distance (``voxel_size``, default
    :func:`default_voxel_size` of the target), so results for different templates compare.

    Returns:
        :class:`Registration`.
    """
    check_points(source, "source", dim=3)
    check_points(target, "target", dim=3)
    voxel = float(voxel_size) if voxel_size is not None else default_voxel_size(target)
    if method == "none":
        transform = torch.eye(4, dtype=torch.float64, device=source.device) if init is None else init.double()
        candidates = [transform]
    elif method == "icp":
        candidates = [register_icp(source, target, init, max_correspondence_distance, max_iterations)[0]]
    elif method == "global+icp":
        coarse = register_global(source, target, voxel, seed)
        refine_distance = max_correspondence_distance if max_correspondence_distance is not None else 2 * voxel
        candidates = [
            register_icp(source, target, coarse, refine_distance, max_iterations)[0],
            register_icp(source, target, None, max_correspondence_distance, max_iterations)[0],
        ]
    else:
        msg = f"method must be one of 'icp', 'global+icp', 'none', got {method!r}."
        raise ValueError(msg)
    best: Registration | None = None
    for transform in candidates:
        fitness, rmse = _evaluate(source, target, transform, voxel)
        candidate = Registration(transform=transform, fitness=fitness, inlier_rmse=rmse)
        if candidate.better_than(best):
            best = candidate
    assert best is not None
    return best


def best_template(
    source: torch.Tensor,
    templates: Sequence[torch.Tensor],
    method: RegistrationMethod = "global+icp",
    **kwargs: object,
) -> tuple[int, Registration]:
    """Register ``source (N, 3)`` to every template ``(M_i, 3)`` and keep the best fit.

    Best = highest fitness, ties broken by lowest RMSE, measured at one distance for all templates
    (``voxel_size`` if given, else :func:`default_voxel_size` of the first template).

    Args:
        source: cloud to align.
        templates: candidate targets.
        method: see :func:`register`.
        **kwargs: passed to :func:`register`.

    Returns:
        ``(template index, Registration to that template)``.
    """
    if len(templates) == 0:
        msg = "best_template needs at least one template."
        raise ValueError(msg)
    kwargs.setdefault("voxel_size", default_voxel_size(templates[0]))
    best_index, best = -1, None
    for index, template in enumerate(templates):
        result = register(source, template, method, **kwargs)  # type: ignore[arg-type]
        if result.better_than(best):
            best_index, best = index, result
    assert best is not None
    return best_index, best
