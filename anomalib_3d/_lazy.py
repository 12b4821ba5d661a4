"""Name -> class lookups through our entry-point groups, for lazy ``from anomalib_3d.x import Name``."""

from __future__ import annotations

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
