"""Plugin discovery: find our entry points and make anomalib see them.

Plugins declare themselves in ``pyproject.toml`` under two entry-point groups::

    [project.entry-points."anomalib_3d.models"]       IMRNet = "anomalib_3d_plugins.imrnet:IMRNet"
    [project.entry-points."anomalib_3d.datamodules"]  Real3DAD = "anomalib_3d.data.datamodules...:Real3DAD"

anomalib 2.7 resolves short names in two ways, and we feed both:

* its CLI (jsonargparse) resolves ``--model IMRNet`` / ``--data Real3DAD`` among the *imported*
  subclasses of ``AnomalibModule`` / ``AnomalibDataModule``, so the plugin must be imported;
* ``anomalib.models.get_model("imrnet")`` scans ``AnomalibModule.__subclasses__()`` and
  ``get_model({"class_path": "IMRNet"})`` does ``getattr(anomalib.models, "IMRNet")``; we attach
  the class there and allow-list its module for fully qualified class paths.

:func:`load_plugins` is called by the import hook in :mod:`anomalib_3d._hook` right after
``anomalib.models`` / ``anomalib.data`` finish importing. A plugin that fails to import is
recorded (see :func:`list_plugins`) and never breaks anomalib.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import traceback
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

logger = logging.getLogger(__name__)

GROUPS = {"models": "anomalib_3d.models", "datamodules": "anomalib_3d.datamodules"}
_HOST_MODULES = {"models": "anomalib.models", "datamodules": "anomalib.data"}


@dataclass(frozen=True)
class PluginInfo:
    """What we know about one registered plugin.

    Attributes:
        name: the short class name users type (``IMRNet``).
        kind: ``"models"`` or ``"datamodules"``.
        target: ``module:attribute`` of the entry point.
        status: ``"loaded"``, ``"failed"`` or ``"not loaded"``.
        error: the one-line error for a failed plugin, else ``None``.
    """

    name: str
    kind: str
    target: str
    status: str
    error: str | None = None


_results: dict[tuple[str, str], PluginInfo] = {}
_loaded_kinds: set[str] = set()
_lock = threading.RLock()


def _entry_points(kind: str) -> list[EntryPoint]:
    return sorted(entry_points(group=GROUPS[kind]), key=lambda ep: ep.name)


def _attach_to_anomalib(kind: str, name: str, obj: type) -> None:
    host = sys.modules.get(_HOST_MODULES[kind]) or importlib.import_module(_HOST_MODULES[kind])
    existing = getattr(host, name, None)
    if existing is not None and existing is not obj:
        msg = (
            f"anomalib already defines {_HOST_MODULES[kind]}.{name}; a second class with that short "
            "name would make jsonargparse refuse both. Rename the plugin's entry point."
        )
        raise RuntimeError(msg)
    setattr(host, name, obj)
    if kind == "models":
        allowed = getattr(host, "ALLOWED_MODULES", None)
        if isinstance(allowed, set):
            allowed.add(obj.__module__)
            allowed.add(obj.__module__.rsplit(".", 1)[0])


def load_plugins(kind: str | None = None) -> list[PluginInfo]:
    """Import every plugin of ``kind`` (both kinds if ``None``) and register it with anomalib.

    Idempotent and cheap after the first call. Never raises for a broken plugin.

    Returns:
        The :class:`PluginInfo` of each plugin of that kind.
    """
    kinds = [kind] if kind else list(GROUPS)
    out: list[PluginInfo] = []
    with _lock:
        for k in kinds:
            if k not in _loaded_kinds:
                _loaded_kinds.add(k)  # before importing: a plugin importing anomalib must not recurse
                for ep in _entry_points(k):
                    try:
                        obj = ep.load()
                        _attach_to_anomalib(k, ep.name, obj)
                        info = PluginInfo(ep.name, k, ep.value, "loaded")
                    except Exception as exc:  # noqa: BLE001 - reported, not fatal
                        logger.warning("anomalib-3d plugin %s (%s) failed to load: %s", ep.name, ep.value, exc)
                        logger.debug("%s", traceback.format_exc())
                        info = PluginInfo(ep.name, k, ep.value, "failed", f"{type(exc).__name__}: {exc}")
                    _results[(k, ep.name)] = info
            out.extend(v for (kk, _), v in sorted(_results.items()) if kk == k)
    return out


def list_plugins(load: bool = True) -> list[PluginInfo]:
    """Every registered plugin with its status.

    Args:
        load: import the plugins first; with ``False`` unloaded ones show ``"not loaded"``.
    """
    if load:
        # Importing the anomalib hosts fires the hook; load_plugins is a no-op if it already ran.
        for k in GROUPS:
            try:
                importlib.import_module(_HOST_MODULES[k])
            except Exception as exc:  # noqa: BLE001
                logger.warning("could not import %s: %s", _HOST_MODULES[k], exc)
            load_plugins(k)
    infos = []
    for k in GROUPS:
        for ep in _entry_points(k):
            infos.append(_results.get((k, ep.name), PluginInfo(ep.name, k, ep.value, "not loaded")))
    return infos


__all__ = ["GROUPS", "PluginInfo", "list_plugins", "load_plugins"]
