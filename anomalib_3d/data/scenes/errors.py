"""Named errors of multi-view scene data (members of the :class:`~anomalib_3d.data.errors.PointCloudError` family).

They live here rather than in :mod:`anomalib_3d.data.errors` only because scene data arrived
later; ``from anomalib_3d.data.scenes import InvalidSceneError`` is the public path.
"""

from __future__ import annotations

from anomalib_3d.data.errors import PointCloudError


class InvalidSceneError(PointCloudError):
    """A scene folder or its metadata is malformed (base of the scene errors)."""


class MissingViewError(InvalidSceneError, FileNotFoundError):
    """A view listed by the metadata has no image (or its depth / mask file is missing)."""


class InvalidPoseError(InvalidSceneError):
    """A camera pose is not a finite 4 x 4 rigid world-to-camera matrix, or ``K`` is not 3 x 3."""


class InvalidBoxError(InvalidSceneError):
    """An object's ``bbox`` is not ``[[cx, cy, cz], [h, w, d]]`` with finite values and positive sizes."""


class UnknownSplitError(InvalidSceneError):
    """The split file is missing, malformed, or lacks the requested split / a listed scene."""


__all__ = ["InvalidBoxError", "InvalidPoseError", "InvalidSceneError", "MissingViewError", "UnknownSplitError"]
