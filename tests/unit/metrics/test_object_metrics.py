"""Object-level metrics (Odd-One-Out): 3D IoU against hand-computed cases and a brute-force loop,
one-to-one matching, the paper's and the official code's accuracy on a hand-computed set, and the
anomalib metric inside ``anomalib.metrics.Evaluator``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from anomalib.metrics import AUROC, Evaluator
from torchmetrics.utilities import dim_zero_cat

from anomalib_3d.data.scenes import SceneBatch
from anomalib_3d.metrics.objects import (
    ObjectAccuracy,
    SceneObjectAUROC,
    box_iou_3d,
    ground_truth_scores,
    match_boxes,
    object_accuracy,
    object_correct,
    scene_object_auroc,
)


def _box(centre, size) -> list[list[float]]:  # noqa: ANN001
    return [list(map(float, centre)), list(map(float, size))]


def _boxes(*boxes) -> torch.Tensor:  # noqa: ANN002
    return torch.tensor([list(b) for b in boxes], dtype=torch.float32).reshape(-1, 2, 3)


def _interval_box(lo: float, hi: float) -> list[list[float]]:
    """Unit cross-section, x from lo to hi: IoU reduces to the 1D interval IoU."""
    return _box(((lo + hi) / 2, 0, 0), (hi - lo, 1, 1))


# ---------------------------------------------------------------------------------------------
# IoU


def test_iou_hand_computed_cases() -> None:
    unit = _box((0, 0, 0), (1, 1, 1))
    a = _boxes(unit)
    b = _boxes(
        unit,  # identical: 1
        _box((3, 0, 0), (1, 1, 1)),  # disjoint: 0
        _box((0.5, 0, 0), (1, 1, 1)),  # half of each overlaps: 0.5 / 1.5 = 1/3
        _box((0, 0, 0), (2, 2, 2)),  # unit cube nested in a 2-cube: 1 / 8
        _box((1, 0, 0), (1, 1, 1)),  # touching faces: 0
        _box((0.5, 0.5, 0.5), (1, 1, 1)),  # corner overlap 0.125 / (2 - 0.125)
    )
    expected = torch.tensor([[1.0, 0.0, 1 / 3, 1 / 8, 0.0, 0.125 / 1.875]])
    assert torch.allclose(box_iou_3d(a, b), expected, atol=1e-6)
    assert torch.allclose(box_iou_3d(b, a), expected.T, atol=1e-6)
    assert box_iou_3d(a, _boxes()).shape == (1, 0)


def test_iou_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(-1, 1, (7, 1, 3)), rng.uniform(0.1, 1.5, (7, 1, 3))], axis=1)
    b = np.concatenate([rng.uniform(-1, 1, (5, 1, 3)), rng.uniform(0.1, 1.5, (5, 1, 3))], axis=1)
    reference = np.zeros((7, 5))
    for i, j in itertools.product(range(7), range(5)):
        lo = np.maximum(a[i, 0] - a[i, 1] / 2, b[j, 0] - b[j, 1] / 2)
        hi = np.minimum(a[i, 0] + a[i, 1] / 2, b[j, 0] + b[j, 1] / 2)
        inter = np.prod(np.clip(hi - lo, 0, None))
        reference[i, j] = inter / (np.prod(a[i, 1]) + np.prod(b[j, 1]) - inter)
    ours = box_iou_3d(torch.from_numpy(a), torch.from_numpy(b))
    assert ours.dtype == torch.float64
    assert np.allclose(ours.numpy(), reference, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# matching


def test_match_is_one_to_one_and_strictly_above_threshold() -> None:
    gt = _boxes(_box((0, 0, 0), (1, 1, 1)), _box((5, 0, 0), (1, 1, 1)))
    pred = _boxes(
        _box((0.05, 0, 0), (1, 1, 1)),  # IoU 0.905 with gt 0
        _box((0, 0, 0), (1, 1, 1)),  # exact duplicate of gt 0
        _box((5, 0, 0), (2, 1, 1)),  # IoU exactly 0.5 with gt 1: not a match
    )
    pred_index, gt_index = match_boxes(pred, gt, 0.5)
    assert pred_index.tolist() == [1]
    assert gt_index.tolist() == [0]
    pred_index, gt_index = match_boxes(pred, gt, 0.49)
    assert list(zip(pred_index.tolist(), gt_index.tolist(), strict=True)) == [(1, 0), (2, 1)]


def test_greedy_and_hungarian_differ_only_on_overlapping_ground_truth() -> None:
    # 1D intervals: IoU(p1, g1) = 0.905, IoU(p1, g2) = 0.739, IoU(p2, g1) = 0.667, IoU(p2, g2) = 0.43
    gt = _boxes(_interval_box(0, 10), _interval_box(2, 12))
    pred = _boxes(_interval_box(0.5, 10.5), _interval_box(-2, 8))
    iou = box_iou_3d(pred, gt)
    assert torch.allclose(iou, torch.tensor([[9.5 / 10.5, 8.5 / 11.5], [8 / 12, 6 / 14]]), atol=1e-6)
    greedy = match_boxes(pred, gt, 0.5, "greedy")
    hungarian = match_boxes(pred, gt, 0.5, "hungarian")
    assert list(zip(*(t.tolist() for t in greedy), strict=True)) == [(0, 0)]
    assert list(zip(*(t.tolist() for t in hungarian), strict=True)) == [(1, 0), (0, 1)]
    # disjoint ground truth: both give the same pairs
    gt = _boxes(_box((0, 0, 0), (1, 1, 1)), _box((3, 0, 0), (1, 1, 1)), _box((6, 0, 0), (1, 1, 1)))
    pred = _boxes(_box((3.1, 0, 0), (1, 1, 1)), _box((0, 0.1, 0), (1, 1, 1)), _box((0, 0, 0), (1.1, 1, 1)))
    for a, b in zip(match_boxes(pred, gt, 0.5, "greedy"), match_boxes(pred, gt, 0.5, "hungarian"), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# accuracy on a hand-computed set

# Scene 0: three objects, labels normal / odd / normal.
#   obj 0: matched (IoU 0.905), score 0.2 -> normal: correct
#   obj 1: matched exactly, score 0.3 -> normal, but it is odd: wrong label
#   obj 2: no box near it: missed (paper: wrong)
#   plus a false positive far away (score 0.9)
# Scene 1: two objects, odd / normal.
#   obj 0: two duplicate boxes, IoU 1.0 with score 0.9 (correct) and IoU 0.74 with score 0.1
#   obj 1: matched, score 0.4 -> normal: correct
GT_BOXES = _boxes(
    _box((0, 0, 0), (1, 1, 1)), _box((3, 0, 0), (1, 1, 1)), _box((6, 0, 0), (1, 1, 1)),
    _box((0, 0, 0), (1, 1, 1)), _box((3, 0, 0), (1, 1, 1)),
)
GT_LABELS = torch.tensor([False, True, False, True, False])
GT_BATCH = torch.tensor([0, 0, 0, 1, 1])
PRED_BOXES = _boxes(
    _box((0.05, 0, 0), (1, 1, 1)), _box((3, 0, 0), (1, 1, 1)), _box((20, 20, 0), (1, 1, 1)),
    _box((0, 0, 0), (1, 1, 1)), _box((0.15, 0, 0), (1, 1, 1)), _box((3, 0, 0), (1, 1, 1.1)),
)
PRED_SCORES = torch.tensor([0.2, 0.3, 0.9, 0.9, 0.1, 0.4])
PRED_BATCH = torch.tensor([0, 0, 0, 1, 1, 1])


def test_paper_accuracy_hand_computed() -> None:
    correct = object_correct(PRED_BOXES, PRED_SCORES, PRED_BATCH, GT_BOXES, GT_LABELS, GT_BATCH)
    assert correct.tolist() == [True, False, False, True, True]
    accuracy = object_accuracy(PRED_BOXES, PRED_SCORES, PRED_BATCH, GT_BOXES, GT_LABELS, GT_BATCH)
    assert accuracy.item() == pytest.approx((1 / 3 + 2 / 2) / 2)  # averaged over scenes


def test_pooled_accuracy_hand_computed() -> None:
    # official code: every object takes the label of its highest-IoU box, no IoU threshold;
    # obj 2 of scene 0 overlaps nothing: the first box of the scene (score 0.2, normal) decides -> correct
    correct = object_correct(PRED_BOXES, PRED_SCORES, PRED_BATCH, GT_BOXES, GT_LABELS, GT_BATCH, pooled=True)
    assert correct.tolist() == [True, False, True, True, True]
    accuracy = object_accuracy(PRED_BOXES, PRED_SCORES, PRED_BATCH, GT_BOXES, GT_LABELS, GT_BATCH, pooled=True)
    assert accuracy.item() == pytest.approx(4 / 5)  # pooled over objects


def test_duplicates_are_not_double_counted() -> None:
    gt = _boxes(_box((0, 0, 0), (1, 1, 1)), _box((5, 0, 0), (1, 1, 1)))
    pred = _boxes(*[_box((0.01 * i, 0, 0), (1, 1, 1)) for i in range(4)])  # four hits on object 0 only
    scores = torch.full((4,), 0.9)
    labels = torch.tensor([True, True])
    assert object_correct(pred, scores, None, gt, labels, None).tolist() == [True, False]
    assert object_accuracy(pred, scores, None, gt, labels, None).item() == pytest.approx(0.5)


def test_scene_without_predictions_counts_its_objects_wrong() -> None:
    pred_boxes, pred_scores, pred_batch = PRED_BOXES[:3], PRED_SCORES[:3], PRED_BATCH[:3]  # scene 1: none
    for pooled in (False, True):
        correct = object_correct(pred_boxes, pred_scores, pred_batch, GT_BOXES, GT_LABELS, GT_BATCH, pooled=pooled)
        assert correct[3:].tolist() == [False, False]


def test_fallback_to_ground_truth_boxes_is_label_accuracy() -> None:
    scores = torch.tensor([0.1, 0.7, 0.6, 0.5, 0.2])  # labels F T F T F -> correct T T F T T
    correct = object_correct(None, scores, None, GT_BOXES, GT_LABELS, GT_BATCH)
    assert correct.tolist() == [True, True, False, True, True]
    assert object_accuracy(None, scores, None, None, GT_LABELS, GT_BATCH).item() == pytest.approx((2 / 3 + 1) / 2)
    assert object_accuracy(None, scores, None, None, GT_LABELS, GT_BATCH, pooled=True).item() == pytest.approx(0.8)
    # the same as predicting the ground-truth boxes themselves
    same = object_accuracy(GT_BOXES, scores, GT_BATCH, GT_BOXES, GT_LABELS, GT_BATCH)
    assert same.item() == pytest.approx((2 / 3 + 1) / 2)


def test_ground_truth_scores_take_the_best_overlapping_box() -> None:
    scores = ground_truth_scores(PRED_BOXES, PRED_SCORES, PRED_BATCH, GT_BOXES, GT_BATCH, fill=-1.0)
    assert scores.tolist() == pytest.approx([0.2, 0.3, -1.0, 0.9, 0.4])


# ---------------------------------------------------------------------------------------------
# anomalib metric


def _scene_batch(split: slice, object_scores: torch.Tensor, with_predictions: bool = True) -> SceneBatch:
    """A SceneBatch holding the scenes of GT_* selected by ``split`` (scene indices)."""
    scenes = list(range(2))[split]
    keep = torch.isin(GT_BATCH, torch.tensor(scenes))
    keep_pred = torch.isin(PRED_BATCH, torch.tensor(scenes))
    batch = SceneBatch(
        image=torch.rand(len(scenes), 2, 3, 4, 4),
        boxes=GT_BOXES[keep],
        object_labels=GT_LABELS[keep],
        object_scores=object_scores[keep],
        object_batch=GT_BATCH[keep] - scenes[0],
        gt_label=torch.ones(len(scenes), dtype=torch.bool),
        pred_score=torch.rand(len(scenes)),
    )
    if with_predictions:
        batch.update(pred_boxes=PRED_BOXES[keep_pred], pred_object_scores=PRED_SCORES[keep_pred],
                     pred_object_batch=PRED_BATCH[keep_pred] - scenes[0])
    return batch


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("with_predictions", [True, False])
def test_metric_in_evaluator_equals_functional(pooled: bool, with_predictions: bool) -> None:
    object_scores = torch.tensor([0.1, 0.7, 0.6, 0.5, 0.2])
    batches = [_scene_batch(slice(0, 1), object_scores, with_predictions),
               _scene_batch(slice(1, 2), object_scores, with_predictions)]
    if with_predictions:
        assert batches[0].pred_boxes.shape == (3, 2, 3)  # the new SceneBatch fields survive update()
    accuracy = ObjectAccuracy(fields=["object_scores", "object_labels"], iou_threshold=0.5, threshold=0.5,
                              pooled=pooled)
    auroc = AUROC(fields=["object_scores", "object_labels"], prefix="object_")
    evaluator = Evaluator(test_metrics=[auroc, accuracy])
    for index, batch in enumerate(batches):
        evaluator.on_test_batch_end(None, None, None, batch, index)
    value = evaluator.test_metrics[1].compute()
    if with_predictions:
        expected = object_accuracy(PRED_BOXES, PRED_SCORES, PRED_BATCH, GT_BOXES, GT_LABELS, GT_BATCH, pooled=pooled)
    else:
        expected = object_accuracy(None, object_scores, None, GT_BOXES, GT_LABELS, GT_BATCH, pooled=pooled)
    assert value.item() == pytest.approx(expected.item())
    assert accuracy.name == ("object_PooledAccuracy" if pooled else "object_Accuracy")
    assert evaluator.test_metrics[0].compute() is not None


def test_metric_states_are_ddp_safe() -> None:
    metric = ObjectAccuracy()
    assert set(metric._reductions) == {"correct", "total"}  # noqa: SLF001
    assert all(fn is dim_zero_cat for fn in metric._reductions.values())  # noqa: SLF001
    assert metric._defaults == {"correct": [], "total": []}  # noqa: SLF001
    # two "ranks", each with one batch: concatenating their states (what dist_reduce_fx="cat"
    # does) gives the accuracy over both
    object_scores = torch.tensor([0.1, 0.7, 0.6, 0.5, 0.2])
    rank0, rank1 = ObjectAccuracy(), ObjectAccuracy()
    rank0.update(_scene_batch(slice(0, 1), object_scores))
    rank1.update(_scene_batch(slice(1, 2), object_scores))
    rank0.correct = [dim_zero_cat(rank0.correct + rank1.correct)]
    rank0.total = [dim_zero_cat(rank0.total + rank1.total)]
    expected = object_accuracy(PRED_BOXES, PRED_SCORES, PRED_BATCH, GT_BOXES, GT_LABELS, GT_BATCH)
    assert rank0.compute().item() == pytest.approx(expected.item())
    # merge_state does the same concatenation
    merged, other = ObjectAccuracy(), ObjectAccuracy()
    merged.update(_scene_batch(slice(0, 1), object_scores))
    other.update(_scene_batch(slice(1, 2), object_scores))
    merged.merge_state(other)
    assert merged.compute().item() == pytest.approx(expected.item())


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric:UserWarning")
def test_metric_without_objects_is_nan_and_strict_fields() -> None:
    assert torch.isnan(ObjectAccuracy().compute())
    batch = _scene_batch(slice(0, 1), torch.zeros(5))
    batch.object_scores = None
    with pytest.raises(ValueError, match="object_scores"):
        ObjectAccuracy().update(batch)
    lenient = ObjectAccuracy(strict=False)
    lenient.update(batch)
    assert lenient.compute() is None


def test_pred_fields_are_validated() -> None:
    batch = _scene_batch(slice(0, 1), torch.zeros(5))
    with pytest.raises(Exception, match="pred_object_batch must be sorted"):
        batch.update(pred_object_batch=torch.tensor([1, 0, 0]))
    with pytest.raises(Exception, match="size <= 0"):
        batch.update(pred_boxes=-torch.ones(3, 2, 3))


# ---------------------------------------------------------------------------------------------
# object AUROC per scene


def test_scene_object_auroc_hand_computed_and_against_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    # Scene 0: odd 0.7 vs normals 0.1, 0.6 -> 1.0; scene 1: odd 0.5 vs normal 0.5 (a tie) -> 0.5.
    scores = torch.tensor([0.1, 0.7, 0.6, 0.5, 0.5])
    assert scene_object_auroc(scores, GT_LABELS, GT_BATCH).tolist() == [1.0, 0.5]
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(40, generator=generator)
    labels = torch.rand(40, generator=generator) < 0.3
    batch = torch.arange(40) // 8
    per_scene = scene_object_auroc(scores, labels, batch)
    for scene in range(5):
        mine = batch == scene
        if 0 < int(labels[mine].sum()) < int(mine.sum()):
            assert float(per_scene[scene]) == pytest.approx(roc_auc_score(labels[mine].numpy(), scores[mine].numpy()))
        else:
            assert torch.isnan(per_scene[scene])


def test_scene_object_auroc_metric_in_evaluator_and_ddp_state() -> None:
    object_scores = torch.tensor([0.1, 0.7, 0.6, 0.5, 0.2])
    metric = SceneObjectAUROC()
    assert metric.name == "object_SceneAUROC" and all(fn is dim_zero_cat for fn in metric._reductions.values())  # noqa: SLF001
    evaluator = Evaluator(test_metrics=[metric])
    for index, split in enumerate((slice(0, 1), slice(1, 2))):
        evaluator.on_test_batch_end(None, None, None, _scene_batch(split, object_scores, False), index)
    expected = scene_object_auroc(object_scores, GT_LABELS, GT_BATCH).mean()
    assert evaluator.test_metrics[0].compute().item() == pytest.approx(expected.item())
    # A scene without an odd object is left out, not counted as 0 or 0.5.
    only_normal = _scene_batch(slice(0, 1), object_scores, False)
    only_normal.object_labels = torch.zeros_like(only_normal.object_labels)
    lone = SceneObjectAUROC()
    lone.update(only_normal)
    lone.update(_scene_batch(slice(1, 2), object_scores, False))
    assert lone.compute().item() == pytest.approx(1.0)  # scene 1: odd 0.5 above normal 0.2
