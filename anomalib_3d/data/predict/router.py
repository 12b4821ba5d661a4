"""``Engine.predict(data_path=...)`` and ``anomalib predict --data <path>`` for point clouds.

anomalib 2.7 turns a data path into ``PredictDataset(data_path)``, a dataset of *images*, looked up
by name in ``anomalib.engine.engine`` when ``Engine.predict`` runs. :func:`install_predict_route`
puts :class:`PointCloudPredictRoute` under that name (no file of anomalib changes; the import hook of
:mod:`anomalib_3d._hook` calls it when ``anomalib.engine`` is imported): a path that holds point
clouds (:func:`~anomalib_3d.data.predict.holds_point_clouds`) becomes a
:class:`~anomalib_3d.data.predict.PointCloudPredictDataset`, any other path anomalib's own
``PredictDataset``, built with the same arguments, so image folders behave exactly as before.

``ANOMALIB3D_PREDICT_ROUTE=0`` leaves anomalib's name alone; the explicit equivalent that needs no
route is ``--data anomalib_3d.data.PointCloudPredictDataset --data.path <path>``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from anomalib.data import PredictDataset

_ENVIRONMENT = "ANOMALIB3D_PREDICT_ROUTE"
_ENGINE_MODULE = "anomalib.engine.engine"


class PointCloudPredictRoute(PredictDataset):
    """Stands where ``anomalib.engine.engine`` looks up ``PredictDataset``; builds the right dataset.

    ``PointCloudPredictRoute(path, ...)`` returns a
    :class:`~anomalib_3d.data.predict.PointCloudPredictDataset` when ``path`` holds point clouds,
    else ``anomalib.data.PredictDataset(path, ...)`` (never an instance of this class).
    """

    def __new__(cls, path: str | Path, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        del cls
        from anomalib_3d.data.predict.inputs import holds_point_clouds

        if not args and not kwargs and holds_point_clouds(path):
            from anomalib_3d.data.predict.dataset import PointCloudPredictDataset

            return PointCloudPredictDataset(path)
        return PredictDataset(path, *args, **kwargs)


def install_predict_route() -> bool:
    """Put :class:`PointCloudPredictRoute` in place of ``anomalib.engine.engine.PredictDataset``.

    Idempotent; does nothing before ``anomalib.engine`` is imported.

    Returns:
        Whether the route is in place (``False`` when ``ANOMALIB3D_PREDICT_ROUTE=0``).
    """
    if os.environ.get(_ENVIRONMENT, "").strip() == "0":
        return False
    module = sys.modules.get(_ENGINE_MODULE)
    if module is None:
        return False
    if getattr(module, "PredictDataset", None) is not PointCloudPredictRoute:
        module.PredictDataset = PointCloudPredictRoute
    return True


__all__ = ["PointCloudPredictRoute", "install_predict_route"]
