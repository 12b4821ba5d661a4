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


def __getattr__(name: str) -> Any:  # noqa: ANN401
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"anomalib_3d.{name}")
    msg = f"module 'anomalib_3d' has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = ["__version__", "list_plugins"]
