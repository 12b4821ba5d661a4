"""Object-level metrics of multi-object scenes (Odd-One-Out): 3D box IoU, matching, accuracy, AUROC per scene.

Boxes are axis-aligned world boxes ``(K, 2, 3)`` = ``[centre xyz, size xyz]`` (the convention of
:mod:`anomalib_3d.data.scenes`); ragged batches carry a sorted scene vector per box set.

Two accuracy protocols (``pooled`` switch):

* **paper** (``pooled=False``; Odd-One-Out, Sec. 4.3): "a prediction is considered correct if the
  bounding box IoU is greater than 0.5 and the corresponding anomaly classification is correct
  ... calculated object-wise and then averaged across all test scenes". A ground-truth object is
  correct when a predicted box is matched to it one-to-one with ``IoU > iou_threshold`` and the
  predicted label (``score >= threshold``) equals its label; a missed object is wrong, and a
  duplicate prediction of an object can match it only once. Accuracy = mean over scenes (with at
  least one object) of the fraction of correct objects of the scene.
* **pooled** (``pooled=True``; the official code, VICO-UoE/OddOneOutAD ``train.evaluate_score``
  with ``models.model.MatchNet.calc_loss``): every ground-truth object takes the label of the
  predicted box of its scene with the **highest IoU, whatever it is** (no IoU threshold; one
  predicted box may serve several objects); accuracy = correct objects / all objects, pooled over
  every scene. A scene without any predicted box counts all its objects wrong (the official loop
  would skip the whole batch on the exception). The label there is ``sigmoid(logit) > 0.5``;
  here ``score >= threshold`` (they differ only at equality).

Matching (:func:`match_boxes`) is **greedy by IoU** by default: all pairs with
``IoU > iou_threshold`` in decreasing IoU order (ties: lower prediction, then lower object index
first), each box used once. This is the usual detection-benchmark matching, deterministic and
dependency-free; and at a threshold >= 0.5 it cannot differ from an optimal assignment in the
number of matches when the ground-truth boxes do not overlap (a box with IoU > 0.5 to two disjoint
boxes would need more than half its volume in each). ``method="hungarian"`` (SciPy's
``linear_sum_assignment`` maximising the summed IoU over the pairs above the threshold) is the
switch for overlapping ground truth.

Object AUROC, two ways: pooled over every object of every scene (anomalib's ``AUROC`` on
``object_scores`` / ``object_labels``: a score must mean the same in every scene), and **per scene**
(:func:`scene_object_auroc`, :class:`SceneObjectAUROC`): the AUROC of each scene's own objects,
averaged over the scenes that hold both a normal and an odd object (the paper's "calculated
object-wise and then averaged across all test scenes"; only the ranking inside a scene counts).

Without predicted boxes (``pred_boxes`` is ``None``: the model scored the ground-truth boxes, as
the first Odd-One-Out version does) the metrics fall back to the ground-truth boxes themselves
(IoU = 1 with their own object, 0 elsewhere), i.e. plain per-object label accuracy of
``object_scores``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from anomalib.metrics import AnomalibMetric
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

MatchMethod = Literal["greedy", "hungarian"]

__all__ = [
    "MatchMethod",
    "ObjectAccuracy",
    "SceneObjectAUROC",
    "box_iou_3d",
    "ground_truth_scores",
    "match_boxes",
    "object_accuracy",
    "object_correct",
    "scene_object_auroc",
]


def _plain(value: object) -> Any:  # noqa: ANN401
    return value.as_subclass(Tensor) if isinstance(value, Tensor) else value


def _check_boxes(boxes: Tensor, name: str) -> Tensor:
    boxes = _plain(torch.as_tensor(boxes))
    if boxes.ndim != 3 or tuple(boxes.shape[1:]) != (2, 3):
        msg = f"{name} must be (N, 2, 3) [centre xyz, size xyz], got {tuple(boxes.shape)}."
        raise ValueError(msg)
    return boxes


def box_iou_3d(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of axis-aligned 3D boxes.

    Args:
        a: ``(N, 2, 3)`` ``[centre xyz, size xyz]``.
        b: ``(M, 2, 3)``.

    Returns:
        ``(N, M)`` IoU in ``[0, 1]`` (0 where both volumes are 0), in the promoted float dtype.
    """
    a, b = _check_boxes(a, "a"), _check_boxes(b, "b")
    dtype = torch.promote_types(a.dtype, b.dtype)
    dtype = dtype if dtype.is_floating_point else torch.float32
    a, b = a.to(dtype), b.to(dtype)
    a_low, a_high = a[:, 0] - a[:, 1] / 2, a[:, 0] + a[:, 1] / 2
    b_low, b_high = b[:, 0] - b[:, 1] / 2, b[:, 0] + b[:, 1] / 2
    low = torch.maximum(a_low[:, None], b_low[None])
    high = torch.minimum(a_high[:, None], b_high[None])
    intersection = (high - low).clamp(min=0).prod(-1)
    volume_a = a[:, 1].clamp(min=0).prod(-1)
    volume_b = b[:, 1].clamp(min=0).prod(-1)
    union = volume_a[:, None] + volume_b[None] - intersection
    return torch.where(union > 0, intersection / union.clamp(min=torch.finfo(dtype).tiny), torch.zeros_like(union))


