"""Backend registry and shared input checks for the point operations.

Every neighbour / sampling op accepts ``backend="auto" | "torch" | "torch_cluster" | "scipy" |
"pykdtree" | "fpsample"``:

* ``"torch"`` - pure torch, always available, works on any device; distance matrices are built in
  query chunks so memory stays bounded (about :data:`CHUNK_ELEMENTS` entries per chunk).
* ``"torch_cluster"`` - the compiled torch-cluster kernels (CPU, and CUDA when built with CUDA).
* ``"scipy"`` - ``scipy.spatial.cKDTree`` (kNN and radius, CPU).
* ``"pykdtree"`` - ``pykdtree.kdtree.KDTree`` (kNN only, CPU).
* ``"fpsample"`` - the exact bucket FPS of the ``fpsample`` package (FPS only, CPU).

CPU-only libraries also accept CUDA tensors when asked for explicitly (the data makes a round
trip through host memory and the result comes back on the input device); ``"auto"`` never picks
them for CUDA tensors. ``"auto"`` picks the measured-fastest available backend for the op and the
tensor's device (see :data:`AUTO_PREFERENCE` and ``benchmarks/ops.py``).

All backends return the same neighbours / samples; only exactly tied distances may be resolved
differently (documented per op).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from functools import cache

import torch

__all__ = [
    "AUTO_PREFERENCE",
    "BACKEND_OPS",
    "CHUNK_ELEMENTS",
    "available_backends",
    "resolve_backend",
]

#: Which op each backend implements.
BACKEND_OPS: dict[str, frozenset[str]] = {
    "torch": frozenset({"knn", "radius", "fps"}),
    "torch_cluster": frozenset({"knn", "radius", "fps"}),
    "scipy": frozenset({"knn", "radius"}),
    "pykdtree": frozenset({"knn"}),
    "fpsample": frozenset({"fps"}),
}

#: Order in which ``backend="auto"`` tries backends, per (device type, op). CPU order measured with
#: ``benchmarks/ops.py`` on 2 threads (100k points): kNN of 1024 queries pykdtree 17 ms < scipy
#: 39 ms < torch-cluster 79 ms < torch 159 ms (all-points 16-NN: pykdtree 0.6 s, scipy 0.65 s,
#: torch-cluster 1.4 s); FPS(1024) fpsample 22 ms < torch 0.3 s < torch-cluster 0.7 s; radius graph
#: scipy < torch-cluster. The CUDA order is not measured yet (no GPU here): batched matmul + topk
#: for kNN, torch-cluster's kernels for FPS (no Python loop per sample) and radius.
AUTO_PREFERENCE: dict[tuple[str, str], tuple[str, ...]] = {
    ("cpu", "knn"): ("pykdtree", "scipy", "torch_cluster", "torch"),
    ("cpu", "radius"): ("scipy", "torch_cluster", "torch"),
    ("cpu", "fps"): ("fpsample", "torch", "torch_cluster"),
    ("cuda", "knn"): ("torch", "torch_cluster"),
    ("cuda", "radius"): ("torch_cluster", "torch"),
    ("cuda", "fps"): ("torch_cluster", "torch"),
}

#: Upper bound on the number of pairwise-distance entries materialised at once by the torch paths.
CHUNK_ELEMENTS: int = 1 << 22

_MODULES = {
    "torch_cluster": "torch_cluster",
    "scipy": "scipy.spatial",
    "pykdtree": "pykdtree.kdtree",
    "fpsample": "fpsample",
}
_CPU_ONLY = frozenset({"scipy", "pykdtree", "fpsample"})


@cache
def _importable(name: str) -> bool:
    if name == "torch":
        return True
    try:
        importlib.import_module(_MODULES[name])
    except Exception:  # noqa: BLE001 - a broken compiled extension must not break the pure-torch path
        return False
    return True


@cache
def _torch_cluster_has_cuda() -> bool:
    if not _importable("torch_cluster"):
        return False
    try:
        return int(torch.ops.torch_cluster.cuda_version()) != -1
    except Exception:  # noqa: BLE001
        return False


def available_backends(device: torch.device | str | None = None) -> list[str]:
    """Names of the backends usable in this environment.

    Args:
        device: when given, only backends that run natively on that device type are listed
            (CPU libraries are still usable on CUDA tensors when requested explicitly).

    Returns:
        Backend names, ``"torch"`` first.
    """
    names = [name for name in BACKEND_OPS if _importable(name)]
    if device is None:
        return names
    if torch.device(device).type == "cpu":
        return names
    return [n for n in names if n not in _CPU_ONLY and (n != "torch_cluster" or _torch_cluster_has_cuda())]


def resolve_backend(op: str, device: torch.device, backend: str = "auto") -> str:
    """Return the concrete backend to run ``op`` (``"knn"``, ``"radius"`` or ``"fps"``) on ``device``.

    Raises:
        ValueError: unknown backend, backend not implementing ``op``, or not installed.
    """
    device_type = "cuda" if torch.device(device).type == "cuda" else "cpu"
    if backend == "auto":
        for name in AUTO_PREFERENCE[(device_type, op)]:
            if not _importable(name):
                continue
            if name == "torch_cluster" and device_type == "cuda" and not _torch_cluster_has_cuda():
                continue
            return name
        return "torch"
    if backend not in BACKEND_OPS:
        msg = f"Unknown backend {backend!r}. Fix: use 'auto' or one of {sorted(BACKEND_OPS)}."
        raise ValueError(msg)
    if op not in BACKEND_OPS[backend]:
        supporting = sorted(n for n, ops in BACKEND_OPS.items() if op in ops)
        msg = f"Backend {backend!r} does not implement {op!r}. Fix: use 'auto' or one of {supporting}."
        raise ValueError(msg)
    if not _importable(backend):
        msg = (
            f"Backend {backend!r} is not installed (cannot import {_MODULES[backend]!r}). "
            f"Fix: install it or use backend='auto' (available: {available_backends()})."
        )
        raise ValueError(msg)
    if backend == "torch_cluster" and device_type == "cuda" and not _torch_cluster_has_cuda():
        msg = "torch_cluster was built without CUDA. Fix: use backend='auto' or 'torch' for CUDA tensors."
        raise ValueError(msg)
    return backend


# ---------------------------------------------------------------------------------------------
# Shared input validation (private to anomalib_3d.ops)
# ---------------------------------------------------------------------------------------------


def check_points(points: torch.Tensor, name: str = "points", *, dim: int | None = None) -> None:
    """Raise ValueError unless ``points`` is a finite floating (N, D) tensor (D == dim if given)."""
    if not isinstance(points, torch.Tensor):
        msg = f"{name} must be a torch.Tensor, got {type(points).__name__}."
        raise ValueError(msg)  # noqa: TRY004 - the ops family documents ValueError for all bad input
    if points.dim() != 2 or (dim is not None and points.shape[1] != dim):
        want = f"(N, {dim})" if dim is not None else "(N, D)"
        msg = f"{name} must have shape {want}, got {tuple(points.shape)}."
        raise ValueError(msg)
    if not points.is_floating_point():
        msg = f"{name} must be a floating tensor, got {points.dtype}. Fix: call .float() first."
        raise ValueError(msg)
    if points.numel() and not bool(torch.isfinite(points).all()):
        msg = f"{name} contains NaN or Inf values. Fix: drop or repair those points first."
        raise ValueError(msg)


def check_batch(batch: torch.Tensor | None, num: int, name: str = "batch") -> None:
    """Raise ValueError unless ``batch`` is None or a sorted, non-negative (num,) integer tensor."""
    if batch is None:
        return
    if not isinstance(batch, torch.Tensor) or batch.dim() != 1 or batch.shape[0] != num:
        shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
        msg = f"{name} must be a 1-D tensor with one entry per point ({num}), got {shape}."
        raise ValueError(msg)
    if batch.dtype.is_floating_point or batch.dtype == torch.bool:
        msg = f"{name} must be an integer tensor, got {batch.dtype}."
        raise ValueError(msg)
    if num and int(batch[0]) < 0:
        msg = f"{name} must contain non-negative cloud ids."
        raise ValueError(msg)
    if num > 1 and bool((batch[1:] < batch[:-1]).any()):
        msg = f"{name} must be sorted (points of each cloud contiguous, clouds in increasing id order)."
        raise ValueError(msg)


def cloud_ptr(batch: torch.Tensor | None, num: int, num_clouds: int | None = None) -> list[int]:
    """Offsets ``ptr`` (length B + 1) such that cloud ``b`` is ``[ptr[b], ptr[b + 1])``.

    ``batch`` must already have passed :func:`check_batch`.
    """
    if batch is None:
        clouds = 1 if num_clouds is None else num_clouds
        return [0] + [num] * clouds
    if num_clouds is None:
        num_clouds = int(batch[-1]) + 1 if num else 1
    counts = torch.bincount(batch.long(), minlength=num_clouds).tolist()
    ptr = [0]
    for count in counts:
        ptr.append(ptr[-1] + count)
    return ptr


def paired_ptrs(
    num_points: int,
    num_queries: int,
    batch_points: torch.Tensor | None,
    batch_queries: torch.Tensor | None,
) -> tuple[list[int], list[int]]:
    """Validate a (points, queries) batch pair and return aligned cloud offsets for both."""
    if (batch_points is None) != (batch_queries is None):
        msg = (
            "batch_points and batch_queries must be given together (or both left None for a single cloud); "
            "got only one of them."
        )
        raise ValueError(msg)
    check_batch(batch_points, num_points, "batch_points")
    check_batch(batch_queries, num_queries, "batch_queries")
    if batch_points is None:
        return [0, num_points], [0, num_queries]
    num_clouds = 1
    if num_points:
        num_clouds = max(num_clouds, int(batch_points[-1]) + 1)
    if num_queries:
        num_clouds = max(num_clouds, int(batch_queries[-1]) + 1)
    return cloud_ptr(batch_points, num_points, num_clouds), cloud_ptr(batch_queries, num_queries, num_clouds)


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` as int, raising ValueError unless it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{name} must be a positive integer, got {value!r}."
        raise ValueError(msg)
    return value


def check_cloud_sizes(sizes: Sequence[int], need: int, request: str, fix: str) -> None:
    """Raise ValueError for the first cloud with fewer than ``need`` points.

    The message reads ``"Cloud {b} has {n} points{request}. Fix: {fix}"``, so every op names the
    cloud and its size the same way and adds what it asked for and how to get out.

    Args:
        sizes: ``B`` points per cloud.
        need: the least number of points every cloud must hold.
        request: what was asked, appended after the size (e.g. ``" but num_samples=8 were requested"``).
        fix: the advice after ``"Fix: "``, with its full stop.
    """
    for b, n in enumerate(sizes):
        if n < need:
            msg = f"Cloud {b} has {n} points{request}. Fix: {fix}"
            raise ValueError(msg)


def split_sizes(ptr: Sequence[int]) -> list[int]:
    """Cloud sizes from offsets."""
    return [ptr[i + 1] - ptr[i] for i in range(len(ptr) - 1)]
