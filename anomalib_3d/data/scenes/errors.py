"""Named errors of multi-view scene data, under the scene package's name.

They are members of the :class:`~anomalib_3d.errors.PointCloudError` family and defined beside
it in :mod:`anomalib_3d.errors`; ``from anomalib_3d.data.scenes import InvalidSceneError`` is the
public path.
"""

from __future__ import annotations

from anomalib_3d.errors import InvalidBoxError, InvalidPoseError, InvalidSceneError, MissingViewError, UnknownSplitError

__all__ = ["InvalidBoxError", "InvalidPoseError", "InvalidSceneError", "MissingViewError", "UnknownSplitError"]
