"""The papers' test metrics as one anomalib ``Evaluator``."""

from __future__ import annotations

from anomalib.metrics import AnomalibMetric, Evaluator

from anomalib_3d.metrics.aupro import DEFAULT_RADIUS_FACTOR, PointAUPRO
from anomalib_3d.metrics.point import image_ap, image_auroc, point_auroc


def default_metrics(
    fpr_limit: float = 0.3,
    radius_factor: float = DEFAULT_RADIUS_FACTOR,
) -> list[AnomalibMetric]:
    """Fresh instances of the four test metrics.

    Returns:
        ``[image_AUROC, image_AP, point_AUROC, point_AUPRO]``. Object metrics are strict (a test
        set always has labels and every model gives object scores); point metrics are not (a model
        or a dataset without per-point scores / labels skips them).
    """
    return [
        image_auroc(),
        image_ap(),
        point_auroc(strict=False),
        PointAUPRO(strict=False, fpr_limit=fpr_limit, radius_factor=radius_factor),
    ]


def default_evaluator(
    fpr_limit: float = 0.3,
    radius_factor: float = DEFAULT_RADIUS_FACTOR,
    compute_on_cpu: bool = True,
) -> Evaluator:
    """``Evaluator(test_metrics=[image_AUROC, image_AP, point_AUROC, point_AUPRO])``.

    Args:
        fpr_limit: AUPRO integration limit.
        radius_factor: AUPRO region radius of unorganized clouds, in median point spacings.
        compute_on_cpu: forwarded to anomalib's ``Evaluator``.
    """
    return Evaluator(test_metrics=default_metrics(fpr_limit, radius_factor), compute_on_cpu=compute_on_cpu)


__all__ = ["default_evaluator", "default_metrics"]
