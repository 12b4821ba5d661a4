"""PointCloudItem / PointCloudBatch: validation, collate, split, pad, and anomalib components."""

from __future__ import annotations

import pytest
import torch

from anomalib_3d.data.dataclasses import PointCloudBatch, PointCloudItem
from anomalib_3d.data.errors import EmptyPointCloudError, GroundTruthMismatchError, InvalidPointsError


def _item(n: int, label: int, seed: int) -> PointCloudItem:
    g = torch.Generator().manual_seed(seed)
    gt = torch.zeros(n, dtype=torch.bool)
    if label:
        gt[: n // 5] = True
    return PointCloudItem(points=torch.rand(n, 3, generator=g), gt_label=label, gt_mask=gt,
                          category="c", point_path=f"/x/{seed}.pcd")


def test_collate_concatenates_and_items_split_back() -> None:
    items = [_item(10, 0, 0), _item(7, 1, 1), _item(3, 1, 2)]
    batch = PointCloudBatch.collate(items)
    assert batch.batch_size == 3 and len(batch) == 3
    assert batch.points.shape == (20, 3)
    assert batch.batch_index.tolist() == [0] * 10 + [1] * 7 + [2] * 3
    assert batch.ptr.tolist() == [0, 10, 17, 20]
    assert batch.num_points.tolist() == [10, 7, 3]
    for original, back in zip(items, batch.items, strict=True):
        assert torch.equal(original.points, back.points)
        assert torch.equal(original.gt_mask, back.gt_mask)
        assert bool(original.gt_label) == bool(back.gt_label)
        assert original.point_path == back.point_path


def test_pad_gives_dense_view_and_refuses_truncation() -> None:
    batch = PointCloudBatch.collate([_item(4, 0, 0), _item(2, 0, 1)])
    dense, valid = batch.pad()
    assert dense.shape == (2, 4, 3) and valid.sum() == 6
    assert torch.equal(dense[1, :2], batch.points[4:6]) and not valid[1, 2:].any()
    assert (dense[1, 2:] == 0).all()
    with pytest.raises(ValueError, match="smaller than the largest cloud"):
        batch.pad(max_points=3)


def test_collate_refuses_partially_missing_fields() -> None:
    a = _item(4, 0, 0)
    b = PointCloudItem(points=torch.rand(4, 3), gt_label=0)  # no gt_mask
    with pytest.raises(ValueError, match="gt_mask"):
        PointCloudBatch.collate([a, b])


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"points": torch.rand(5, 2)}, InvalidPointsError),
        ({"points": torch.zeros(0, 3)}, EmptyPointCloudError),
        ({"points": torch.tensor([[0.0, float("inf"), 0.0]])}, InvalidPointsError),
        ({"points": torch.rand(5, 3), "gt_mask": torch.zeros(4)}, GroundTruthMismatchError),
        ({"points": torch.rand(5, 3), "colors": torch.rand(6, 3)}, GroundTruthMismatchError),
        ({"points": torch.rand(5, 3), "gt_mask": torch.zeros(5, 2)}, GroundTruthMismatchError),
    ],
)
def test_bad_items_raise_named_errors(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        PointCloudItem(**kwargs)


def test_unsorted_batch_index_is_refused() -> None:
    with pytest.raises(ValueError, match="sorted"):
        PointCloudBatch(points=torch.rand(3, 3), batch_index=torch.tensor([1, 0, 1]))


def test_update_with_predictions_validates_shapes() -> None:
    batch = PointCloudBatch.collate([_item(4, 0, 0), _item(2, 1, 1)])
    batch.update(anomaly_map=torch.rand(6), pred_score=torch.rand(2))
    assert batch.anomaly_map.shape == (6,)
    with pytest.raises(GroundTruthMismatchError):
        batch.update(anomaly_map=torch.rand(5))


def test_lightning_moves_batches_between_devices() -> None:
    from lightning.pytorch.utilities import move_data_to_device

    batch = PointCloudBatch.collate([_item(4, 0, 0), _item(2, 1, 1)])
    moved = move_data_to_device(batch, torch.device("cpu"))
    assert isinstance(moved, PointCloudBatch)
    assert torch.equal(moved.points, batch.points) and torch.equal(moved.batch_index, batch.batch_index)


def test_anomalib_post_processor_and_auroc_run_on_point_batches() -> None:
    """anomalib's own PostProcessor and AUROC accept ragged per-point fields unchanged."""
    from anomalib.metrics import AUROC
    from anomalib.post_processing import PostProcessor
    from sklearn.metrics import roc_auc_score

    items = [_item(50, i % 2, i) for i in range(6)]
    batch = PointCloudBatch.collate(items)
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(batch.points.shape[0], generator=g) + batch.gt_mask.float() * 0.5
    batch.update(anomaly_map=scores, pred_score=torch.rand(6, generator=g))

    metric = AUROC(fields=["anomaly_map", "gt_mask"], prefix="point_")
    metric.update(batch)
    expected = roc_auc_score(batch.gt_mask.numpy(), scores.numpy())
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-6)

    post = PostProcessor()
    post.on_validation_batch_end(None, None, batch)
    post.on_validation_epoch_end(None, None)
    post.on_test_batch_end(None, None, batch)
    assert batch.pred_mask is not None and batch.pred_mask.shape == (300,)
    assert batch.pred_label.shape == (6,)
    assert float(batch.anomaly_map.min()) >= 0.0 and float(batch.anomaly_map.max()) <= 1.0


def test_paths_may_be_missing_for_some_clouds() -> None:
    """A good sample has no GT file: mask_path collates to "" and splits back to None."""
    a = PointCloudItem(points=torch.rand(4, 3), gt_label=1, gt_mask=torch.ones(4), mask_path="/gt/a.txt")
    b = PointCloudItem(points=torch.rand(3, 3), gt_label=0, gt_mask=torch.zeros(3))
    batch = PointCloudBatch.collate([a, b])
    assert batch.mask_path == ["/gt/a.txt", ""]
    assert batch.items[0].mask_path == "/gt/a.txt" and batch.items[1].mask_path is None