def match_boxes(
    pred: Tensor,
    gt: Tensor,
    iou_threshold: float = 0.5,
    method: MatchMethod = "greedy",
) -> tuple[Tensor, Tensor]:
    """One-to-one matching of predicted to ground-truth boxes with ``IoU > iou_threshold``.

    Args:
        pred: ``(P, 2, 3)`` predicted boxes; gt: ``(K, 2, 3)`` ground-truth boxes (one scene).
        iou_threshold: a pair is admissible when its IoU is strictly greater.
        method: ``"greedy"`` (pairs in decreasing IoU; see the module docstring) or
            ``"hungarian"`` (maximum summed IoU over admissible pairs, SciPy).

    Returns:
        ``pred_index (L,)``, ``gt_index (L,)`` long, the matched pairs sorted by ``gt_index``;
        on ``gt.device``.
    """
    if method not in ("greedy", "hungarian"):
        msg = f"method must be 'greedy' or 'hungarian', got {method!r}."
        raise ValueError(msg)
    iou = box_iou_3d(pred, gt).detach().cpu().double()
    admissible = iou > iou_threshold
    device = _plain(gt).device
    empty = torch.zeros(0, dtype=torch.long, device=device)
    if not bool(admissible.any()):
        return empty, empty.clone()
    pairs: list[tuple[int, int]] = []
    if method == "greedy":
        pred_index, gt_index = admissible.nonzero(as_tuple=True)  # row-major: ties keep (pred, gt) order
        order = torch.sort(iou[pred_index, gt_index], descending=True, stable=True).indices
        used_pred: set[int] = set()
        used_gt: set[int] = set()
        for p, g in zip(pred_index[order].tolist(), gt_index[order].tolist(), strict=True):
            if p in used_pred or g in used_gt:
                continue
            used_pred.add(p)
            used_gt.add(g)
            pairs.append((p, g))
    else:
        from scipy.optimize import linear_sum_assignment

        weight = torch.where(admissible, iou, torch.zeros_like(iou)).numpy()
        rows, cols = linear_sum_assignment(weight, maximize=True)
        pairs = [(int(p), int(g)) for p, g in zip(rows, cols, strict=True) if admissible[p, g]]
    pairs.sort(key=lambda pair: pair[1])
    matched = torch.tensor(pairs, dtype=torch.long, device=device).reshape(-1, 2)
    return matched[:, 0], matched[:, 1]


def _scene_slices(batch: Tensor | None, count: int, num_scenes: int) -> list[Tensor]:
    """Indices of each scene's entries (all in scene 0 when ``batch`` is None)."""
    if batch is None:
        batch = torch.zeros(count, dtype=torch.long)
    batch = _plain(batch).long().cpu()
    if batch.shape != (count,):
        msg = f"a scene vector has {tuple(batch.shape)} entries for {count} boxes."
        raise ValueError(msg)
    return [torch.nonzero(batch == scene).flatten() for scene in range(num_scenes)]


