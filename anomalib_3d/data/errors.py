"""The named errors of bad 3D input, under the data layer's name.

They are defined once, in :mod:`anomalib_3d.errors` (the package root, so that every layer can
raise them); ``from anomalib_3d.data.errors import PointCloudError`` keeps working.
"""

from __future__ import annotations

from anomalib_3d.errors import *  # noqa: F403  (the whole family, under this name too)
from anomalib_3d.errors import __all__  # noqa: F401
