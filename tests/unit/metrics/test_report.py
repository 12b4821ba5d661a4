"""MetricsReport: per-category tables equal per-category metrics computed independently."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from anomalib.data import DepthBatch
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

from anomalib_3d.data.dataclasses import PointCloudBatch, PointCloudItem
from anomalib_3d.metrics import MetricsReport, point_aupro
from anomalib_3d.metrics.report import select_samples


def mixed_batches(seed: int = 0) -> list[PointCloudBatch]:
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(3):
        items = []
        for category in ("gear", "cup", "gear", "cup"):
            n = int(rng.integers(150, 400))
            points = rng.normal(size=(n, 3)).astype(np.float32)
            label = bool(rng.random() < 0.5)
            gt = (points[:, 0] > 1.0) if label else np.zeros(n, dtype=bool)
            score = rng.random(n) + 0.6 * gt
            items.append(
                PointCloudItem(
                    points=torch.from_numpy(points), gt_mask=torch.from_numpy(gt),
                    anomaly_map=torch.from_numpy(score.astype(np.float32)), gt_label=label,
                    pred_score=float(rng.random() + 0.4 * label), category=category,
                ),
            )
        batches.append(PointCloudBatch.collate(items))
    return batches


def test_select_samples_keeps_points_of_the_chosen_clouds() -> None:
    batch = mixed_batches()[0]
    view = select_samples(batch, [1, 3])
    assert len(view) == 2
    assert view.category == ["cup", "cup"]
    expected_points = torch.cat([batch.items[1].points, batch.items[3].points])
    assert torch.equal(view.points, expected_points)
    assert torch.equal(view.batch_index, torch.repeat_interleave(torch.arange(2), batch.num_points[[1, 3]]))
    assert torch.equal(view.pred_score, batch.pred_score[[1, 3]])


def test_report_values_and_files(tmp_path) -> None:
    batches = mixed_batches()
    report = MetricsReport()
    trainer = SimpleNamespace(default_root_dir=tmp_path, datamodule=None, is_global_zero=True)
    report.on_test_start(trainer, None)
    for i, batch in enumerate(batches):
        report.on_test_batch_end(trainer, None, None, batch, i)
    report.on_test_epoch_end(trainer, None)

    results = report.results
    assert list(results) == ["cup", "gear", "mean"]
    for category in ("cup", "gear"):
        items = [item for b in batches for item in b.items if item.category == category]
        labels = np.array([bool(it.gt_label) for it in items])
        scores = np.array([float(it.pred_score) for it in items])
        point_labels = torch.cat([it.gt_mask for it in items]).numpy()
        point_scores = torch.cat([it.anomaly_map for it in items]).numpy()
        joined = PointCloudBatch.collate(items)
        expected = {
            "I-AUROC": roc_auc_score(labels, scores),
            "AP": average_precision_score(labels, scores),
            "P-AUROC": roc_auc_score(point_labels, point_scores),
            "AUPRO": float(point_aupro(joined.anomaly_map, joined.points, joined.gt_mask, joined.batch_index)),
        }
        for column, value in expected.items():
            assert results[category][column] == pytest.approx(value, abs=1e-6), (category, column)
    for column in ("I-AUROC", "AP", "P-AUROC", "AUPRO"):
        assert results["mean"][column] == pytest.approx((results["cup"][column] + results["gear"][column]) / 2)

    with (tmp_path / "metrics_per_category.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["category", "I-AUROC", "AP", "P-AUROC", "AUPRO"]
    assert [r[0] for r in rows[1:]] == ["cup", "gear", "mean"]
    assert float(rows[2][4]) == pytest.approx(results["gear"]["AUPRO"], abs=1e-6)
    markdown = (tmp_path / "metrics_per_category.md").read_text()
    assert "| **mean** |" in markdown and f"{100 * results['cup']['AP']:.1f}" in markdown
    for name in ("roc_curves.png", "pro_curves.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size[0] > 300


def test_undefined_metrics_are_nan_not_zero(tmp_path) -> None:
    # only normal objects in this category: object AUROC / AP and point metrics are undefined
    items = [
        PointCloudItem(points=torch.rand(50, 3), gt_mask=torch.zeros(50, dtype=torch.bool),
                       anomaly_map=torch.rand(50), gt_label=False, pred_score=s, category="only_good")
        for s in (0.1, 0.2)
    ]
    report = MetricsReport(output_dir=tmp_path)
    report.update(PointCloudBatch.collate(items))
    row = report.compute()["only_good"]
    assert all(np.isnan(v) for v in row.values())
    written = report.write(tmp_path)
    assert "–" in written["markdown"].read_text()


def test_depth_batch_uses_datamodule_category(tmp_path) -> None:
    rng = np.random.default_rng(4)
    masks = torch.from_numpy(rng.random((2, 12, 12)) < 0.1)
    batch = DepthBatch(
        image=torch.rand(2, 3, 12, 12), depth_map=torch.rand(2, 3, 12, 12), gt_mask=masks,
        anomaly_map=0.5 * torch.rand(2, 12, 12) + 0.5 * masks, gt_label=torch.tensor([0, 1]),
        pred_score=torch.tensor([0.2, 0.7]),
    )
    trainer = SimpleNamespace(default_root_dir=tmp_path, datamodule=SimpleNamespace(category="bagel"))
    report = MetricsReport(curves=False)
    report.on_test_batch_end(trainer, None, None, batch, 0)
    report.on_test_epoch_end(trainer, None)
    assert list(report.results) == ["bagel", "mean"]
    assert report.results["bagel"]["P-AUROC"] == pytest.approx(
        roc_auc_score(masks.numpy().ravel(), batch.anomaly_map.numpy().ravel()), abs=1e-6,
    )
    assert (tmp_path / "metrics_per_category.csv").exists()
