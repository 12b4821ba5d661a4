"""Point-patch grouping (Point-MAE style): sample centres, then take each centre's kNN patch."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from anomalib_3d.ops.backend import (
    BACKEND_OPS,
    check_batch,
    check_cloud_sizes,
    check_points,
    check_positive_int,
    cloud_ptr,
    split_sizes,
)
from anomalib_3d.ops.neighbors import knn
from anomalib_3d.ops.sampling import farthest_point_sample, geometry_aware_sample, random_sample, voxel_sample

__all__ = ["SAMPLERS", "Patches", "group_patches"]

#: Centre samplers accepted by :func:`group_patches`.
SAMPLERS = ("fps", "gps", "random", "voxel")


@dataclass
class Patches:
    """``G`` patches of ``K`` points for each of ``B`` clouds.

    Attributes:
        centers: ``(B, G, 3)`` patch centres (points of the cloud).
        neighborhoods: ``(B, G, K, 3)`` patch points relative to their centre (point - centre).
        center_index: ``(B, G) long`` global index of each centre into the input points.
        group_index: ``(B, G, K) long`` global index of each patch point, nearest first (the centre
            itself, or a duplicate of it, comes first).
    """

    centers: torch.Tensor
    neighborhoods: torch.Tensor
    center_index: torch.Tensor
    group_index: torch.Tensor

    def to(self, *args: object, **kwargs: object) -> Patches:
        """Move every tensor (``Tensor.to`` semantics)."""
        return Patches(**{f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)})

    @property
    def num_groups(self) -> int:
        """G."""
        return self.center_index.shape[1]

    @property
    def group_size(self) -> int:
        """K."""
        return self.group_index.shape[2]


def group_patches(
    points: torch.Tensor,
    num_groups: int,
    group_size: int,
    batch: torch.Tensor | None = None,
    *,
    sampler: str = "fps",
    generator: torch.Generator | None = None,
    backend: str = "auto",
    **sampler_kwargs: object,
) -> Patches:
    """Split clouds into ``num_groups`` overlapping patches of ``group_size`` points.

    Centres are sampled per cloud by ``sampler``: ``"fps"`` (:func:`farthest_point_sample`, pass
    ``random_start=True`` to draw the start with ``generator``), ``"gps"``
    (:func:`geometry_aware_sample`), ``"random"`` (:func:`random_sample` with ``generator``) or
    ``"voxel"`` (:func:`voxel_sample` with ``num_samples=num_groups``); ``sampler_kwargs`` go to that
    function. Each patch is the centre's ``group_size`` nearest points of its cloud (centre included).

    Args:
        points: ``(N, 3)`` with ``batch``, or ``(B, N, 3)`` equal-sized clouds (indices then refer to
            ``points.reshape(-1, 3)``).
        num_groups: ``G`` centres per cloud.
        group_size: ``K`` points per patch.
        batch: ``(N,) long`` sorted cloud ids for 2-D ``points``; must be None for 3-D input.
        sampler: ``"fps"``, ``"gps"``, ``"random"`` or ``"voxel"``.
        generator: random source for ``"random"`` / ``"fps"`` with ``random_start``.
        backend: backend for FPS and kNN; a backend implementing only one of them (e.g.
            ``"pykdtree"`` or ``"fpsample"``) is used for that one and ``"auto"`` for the other.

    Returns:
        :class:`Patches`.

    Raises:
        ValueError: a cloud with fewer than ``max(G, K)`` points, unknown sampler, bad shapes.
    """
    if isinstance(points, torch.Tensor) and points.dim() == 3:
        if batch is not None:
            msg = "batch must be None when points is a (B, N, 3) tensor."
            raise ValueError(msg)
        num_clouds, per_cloud = points.shape[0], points.shape[1]
        points = points.reshape(-1, points.shape[2])
        batch = torch.arange(num_clouds, device=points.device).repeat_interleave(per_cloud)
    check_points(points, "points", dim=3)
    check_batch(batch, points.shape[0])
    num_groups = check_positive_int(num_groups, "num_groups")
    group_size = check_positive_int(group_size, "group_size")
    if sampler not in SAMPLERS:
        msg = f"Unknown sampler {sampler!r}. Fix: use one of {SAMPLERS}."
        raise ValueError(msg)
    sizes = split_sizes(cloud_ptr(batch, points.shape[0]))
    need = max(num_groups, group_size)
    check_cloud_sizes(sizes, need, f"; {num_groups} patches of {group_size} points need at least {need}",
                      "lower num_groups / group_size or upsample the cloud.")
    num_clouds = len(sizes)
    if backend != "auto" and backend not in BACKEND_OPS:
        msg = f"Unknown backend {backend!r}. Fix: use 'auto' or one of {sorted(BACKEND_OPS)}."
        raise ValueError(msg)
    fps_backend = backend if backend == "auto" or "fps" in BACKEND_OPS[backend] else "auto"
    knn_backend = backend if backend == "auto" or "knn" in BACKEND_OPS[backend] else "auto"
    if sampler == "fps":
        center_index = farthest_point_sample(
            points, num_groups, batch, generator=generator, backend=fps_backend, **sampler_kwargs
        )
    elif sampler == "gps":
        center_index = geometry_aware_sample(points, num_groups, batch, backend=fps_backend, **sampler_kwargs)
    elif sampler == "random":
        center_index = random_sample(points, num_groups, batch, generator=generator, **sampler_kwargs)
    else:
        center_index = voxel_sample(points, batch=batch, num_samples=num_groups, **sampler_kwargs)
    center_batch = None if batch is None else batch[center_index]
    group_index, _ = knn(points, points[center_index], group_size, batch, center_batch, backend=knn_backend)
    centers = points[center_index]
    neighborhoods = points[group_index] - centers.unsqueeze(1)
    return Patches(
        centers=centers.view(num_clouds, num_groups, 3),
        neighborhoods=neighborhoods.view(num_clouds, num_groups, group_size, 3),
        center_index=center_index.view(num_clouds, num_groups),
        group_index=group_index.view(num_clouds, num_groups, group_size),
    )
