"""anomalib-3d: point-cloud and multi-view anomaly detection for anomalib.

Importing this package is cheap on purpose (it runs from a ``.pth`` hook at interpreter start):
heavy sub-packages (ops, render, data, metrics, visualization) load on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY_SUBMODULES = {"data", "ops", "render", "metrics", "visualization", "plugins"}

if TYPE_CHECKING:
    from anomalib_3d.plugins import PluginInfo


def list_plugins(load: bool = True) -> list[PluginInfo]:
    """List the registered model and datamodule plugins with their load status.

    Args:
        load: import every plugin first (so the status says whether it imports).

    Returns:
        One :class:`anomalib_3d.plugins.PluginInfo` (name, kind, target, status, error) per plugin.
    """
    from anomalib_3d.plugins import list_plugins as _list_plugins

    return _list_plugins(load=load)


def info() -> dict[str, Any]:
    """What this installation can do: versions, point-op backends and whether CUDA is usable.

    Returns:
        ``{"anomalib_3d", "torch", "anomalib", "cuda", "ops_backends", "ops_backends_cuda"}`` —
        ``ops_backends`` lists the backends importable here (``torch_cluster`` only when the
        optional extra is installed), ``ops_backends_cuda`` those that run natively on a GPU.
    """
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from anomalib_3d.ops.backend import available_backends

    try:
        anomalib_version = version("anomalib")
    except PackageNotFoundError:  # pragma: no cover - anomalib is a dependency
        anomalib_version = None
    cuda = torch.cuda.is_available()
    return {
        "anomalib_3d": __version__,
        "torch": torch.__version__,
        "anomalib": anomalib_version,
        "cuda": cuda,
        "ops_backends": available_backends(),
        "ops_backends_cuda": available_backends("cuda") if cuda else [],
    }


def __getattr__(name: str) -> Any:  # noqa: ANN401
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"anomalib_3d.{name}")
    msg = f"module 'anomalib_3d' has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = ["__version__", "info", "list_plugins"]