def object_correct(
    pred_boxes: Tensor | None,
    pred_scores: Tensor,
    pred_batch: Tensor | None,
    gt_boxes: Tensor | None,
    gt_labels: Tensor,
    gt_batch: Tensor | None,
    iou_threshold: float = 0.5,
    threshold: float = 0.5,
    pooled: bool = False,
    method: MatchMethod = "greedy",
) -> Tensor:
    """Whether each ground-truth object is classified correctly (see the module docstring).

    Args:
        pred_boxes: ``(ΣP, 2, 3)`` predicted boxes, or ``None``: the predictions are the
            ground-truth boxes themselves (then ``pred_scores`` is ``(ΣK,)``, one per object).
        pred_scores: ``(ΣP,)`` anomaly score of each predicted box.
        pred_batch: ``(ΣP,)`` long scene of each predicted box (``None``: all scene 0).
        gt_boxes: ``(ΣK, 2, 3)`` ground-truth boxes (may be ``None`` when ``pred_boxes`` is).
        gt_labels: ``(ΣK,)`` bool, True = anomalous.
        gt_batch: ``(ΣK,)`` long scene of each object (``None``: all scene 0).
        iou_threshold: paper protocol: a match needs ``IoU > iou_threshold``.
        threshold: a box is predicted anomalous when ``score >= threshold``.
        pooled: ``False``: paper protocol (one-to-one match above ``iou_threshold``);
            ``True``: official-code protocol (label of the highest-IoU predicted box, no threshold).
        method: one-to-one matching of the paper protocol (:func:`match_boxes`).

    Returns:
        ``(ΣK,)`` bool on ``gt_labels``' device.
    """
    gt_labels = _plain(torch.as_tensor(gt_labels)).bool().reshape(-1)
    device = gt_labels.device
    pred_scores = _plain(torch.as_tensor(pred_scores)).detach().reshape(-1)
    pred_labels = (pred_scores >= threshold).cpu()
    labels = gt_labels.cpu()
    if pred_boxes is None:
        if pred_scores.shape[0] != labels.shape[0]:
            msg = (f"without predicted boxes the scores are per ground-truth object: got {pred_scores.shape[0]} "
                   f"scores for {labels.shape[0]} objects.")
            raise ValueError(msg)
        return (pred_labels == labels).to(device)
    if gt_boxes is None:
        msg = "predicted boxes need the ground-truth boxes to be matched against (batch.boxes is None)."
        raise ValueError(msg)
    pred_boxes = _check_boxes(pred_boxes, "pred_boxes").detach().cpu()
    gt_boxes = _check_boxes(gt_boxes, "gt_boxes").detach().cpu()
    if pred_boxes.shape[0] != pred_labels.shape[0]:
        msg = f"{pred_boxes.shape[0]} predicted boxes but {pred_labels.shape[0]} predicted scores."
        raise ValueError(msg)
    if gt_boxes.shape[0] != labels.shape[0]:
        msg = f"{gt_boxes.shape[0]} ground-truth boxes but {labels.shape[0]} labels."
        raise ValueError(msg)
    num_scenes = 1 + max(
        int(_plain(gt_batch).max()) if gt_batch is not None and labels.numel() else 0,
        int(_plain(pred_batch).max()) if pred_batch is not None and pred_labels.numel() else 0,
    )
    gt_slices = _scene_slices(gt_batch, labels.shape[0], num_scenes)
    pred_slices = _scene_slices(pred_batch, pred_labels.shape[0], num_scenes)
    correct = torch.zeros(labels.shape[0], dtype=torch.bool)
    for gt_index, pred_index in zip(gt_slices, pred_slices, strict=True):
        if gt_index.numel() == 0 or pred_index.numel() == 0:
            continue  # no object to judge, or every object of the scene missed
        if pooled:
            iou = box_iou_3d(gt_boxes[gt_index], pred_boxes[pred_index])  # (K, P)
            best = iou.max(dim=1, keepdim=True).values
            # first prediction reaching the maximum (deterministic tie-break)
            chosen = (iou == best).int().argmax(dim=1)
            correct[gt_index] = pred_labels[pred_index][chosen] == labels[gt_index]
        else:
            matched_pred, matched_gt = match_boxes(pred_boxes[pred_index], gt_boxes[gt_index], iou_threshold, method)
            if matched_gt.numel():
                correct[gt_index[matched_gt]] = pred_labels[pred_index[matched_pred]] == labels[gt_index[matched_gt]]
    return correct.to(device)


def _scene_counts(correct: Tensor, gt_batch: Tensor | None, num_scenes: int | None = None) -> tuple[Tensor, Tensor]:
    """Correct and total objects per scene, ``(S,)`` long each."""
    batch = torch.zeros_like(correct, dtype=torch.long) if gt_batch is None else _plain(gt_batch).long().to(correct.device)
    size = max(int(batch.max()) + 1 if batch.numel() else 0, num_scenes or 0)
    total = torch.bincount(batch, minlength=size)
    hits = torch.bincount(batch, weights=correct.double(), minlength=size).round().long()
    return hits, total


