"""Evaluation of 3D anomaly detection: the papers' metrics as anomalib metrics, and reports.

* :func:`default_evaluator` — anomalib ``Evaluator`` with ``image_AUROC``, ``image_AP``,
  ``point_AUROC`` and ``point_AUPRO``;
* :class:`PointAUPRO` / :func:`pixel_aupro` / :func:`point_aupro` — AUPRO (FPR limit 0.3) on
  pixel maps, organized and unorganized clouds (:mod:`anomalib_3d.metrics.aupro`);
* :class:`AP` — average precision (:mod:`anomalib_3d.metrics.point`);
* :class:`MetricsReport` — per-category tables and curves at the end of ``test``;
* :class:`ObjectAccuracy` / :func:`box_iou_3d` / :func:`match_boxes` — object-level accuracy of
  scene models (box IoU > 0.5 and the right label; :mod:`anomalib_3d.metrics.objects`).
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
from anomalib_3d.metrics.objects import (
    ObjectAccuracy,
    box_iou_3d,
    ground_truth_scores,
    match_boxes,
    object_accuracy,
    object_correct,
)
from anomalib_3d.metrics.point import AP, image_ap, image_auroc, point_auroc
from anomalib_3d.metrics.report import MetricsReport

__all__ = [
    "AP",
    "DEFAULT_RADIUS_FACTOR",
    "MetricsReport",
    "ObjectAccuracy",
    "PointAUPRO",
    "area_under_curve_to",
    "box_iou_3d",
    "default_evaluator",
    "default_metrics",
    "ground_truth_scores",
    "image_ap",
    "image_auroc",
    "match_boxes",
    "object_accuracy",
    "object_correct",
    "pixel_aupro",
    "pixel_region_labels",
    "point_aupro",
    "point_auroc",
    "point_region_labels",
    "pro_curve",
]
