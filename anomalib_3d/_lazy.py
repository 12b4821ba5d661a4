"""Lazy package attributes: ``from anomalib_3d.x import Name`` imports ``Name``'s module on first access.

Packages here stay cheap to import (the ``.pth`` hook imports ``anomalib_3d`` at interpreter start,
and a plugin's sub-module must not import ``anomalib.models``, whose import hook loads the plugin).
Each declares what it exports and where, and takes its module ``__getattr__`` / ``__dir__`` from
:func:`lazy_exports`; names may also come from one of our entry-point groups.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from importlib.metadata import entry_points
from typing import Any


@cache
def _group(group: str) -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=group)}


def entry_point_names(group: str) -> set[str]:
    """The short names registered in an entry-point group (nothing is imported)."""
    return set(_group(group))


def load_entry_point(group: str, name: str) -> Any:  # noqa: ANN401
    """Import and return the object registered as ``name`` in ``group``."""
    return _group(group)[name].load()


def lazy_exports(
    package: str,
    exports: Mapping[str, Sequence[str]],
    entry_point_group: str | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__`` that import each exported name where it lives.

    Args:
        package: the module's ``__name__``.
        exports: module -> the names it exports; the module absolute (``anomalib_3d.data.dataclasses``)
            or relative to ``package`` (``.base``).
        entry_point_group: also export every name registered in this group (plugins).

    Returns:
        ``(__getattr__, __dir__)``; assign them at module level.

    Example:
        >>> __getattr__, __dir__ = lazy_exports(__name__, {".real3d_ad": ["Real3DAD"]})  # doctest: +SKIP
    """
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:  # noqa: ANN401, N807
        if name in where:
            return getattr(importlib.import_module(where[name], package), name)
        if entry_point_group is not None and name in entry_point_names(entry_point_group):
            return load_entry_point(entry_point_group, name)
        msg = f"module {package!r} has no attribute {name!r}"
        raise AttributeError(msg)

    def __dir__() -> list[str]:  # noqa: N807
        names = set(importlib.import_module(package).__dict__) | set(where)
        if entry_point_group is not None:
            names |= entry_point_names(entry_point_group)
        return sorted(names)

    return __getattr__, __dir__


def exported_names(exports: Mapping[str, Sequence[str]]) -> list[str]:
    """Every name of a :func:`lazy_exports` table, sorted (a package's ``__all__``)."""
    return sorted(name for names in exports.values() for name in names)