def _accuracy(hits: Tensor, total: Tensor, pooled: bool) -> Tensor:
    if int(total.sum()) == 0:
        return torch.tensor(float("nan"))
    if pooled:
        return hits.sum().double().div(total.sum()).float()
    judged = total > 0
    return (hits[judged].double() / total[judged]).mean().float()


def object_accuracy(
    pred_boxes: Tensor | None,
    pred_scores: Tensor,
    pred_batch: Tensor | None,
    gt_boxes: Tensor | None,
    gt_labels: Tensor,
    gt_batch: Tensor | None,
    iou_threshold: float = 0.5,
    threshold: float = 0.5,
    pooled: bool = False,
    method: MatchMethod = "greedy",
) -> Tensor:
    """Object accuracy of a set of scenes (arguments as :func:`object_correct`).

    Returns:
        ``()`` float: paper protocol (``pooled=False``): mean over scenes with at least one
        object of the scene's fraction of correct objects; official-code protocol
        (``pooled=True``): correct objects / all objects. NaN when there is no object.
    """
    correct = object_correct(pred_boxes, pred_scores, pred_batch, gt_boxes, gt_labels, gt_batch, iou_threshold,
                             threshold, pooled, method)
    hits, total = _scene_counts(correct.cpu(), None if gt_batch is None else _plain(gt_batch).cpu())
    return _accuracy(hits, total, pooled)


def ground_truth_scores(
    pred_boxes: Tensor,
    pred_scores: Tensor,
    pred_batch: Tensor | None,
    gt_boxes: Tensor,
    gt_batch: Tensor | None,
    fill: float = 0.0,
) -> Tensor:
    """Score of each ground-truth object from predicted boxes: that of its highest-IoU prediction.

    The official code's assignment (also what it feeds to its AUROC), so that per-object metrics
    on ``object_scores`` / ``object_labels`` (e.g. the object AUROC) work with proposals. An object
    that no predicted box of its scene overlaps gets ``fill`` (the official code would take the
    first prediction's score).

    Returns:
        ``(ΣK,)`` on ``pred_scores``' device.
    """
    pred_scores = _plain(torch.as_tensor(pred_scores)).detach().reshape(-1)
    pred_boxes = _check_boxes(pred_boxes, "pred_boxes").detach().cpu()
    gt_boxes = _check_boxes(gt_boxes, "gt_boxes").detach().cpu()
    scores = pred_scores.cpu()
    out = torch.full((gt_boxes.shape[0],), float(fill), dtype=scores.dtype if scores.is_floating_point() else torch.float32)
    num_scenes = 1 + max(
        int(_plain(gt_batch).max()) if gt_batch is not None and gt_boxes.shape[0] else 0,
        int(_plain(pred_batch).max()) if pred_batch is not None and scores.numel() else 0,
    )
    for gt_index, pred_index in zip(_scene_slices(gt_batch, gt_boxes.shape[0], num_scenes),
                                    _scene_slices(pred_batch, scores.shape[0], num_scenes), strict=True):
        if gt_index.numel() == 0 or pred_index.numel() == 0:
            continue
        iou = box_iou_3d(gt_boxes[gt_index], pred_boxes[pred_index])
        best = iou.max(dim=1, keepdim=True).values
        chosen = (iou == best).int().argmax(dim=1)
        overlapping = best[:, 0] > 0
        out[gt_index[overlapping]] = scores[pred_index][chosen[overlapping]].to(out.dtype)
    return out.to(pred_scores.device)


