"""Object- and point-level ranking metrics as anomalib metrics.

* object I-AUROC: anomalib's own ``AUROC(fields=["pred_score", "gt_label"], prefix="image_")``;
* object AP: :class:`AP` — step-wise average precision, ``Σ_n (R_n - R_{n-1}) P_n`` over all
  distinct thresholds, i.e. ``sklearn.metrics.average_precision_score`` (anomalib's ``AUPR``
  computes the same quantity; this subclass only gives it the papers' name ``AP``);
* point P-AUROC: anomalib's ``AUROC(fields=["anomaly_map", "gt_mask"], prefix="point_")``. For a
  ``PointCloudBatch`` both fields are flat per-point tensors ``(ΣN,)`` so every point of every
  cloud counts once, at full resolution, whatever the cloud sizes; for anomalib's ``DepthBatch``
  they are ``(B, H, W)`` pixel maps and the metric is the pixel AUROC.

All thresholds are exact (torchmetrics ``thresholds=None``: no binning), and scores are taken as
they are (``normalization=None``): by default torchmetrics' ROC / PR curves apply a sigmoid to any
*update* holding a value outside ``[0, 1]``, so raw scores (e.g. with the post-processor's
normalisation off) would be squashed in some batches and not in others, and the metric would
silently compare numbers on different scales.
"""

from __future__ import annotations

from typing import Any

from anomalib.metrics import AUROC, AnomalibMetric
from anomalib.metrics.aupr import _AUPR


class AP(AnomalibMetric, _AUPR):  # type: ignore[misc]
    """Average precision (``sklearn.metrics.average_precision_score``) as an anomalib metric.

    Pass ``normalization=None`` (as :func:`image_ap` does) to use raw scores as they are.

    Example:
        >>> ap = AP(fields=["pred_score", "gt_label"], prefix="image_")
        >>> ap.name
        'image_AP'
    """


def image_auroc(**kwargs: Any) -> AUROC:  # noqa: ANN401
    """Object-level AUROC on ``pred_score`` / ``gt_label`` (logged as ``image_AUROC``)."""
    kwargs.setdefault("normalization", None)
    return AUROC(fields=["pred_score", "gt_label"], prefix="image_", **kwargs)


def image_ap(**kwargs: Any) -> AP:  # noqa: ANN401
    """Object-level average precision on ``pred_score`` / ``gt_label`` (logged as ``image_AP``)."""
    kwargs.setdefault("normalization", None)
    return AP(fields=["pred_score", "gt_label"], prefix="image_", **kwargs)


def point_auroc(**kwargs: Any) -> AUROC:  # noqa: ANN401
    """Point-level AUROC on ``anomaly_map`` / ``gt_mask`` over all points (``point_AUROC``).

    ``strict`` defaults to ``False``: a model that gives no per-point scores (or data without point
    labels) skips the metric instead of failing the test run.
    """
    kwargs.setdefault("strict", False)
    kwargs.setdefault("normalization", None)
    return AUROC(fields=["anomaly_map", "gt_mask"], prefix="point_", **kwargs)


__all__ = ["AP", "image_ap", "image_auroc", "point_auroc"]
