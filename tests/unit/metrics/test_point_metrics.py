"""Object / point metrics and the default evaluator against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from anomalib.data import DepthBatch
from anomalib.metrics import Evaluator
from sklearn.metrics import average_precision_score, roc_auc_score

from anomalib_3d.data.dataclasses import PointCloudBatch, PointCloudItem
from anomalib_3d.metrics import AP, default_evaluator, image_ap, image_auroc, point_auroc


def ragged_batch(rng: np.random.Generator, sizes: list[int], quantize: bool = False) -> PointCloudBatch:
    items = []
    for n in sizes:
        gt = rng.random(n) < 0.15
        score = rng.random(n) + 0.5 * gt
        if quantize:
            score = np.round(score * 8) / 8
        items.append(
            PointCloudItem(
                points=torch.from_numpy(rng.normal(size=(n, 3)).astype(np.float32)),
                gt_mask=torch.from_numpy(gt),
                anomaly_map=torch.from_numpy(score.astype(np.float32)),
                gt_label=bool(rng.random() < 0.5),
                pred_score=float(rng.random()),
            ),
        )
    return PointCloudBatch.collate(items)


@pytest.mark.parametrize("quantize", [False, True])
def test_point_auroc_equals_sklearn_on_ragged_batches(quantize: bool) -> None:
    rng = np.random.default_rng(0)
    batches = [ragged_batch(rng, [37, 500, 1203], quantize), ragged_batch(rng, [64, 9], quantize)]
    metric = point_auroc()
    for batch in batches:
        metric.update(batch)
    scores = torch.cat([b.anomaly_map for b in batches]).numpy()
    labels = torch.cat([b.gt_mask for b in batches]).numpy()
    assert metric.name == "point_AUROC"
    assert float(metric.compute()) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)


def test_raw_scores_are_not_squashed_batch_by_batch() -> None:
    """One update in [0, 1], one outside: torchmetrics' default would sigmoid only the second."""
    # squashed, the second batch's 0.9 would become 0.71 and rank below the first batch's 0.75
    first = type("B", (), {"pred_score": torch.tensor([0.95, 0.75, 0.2]), "gt_label": torch.tensor([1, 0, 0])})()
    second = type("B", (), {"pred_score": torch.tensor([0.9, 3.0, 0.1]), "gt_label": torch.tensor([1, 1, 0])})()
    labels = np.array([1, 0, 0, 1, 1, 0])
    scores = np.array([0.95, 0.75, 0.2, 0.9, 3.0, 0.1])
    auroc, ap = image_auroc(), image_ap()
    for batch in (first, second):
        auroc.update(batch)
        ap.update(batch)
    assert float(auroc.compute()) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert float(ap.compute()) == pytest.approx(average_precision_score(labels, scores), abs=1e-6)


def test_object_auroc_and_ap_equal_sklearn_with_ties() -> None:
    rng = np.random.default_rng(1)
    labels = rng.random(60) < 0.4
    scores = np.round(0.7 * rng.random(60) + 0.3 * labels, 1).astype(np.float32)  # many ties
    batch = type("B", (), {"pred_score": torch.from_numpy(scores), "gt_label": torch.from_numpy(labels)})()
    auroc, ap = image_auroc(), image_ap()
    auroc.update(batch)
    ap.update(batch)
    assert (auroc.name, ap.name) == ("image_AUROC", "image_AP")
    assert float(auroc.compute()) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert float(ap.compute()) == pytest.approx(average_precision_score(labels, scores), abs=1e-6)


def test_ap_hand_case() -> None:
    # ranking: pos, neg, pos -> precisions at the positives 1 and 2/3 -> AP = (1 + 2/3) / 2
    ap = AP(fields=["pred_score", "gt_label"])
    ap.update(type("B", (), {"pred_score": torch.tensor([0.9, 0.8, 0.7]), "gt_label": torch.tensor([1, 0, 1])})())
    assert float(ap.compute()) == pytest.approx(5 / 6, abs=1e-7)


def test_pixel_auroc_on_depth_batch() -> None:
    rng = np.random.default_rng(2)
    masks = torch.from_numpy(rng.random((2, 16, 16)) < 0.1)
    maps = 0.6 * torch.rand(2, 16, 16) + 0.4 * masks
    batch = DepthBatch(
        image=torch.rand(2, 3, 16, 16), depth_map=torch.rand(2, 3, 16, 16), gt_mask=masks,
        anomaly_map=maps, gt_label=torch.tensor([1, 1]), pred_score=torch.tensor([0.2, 0.8]),
    )
    metric = point_auroc()
    metric.update(batch)
    expected = roc_auc_score(masks.numpy().ravel(), maps.numpy().ravel())
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-6)


def test_default_evaluator_names_and_values() -> None:
    evaluator = default_evaluator()
    assert isinstance(evaluator, Evaluator)
    assert [m.name for m in evaluator.test_metrics] == ["image_AUROC", "image_AP", "point_AUROC", "point_AUPRO"]
    rng = np.random.default_rng(3)
    batches = [ragged_batch(rng, [200, 300, 150]), ragged_batch(rng, [250, 120])]
    for i, batch in enumerate(batches):
        evaluator.on_test_batch_end(None, None, None, batch, i)
    values = {m.name: float(m.compute()) for m in evaluator.test_metrics}
    labels = torch.cat([b.gt_label for b in batches]).numpy()
    scores = torch.cat([b.pred_score for b in batches]).numpy()
    assert values["image_AUROC"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert values["image_AP"] == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
    point_labels = torch.cat([b.gt_mask for b in batches]).numpy()
    point_scores = torch.cat([b.anomaly_map for b in batches]).numpy()
    assert values["point_AUROC"] == pytest.approx(roc_auc_score(point_labels, point_scores), abs=1e-6)
    assert 0.0 <= values["point_AUPRO"] <= 1.0


def test_point_metrics_skip_batches_without_point_scores() -> None:
    evaluator = default_evaluator()
    batch = PointCloudBatch.collate(
        [PointCloudItem(points=torch.rand(10, 3), gt_label=lbl, pred_score=s) for lbl, s in ((0, 0.1), (1, 0.9))],
    )
    evaluator.on_test_batch_end(None, None, None, batch, 0)
    image_metric, _, point_metric, aupro_metric = evaluator.test_metrics
    assert float(image_metric.compute()) == 1.0
    assert point_metric.compute() is None
    assert aupro_metric.compute() is None