class _ObjectAccuracy(Metric):
    """Torchmetrics object accuracy (see the module docstring); states are per-scene counts.

    Args:
        iou_threshold: paper protocol: a match needs ``IoU > iou_threshold`` (0.5).
        threshold: a box is predicted anomalous when ``score >= threshold`` (0.5, on the
            post-processed, normalised scores).
        pooled: ``False``: paper protocol, mean over scenes; ``True``: the official code's
            protocol, pooled over objects.
        method: one-to-one matching of the paper protocol.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        iou_threshold: float = 0.5,
        threshold: float = 0.5,
        pooled: bool = False,
        method: MatchMethod = "greedy",
        **kwargs: Any,  # noqa: ANN401
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= iou_threshold < 1.0:
            msg = f"iou_threshold must lie in [0, 1), got {iou_threshold}."
            raise ValueError(msg)
        if method not in ("greedy", "hungarian"):
            msg = f"method must be 'greedy' or 'hungarian', got {method!r}."
            raise ValueError(msg)
        self.iou_threshold = float(iou_threshold)
        self.threshold = float(threshold)
        self.pooled = bool(pooled)
        self.method = method
        # one entry per scene: counts concatenate across updates and, in DDP, across ranks
        self.add_state("correct", default=[], dist_reduce_fx="cat")
        self.add_state("total", default=[], dist_reduce_fx="cat")

    def update(
        self,
        object_scores: Tensor,
        object_labels: Tensor,
        *,
        boxes: Tensor | None = None,
        object_batch: Tensor | None = None,
        pred_boxes: Tensor | None = None,
        pred_object_scores: Tensor | None = None,
        pred_object_batch: Tensor | None = None,
        num_scenes: int | None = None,
    ) -> None:
        """Add a batch of scenes.

        Args:
            object_scores: ``(ΣK,)`` score per ground-truth object (used when ``pred_boxes`` is None).
            object_labels: ``(ΣK,)`` bool.
            boxes, object_batch: ground-truth boxes ``(ΣK, 2, 3)`` and scenes ``(ΣK,)``.
            pred_boxes, pred_object_scores, pred_object_batch: predicted boxes ``(ΣP, 2, 3)``,
                their scores and scenes; ``pred_boxes=None`` falls back to the ground-truth boxes.
            num_scenes: scenes in the batch (scenes without objects are counted as such).
        """
        if pred_boxes is not None:
            if pred_object_scores is None:
                msg = "the batch has pred_boxes but no pred_object_scores."
                raise ValueError(msg)
            correct = object_correct(pred_boxes, pred_object_scores, pred_object_batch, boxes, object_labels,
                                     object_batch, self.iou_threshold, self.threshold, self.pooled, self.method)
        else:
            correct = object_correct(None, object_scores, None, boxes, object_labels, object_batch,
                                     self.iou_threshold, self.threshold, self.pooled, self.method)
        hits, total = _scene_counts(correct, object_batch, num_scenes)
        self.correct.append(hits.to(self.device))
        self.total.append(total.to(self.device))

    def compute(self) -> Tensor:
        """Accuracy over everything added (NaN without any ground-truth object)."""
        if not self.total:
            return torch.tensor(float("nan"), device=self.device)
        hits, total = dim_zero_cat(self.correct), dim_zero_cat(self.total)
        return _accuracy(hits.cpu(), total.cpu(), self.pooled).to(self.device)


class ObjectAccuracy(AnomalibMetric, _ObjectAccuracy):  # type: ignore[misc]
    """Odd-One-Out's object accuracy as an anomalib metric (usable in ``anomalib.metrics.Evaluator``).

    ``fields`` (default ``["object_scores", "object_labels"]``) are the required batch fields;
    the boxes (``boxes``, ``object_batch``, ``pred_boxes``, ``pred_object_scores``,
    ``pred_object_batch``) are read from the batch when present. Logged as ``prefix + "Accuracy"``
    (``object_Accuracy``), or ``prefix + "PooledAccuracy"`` with ``pooled=True``.

    Example:
        >>> accuracy = ObjectAccuracy(iou_threshold=0.5, threshold=0.5)
        >>> accuracy.name
        'object_Accuracy'
        >>> ObjectAccuracy(pooled=True).name
        'object_PooledAccuracy'
    """

    _BOX_FIELDS = ("boxes", "object_batch", "pred_boxes", "pred_object_scores", "pred_object_batch")

    def __init__(
        self,
        fields: Sequence[str] | None = None,
        prefix: str = "object_",
        strict: bool = True,
        iou_threshold: float = 0.5,
        threshold: float = 0.5,
        pooled: bool = False,
        method: MatchMethod = "greedy",
        **kwargs: Any,  # noqa: ANN401
    ) -> None:
        super().__init__(fields=fields or ["object_scores", "object_labels"], prefix=prefix, strict=strict,
                         iou_threshold=iou_threshold, threshold=threshold, pooled=pooled, method=method, **kwargs)
        self.name = f"{prefix}{'PooledAccuracy' if pooled else 'Accuracy'}"

    def update(self, batch: Any, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        """Update from a ``SceneBatch`` (or any object with the same field names)."""
        extra = {name: _plain(getattr(batch, name, None)) for name in self._BOX_FIELDS if name not in kwargs}
        if "num_scenes" not in kwargs:
            try:
                extra["num_scenes"] = len(batch)
            except TypeError:
                extra["num_scenes"] = None
        super().update(batch, *args, **extra, **kwargs)


# ----------------------------------------------------------------------------------------------
# object AUROC per scene


def scene_object_auroc(scores: Tensor, labels: Tensor, object_batch: Tensor | None = None,
                       num_scenes: int | None = None) -> Tensor:
    """AUROC of each scene's objects: the chance that an odd object of the scene outscores a normal one.

    Args:
        scores: ``(ΣK,)`` object scores; labels: ``(ΣK,)`` bool (True = odd).
        object_batch: ``(ΣK,)`` sorted scene of each object (``None``: one scene).
        num_scenes: scenes in the batch (default: the last scene index + 1).

    Returns:
        ``(S,)`` float64: per scene, the fraction of (odd, normal) pairs ordered correctly, ties
        counting one half; NaN for a scene without an odd or without a normal object.
    """
    scores = _plain(torch.as_tensor(scores)).detach().reshape(-1).double().cpu()
    labels = _plain(torch.as_tensor(labels)).detach().reshape(-1).bool().cpu()
    batch = torch.zeros_like(labels, dtype=torch.long) if object_batch is None else _plain(object_batch).long().cpu()
    size = max(int(batch.max()) + 1 if batch.numel() else 0, num_scenes or 0)
    out = torch.full((size,), float("nan"), dtype=torch.float64)
    for scene in range(size):
        mine = batch == scene
        odd, normal = scores[mine & labels], scores[mine & ~labels]
        if odd.numel() and normal.numel():
            difference = odd[:, None] - normal[None]
            out[scene] = ((difference > 0).double() + 0.5 * (difference == 0).double()).mean()
    return out


class _SceneObjectAUROC(Metric):
    """Mean over scenes of :func:`scene_object_auroc` (scenes with both classes); states per scene."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:  # noqa: ANN401
        super().__init__(**kwargs)
        self.add_state("per_scene", default=[], dist_reduce_fx="cat")

    def update(self, object_scores: Tensor, object_labels: Tensor, *, object_batch: Tensor | None = None,
               num_scenes: int | None = None) -> None:
        """Add a batch of scenes (arguments as :func:`scene_object_auroc`)."""
        self.per_scene.append(scene_object_auroc(object_scores, object_labels, object_batch, num_scenes).to(self.device))

    def compute(self) -> Tensor:
        """Mean over the scenes that hold both a normal and an odd object (NaN if none does)."""
        if not self.per_scene:
            return torch.tensor(float("nan"), device=self.device)
        values = dim_zero_cat(self.per_scene)
        judged = values[~torch.isnan(values)]
        return (judged.mean() if judged.numel() else torch.tensor(float("nan"), dtype=torch.float64)).float().to(self.device)


class SceneObjectAUROC(AnomalibMetric, _SceneObjectAUROC):  # type: ignore[misc]
    """Object AUROC per scene, averaged over scenes, as an anomalib metric (``prefix + "SceneAUROC"``).

    Reads ``object_scores``, ``object_labels`` and ``object_batch`` from the batch.

    Example:
        >>> SceneObjectAUROC().name
        'object_SceneAUROC'
    """

    def __init__(self, fields: Sequence[str] | None = None, prefix: str = "object_", strict: bool = True,
                 **kwargs: Any) -> None:  # noqa: ANN401
        super().__init__(fields=fields or ["object_scores", "object_labels"], prefix=prefix, strict=strict, **kwargs)
        self.name = f"{prefix}SceneAUROC"

    def update(self, batch: Any, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        """Update from a ``SceneBatch`` (or any object with the same field names)."""
        kwargs.setdefault("object_batch", _plain(getattr(batch, "object_batch", None)))
        if "num_scenes" not in kwargs:
            try:
                kwargs["num_scenes"] = len(batch)
            except TypeError:
                kwargs["num_scenes"] = None
        super().update(batch, *args, **kwargs)
