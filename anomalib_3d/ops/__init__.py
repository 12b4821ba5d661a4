"""Shared point-cloud operations of anomalib-3d.

Neighbour search, samplers, local geometry, Chamfer distance, patch grouping, graph utilities,
rigid registration (FPFH-RANSAC + ICP), registered template banks and memory banks (greedy
coreset, exact kNN), all working on ``(N, 3)`` tensors with an optional sorted ``batch (N,) long``
vector for several clouds, on any device. Each search / sampling op takes ``backend="auto"``
(fastest available for the tensor's device) or an explicit backend; see
:mod:`anomalib_3d.ops.backend`.
"""

from anomalib_3d.ops.backend import available_backends, resolve_backend
from anomalib_3d.ops.chamfer import chamfer_distance
from anomalib_3d.ops.geometry import estimate_normals, fpfh, normalize_clouds, normals_from_neighbors, orient_normals
from anomalib_3d.ops.graph import (
    connected_components,
    gaussian_filter_grid,
    interpolate_nearest,
    smooth_grid_scores,
    smooth_scores,
)
from anomalib_3d.ops.grouping import SAMPLERS, Patches, group_patches
from anomalib_3d.ops.memory_bank import MemoryBank, greedy_coreset, nearest_neighbors, reweighted_max
from anomalib_3d.ops.neighbors import knn, knn_blocks, knn_graph, radius, radius_graph
from anomalib_3d.ops.registration import (
    Registration,
    apply_transform,
    best_template,
    default_voxel_size,
    register,
    register_global,
    register_icp,
)
from anomalib_3d.ops.sampling import (
    farthest_point_sample,
    geometry_aware_sample,
    geometry_change_rate,
    random_sample,
    voxel_sample,
)
from anomalib_3d.ops.templates import TemplateBank

__all__ = [
    "SAMPLERS",
    "MemoryBank",
    "Patches",
    "Registration",
    "TemplateBank",
    "apply_transform",
    "best_template",
    "default_voxel_size",
    "greedy_coreset",
    "nearest_neighbors",
    "register",
    "register_global",
    "register_icp",
    "reweighted_max",
    "available_backends",
    "chamfer_distance",
    "connected_components",
    "estimate_normals",
    "farthest_point_sample",
    "fpfh",
    "gaussian_filter_grid",
    "geometry_aware_sample",
    "geometry_change_rate",
    "group_patches",
    "interpolate_nearest",
    "knn",
    "knn_blocks",
    "knn_graph",
    "normalize_clouds",
    "normals_from_neighbors",
    "orient_normals",
    "radius",
    "radius_graph",
    "random_sample",
    "resolve_backend",
    "smooth_grid_scores",
    "smooth_scores",
    "voxel_sample",
]
