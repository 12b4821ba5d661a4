"""Arm plugin loading for anomalib, cheaply.

This module is imported from a ``.pth`` file at every interpreter start, so it imports only the
standard library and does nothing but put a finder on ``sys.meta_path``. When ``anomalib.models``
or ``anomalib.data`` finishes executing, the finder calls :func:`anomalib_3d.plugins.load_plugins`
for that kind, which imports our entry points and makes anomalib's CLI and ``get_model`` see them.
When ``anomalib.engine.engine`` finishes, it wraps the Engine's results-folder creation
(:func:`anomalib_3d.runtime.workspace.guard_engine_workspace`: a named error for a read-only or
full results folder, a lock so concurrent runs take distinct version folders) and routes predict
paths that hold point clouds to our dataset (:func:`anomalib_3d.data.predict.install_predict_route`).
When ``anomalib.cli.cli`` finishes, its ``--seed_everything`` is made to seed runs of our models
(:func:`anomalib_3d.runtime.seed.honour_cli_seed`; anomalib 2.7 parses it but never applies it).

Re-entrancy: if anomalib is first imported *by one of our own modules* (``import anomalib_3d.data``
in a fresh interpreter), that module is still half-initialised when anomalib finishes; importing
the plugins right then would fail on it. The load is then deferred until the outermost of our
modules has finished importing. Anything that goes wrong is recorded by ``anomalib_3d.plugins``
and never breaks anomalib itself.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

# anomalib module → plugin kind that must be registered once it has finished importing.
_TRIGGERS = {
    "anomalib.models": "models",
    "anomalib.data": "datamodules",
    "anomalib.engine.engine": "engine",
    "anomalib.cli.cli": "cli",
}
_OWN_PACKAGES = ("anomalib_3d", "anomalib_3d_plugins")
_deferred: list[str] = []


def _own_module_initializing(exclude: str | None = None) -> bool:
    for name, module in list(sys.modules.items()):
        if name == exclude or name.split(".", 1)[0] not in _OWN_PACKAGES:
            continue
        spec = getattr(module, "__spec__", None)
        if spec is not None and getattr(spec, "_initializing", False):
            return True
    return False


def _load(kind: str) -> None:
    try:
        if kind == "engine":
            # The results-folder check and version-folder lock (anomalib_3d.runtime.workspace), and
            # the point-cloud route of Engine.predict(data_path=...) (anomalib_3d.data.predict.router).
            from anomalib_3d.data.predict.router import install_predict_route
            from anomalib_3d.runtime.workspace import guard_engine_workspace

            guard_engine_workspace()
            install_predict_route()
            return
        if kind == "cli":
            # `--seed_everything` applied before the model is built (anomalib_3d.runtime.seed).
            from anomalib_3d.runtime.seed import honour_cli_seed

            honour_cli_seed()
            return
        from anomalib_3d.plugins import load_plugins

        load_plugins(kind)
    except Exception:  # noqa: BLE001 - a plugin problem must never break anomalib itself
        pass


class _LoaderWrapper(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, kind: str | None) -> None:
        self._loader = loader
        self._kind = kind

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        if self._kind is not None:
            if _own_module_initializing():
                _deferred.append(self._kind)
            else:
                _load(self._kind)
        elif _deferred and not _own_module_initializing(exclude=module.__name__):
            while _deferred:
                _load(_deferred.pop(0))

    def __getattr__(self, name: str):  # noqa: ANN204 - delegate get_resource_reader, is_package, ...
        return getattr(self._loader, name)


class _PluginTriggerFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):  # noqa: ANN001, ANN201
        kind = _TRIGGERS.get(fullname)
        own = fullname.split(".", 1)[0] in _OWN_PACKAGES
        if kind is None and not own:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _LoaderWrapper(spec.loader, kind)
                return spec
        return None


def install() -> None:
    """Put the trigger finder first on ``sys.meta_path`` (idempotent)."""
    if any(isinstance(f, _PluginTriggerFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _PluginTriggerFinder())
    # anomalib was imported before the hook was armed (e.g. in an embedded interpreter).
    for name, kind in _TRIGGERS.items():
        if name in sys.modules:
            _load(kind)
