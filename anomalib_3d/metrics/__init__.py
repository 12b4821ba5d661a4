"""Evaluation of 3D anomaly detection: the papers' metrics as anomalib metrics, and reports.

* :func:`default_evaluator` — anomalib ``Evaluator`` with ``image_AUROC``, ``image_AP``,
  ``point_AUROC`` and ``point_AUPRO``;
* :class:`PointAUPRO` / :func:`pixel_aupro` / :func:`point_aupro` — AUPRO (FPR limit 0.3) on
  pixel maps, organized and unorganized clouds (:mod:`anomalib_3d.metrics.aupro`);
* :class:`AP` — average precision (:mod:`anomalib_3d.metrics.point`);
* :class:`MetricsReport` — per-category tables and curves at the end of ``test``.
"""

from anomalib_3d.metrics.aupro import (
    DEFAULT_RADIUS_FACTOR,
    PointAUPRO,
    area_under_curve_to,
    pixel_aupro,
    pixel_region_labels,
    point_aupro,
    point_region_labels,
    pro_curve,
)
from anomalib_3d.metrics.evaluator import default_evaluator, default_metrics
from anomalib_3d.metrics.point import AP, image_ap, image_auroc, point_auroc
from anomalib_3d.metrics.report import MetricsReport

__all__ = [
    "AP",
    "DEFAULT_RADIUS_FACTOR",
    "MetricsReport",
    "PointAUPRO",
    "area_under_curve_to",
    "default_evaluator",
    "default_metrics",
    "image_ap",
    "image_auroc",
    "pixel_aupro",
    "pixel_region_labels",
    "point_aupro",
    "point_auroc",
    "point_region_labels",
    "pro_curve",
]
