"""AUPRO — area under the per-region-overlap curve up to a false-positive-rate limit.

Definition (MVTec 3D-AD evaluation code, ``au-pro``), used for both pixel maps and point clouds:

* ground-truth *regions* are the connected components of the anomalous elements of each sample;
  every region is one unit of the average, whatever its size;
* for a threshold ``t`` (every distinct score is one threshold; no binning):
  ``PRO(t)`` = mean over all regions of all samples of the fraction of the region's elements with
  score ``>= t``; ``FPR(t)`` = fraction of all ground-truth-negative elements with score ``>= t``;
* the curve ``(0, 0), (FPR(t), PRO(t))`` for decreasing ``t`` is integrated with the trapezoid rule
  up to ``fpr_limit`` (default 0.3), linearly interpolated at the limit, and divided by
  ``fpr_limit`` so a perfect detector scores 1.

Regions:

* **pixel maps** (anomalib ``DepthBatch`` / organized clouds): 8-connected components of each 2D
  ground-truth mask (``scipy.ndimage.label`` with a 3×3 structure), as MVTec 3D-AD. Organized
  point clouds are first scattered back onto their grid with
  :func:`anomalib_3d.data.adapters.points_to_pixel_map` (pixels without a point get the cloud's
  minimum score) and scored against ``pixel_gt_mask``.
* **unorganized clouds**: connected components of the anomalous points on a radius graph. The
  radius is ``radius_factor × s`` per cloud, with ``s`` the cloud's median nearest-neighbour
  spacing (median over all its points, or over ``spacing_samples`` evenly strided points of larger
  clouds). The default ``radius_factor = 1.5`` links the 8-neighbourhood of a regular grid of
  spacing ``s`` (diagonal ``√2 s ≈ 1.41 s``) but not the next ring (``2 s``), i.e. it reproduces the
  8-connectivity of the 2D definition on grid-like scans. ``radius=`` sets an absolute radius
  (cloud units) instead.

Computation is exact and vectorised: one sort of the elements above the cut-off score (the
smallest threshold the curve needs before passing ``fpr_limit``), cumulative sums, no loop over
thresholds and no N × N matrix. Metric state per element: the score (4 bytes) and, for anomalous
elements, their region weight ``1 / |region|`` (8 bytes).

anomalib's :class:`anomalib.metrics.AUPRO` implements the same definition (OpenCV 8-connected
components, all distinct thresholds, trapezoid with interpolation at the limit, divided by the
limit) in float32 cumulative sums; on the same 2D maps the two agree to float32 rounding (see
``tests/unit/metrics/test_aupro.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from anomalib.metrics import AnomalibMetric
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

logger = logging.getLogger(__name__)

#: Default radius factor of unorganized regions (see the module docstring).
DEFAULT_RADIUS_FACTOR = 1.5
#: Nearest-neighbour queries used to estimate a cloud's median spacing.
DEFAULT_SPACING_SAMPLES = 20_000


# --------------------------------------------------------------------------------------------
# ground-truth regions
# --------------------------------------------------------------------------------------------
def pixel_region_labels(gt_masks: torch.Tensor) -> tuple[torch.Tensor, int]:
    """8-connected ground-truth regions of a stack of 2D masks (MVTec 3D-AD rule).

    Args:
        gt_masks: ``(B, H, W)`` bool (or 0/1) masks.

    Returns:
        ``(labels (B, H, W) int32, num_regions)``: ``0`` on normal pixels, ``1 .. num_regions``
        numbered across the whole stack (regions never span two masks).
    """
    from scipy import ndimage

    if gt_masks.ndim != 3:
        msg = f"gt_masks must be (B, H, W), got {tuple(gt_masks.shape)}."
        raise ValueError(msg)
    masks = gt_masks.detach().bool().cpu().numpy()
    # 3x3 connectivity inside each slice, none across the batch axis.
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    labels, num = ndimage.label(masks, structure=structure)
    labels = torch.from_numpy(labels)  # int32: half the memory of int64 on large pixel stacks
    return labels.to(gt_masks.device), int(num)


def _median_spacing(points: torch.Tensor, batch: torch.Tensor, clouds: torch.Tensor, samples: int) -> torch.Tensor:
    """Median nearest-neighbour distance of the given clouds, ``(len(clouds),)`` float64."""
    spacings = torch.ones(len(clouds), dtype=torch.float64)
    ptr = torch.cat([batch.new_zeros(1), torch.bincount(batch).cumsum(0)]).tolist()
    for i, cloud in enumerate(clouds.tolist()):
        cloud_points = points[ptr[cloud] : ptr[cloud + 1]]
        n = cloud_points.shape[0]
        if n < 2:
            continue
        stride = max(1, math.ceil(n / samples))
        queries = cloud_points[::stride]
        distances = _nearest_other_distance(cloud_points, queries)
        median = float(distances.median())
        if median <= 0.0:
            # More than half the queried points are duplicates: use the positive distances.
            positive = distances[distances > 0]
            if positive.numel() == 0:
                continue
            median = float(positive.median())
            logger.warning("Cloud %d has many duplicate points; AUPRO spacing uses non-zero distances only.", cloud)
        spacings[i] = median
    return spacings


def _nearest_other_distance(points: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Distance from each query (a subset of ``points``) to its nearest *other* point."""
    try:
        from anomalib_3d.ops import knn
    except ImportError:
        knn = None
    if knn is not None:
        _, sq = knn(points, queries, 2)
        return sq[:, 1].double().sqrt().cpu()
    from scipy.spatial import cKDTree

    tree = cKDTree(points.detach().cpu().double().numpy())
    dist, _ = tree.query(queries.detach().cpu().double().numpy(), k=2)
    return torch.from_numpy(dist[:, 1])


def _radius_components(points: torch.Tensor, radius: float, batch: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Connected components of the masked points (``-1`` elsewhere), global over the batch."""
    try:
        from anomalib_3d.ops import connected_components
    except ImportError:
        connected_components = None
    if connected_components is not None:
        return connected_components(points, radius, batch=batch, mask=mask).cpu()
    return _scipy_radius_components(points, radius, batch, mask)


def _scipy_radius_components(
    points: torch.Tensor, radius: float, batch: torch.Tensor, mask: torch.Tensor,
) -> torch.Tensor:
    """scipy fallback of :func:`anomalib_3d.ops.connected_components` (same contract)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    labels = torch.full((points.shape[0],), -1, dtype=torch.long)
    selected = mask.nonzero().flatten().cpu()
    if selected.numel() == 0:
        return labels
    xyz = points[selected].detach().cpu().double().numpy()
    cloud = batch[selected].cpu().numpy()
    rows, cols = [], []
    for b in np.unique(cloud):
        local = np.nonzero(cloud == b)[0]
        pairs = cKDTree(xyz[local]).query_pairs(radius, output_type="ndarray")
        rows.append(local[pairs[:, 0]])
        cols.append(local[pairs[:, 1]])
    row, col = np.concatenate(rows), np.concatenate(cols)
    count = selected.numel()
    graph = coo_matrix((np.ones(row.shape[0], dtype=np.int8), (row, col)), shape=(count, count))
    _, comp = connected_components(graph, directed=False)
    labels[selected] = torch.from_numpy(comp.astype(np.int64))
    return labels


def point_region_labels(
    points: torch.Tensor,
    gt_mask: torch.Tensor,
    batch: torch.Tensor | None = None,
    *,
    radius_factor: float = DEFAULT_RADIUS_FACTOR,
    radius: float | None = None,
    spacing_samples: int = DEFAULT_SPACING_SAMPLES,
) -> tuple[torch.Tensor, int]:
    """Ground-truth regions of unorganized clouds: components of the anomalous points.

    Args:
        points: ``(ΣN, 3)`` float coordinates.
        gt_mask: ``(ΣN,)`` bool anomalous points.
        batch: ``(ΣN,)`` long sorted cloud ids, ``None`` for one cloud.
        radius_factor: linking radius in units of each cloud's median nearest-neighbour spacing.
        radius: absolute linking radius (cloud units); overrides ``radius_factor``.
        spacing_samples: at most this many evenly strided query points estimate the spacing.

    Returns:
        ``(labels (ΣN,) long, num_regions)``: ``-1`` on normal points, ``0 .. num_regions - 1``
        on anomalous ones, unique across the batch.
    """
    if points.ndim != 2 or points.shape[1] != 3:
        msg = f"points must be (N, 3), got {tuple(points.shape)}."
        raise ValueError(msg)
    gt_mask = gt_mask.bool()
    if gt_mask.shape != points.shape[:1]:
        msg = f"gt_mask {tuple(gt_mask.shape)} must have one entry per point ({points.shape[0]})."
        raise ValueError(msg)
    if batch is None:
        batch = torch.zeros(points.shape[0], dtype=torch.long, device=points.device)
    if not bool(gt_mask.any()):
        return torch.full((points.shape[0],), -1, dtype=torch.long), 0
    points = points.detach().float()
    if radius is not None:
        if not radius > 0:
            msg = f"radius must be positive, got {radius}."
            raise ValueError(msg)
        scaled, link = points, float(radius)
    else:
        if not radius_factor > 0:
            msg = f"radius_factor must be positive, got {radius_factor}."
            raise ValueError(msg)
        # Rescale each cloud to unit median spacing so one radius serves the whole batch.
        clouds = torch.unique(batch[gt_mask]).cpu()
        spacing = torch.ones(int(batch.max()) + 1, dtype=torch.float64)
        spacing[clouds] = _median_spacing(points, batch, clouds, spacing_samples)
        scaled = points / spacing.to(points.device, torch.float32)[batch].unsqueeze(1)
        link = float(radius_factor)
    labels = _radius_components(scaled, link, batch, gt_mask)
    num = int(labels.max()) + 1 if labels.numel() else 0
    return labels, num


def _region_weights(region_ids: torch.Tensor) -> torch.Tensor:
    """``1 / |region|`` for each anomalous element, given its region id ``(M_pos,)`` (ids >= 0), float64."""
    region_ids = region_ids.long()
    if region_ids.numel() == 0:
        return torch.zeros(0, dtype=torch.float64, device=region_ids.device)
    sizes = torch.bincount(region_ids)
    return 1.0 / sizes[region_ids].double()


# --------------------------------------------------------------------------------------------
# the curve
# --------------------------------------------------------------------------------------------
def pro_curve(
    neg_scores: torch.Tensor,
    pos_scores: torch.Tensor,
    pos_weights: torch.Tensor,
    num_regions: int,
    fpr_limit: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact PRO curve over all distinct thresholds.

    Args:
        neg_scores: ``(M_neg,)`` scores of ground-truth-negative elements.
        pos_scores: ``(M_pos,)`` scores of anomalous elements.
        pos_weights: ``(M_pos,)`` ``1 / |region|`` of each anomalous element's region.
        num_regions: number of regions.
        fpr_limit: if set, the curve stops at the first threshold whose FPR exceeds it (enough to
            integrate up to the limit; lower thresholds are never sorted).

    Returns:
        ``(fpr, pro, thresholds)`` float64, starting with the point ``(0, 0)`` (threshold ``+inf``)
        and ordered by decreasing threshold (so ``fpr`` and ``pro`` are non-decreasing).
    """
    device = neg_scores.device
    num_neg = neg_scores.numel()
    if num_neg == 0 or num_regions == 0:
        msg = "the PRO curve needs ground-truth-negative elements and at least one anomalous region."
        raise ValueError(msg)
    neg_scores = neg_scores.reshape(-1)
    pos_scores = pos_scores.reshape(-1).to(device)
    pos_weights = pos_weights.reshape(-1).to(device, torch.float64)
    dtype = torch.promote_types(neg_scores.dtype, pos_scores.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float32
    neg_scores, pos_scores = neg_scores.to(dtype), pos_scores.to(dtype)
    if fpr_limit is not None:
        # cut = the (floor(limit * num_neg) + 2)-th largest negative score: FPR(cut) > limit, so
        # the curve needs no threshold below cut, and elements below cut never change the
        # cumulative sums above it. (+2 rather than +1 guards against limit * num_neg rounding
        # just below an integer.)
        allowed = math.floor(fpr_limit * num_neg) + 1
        if allowed < num_neg:
            cut = torch.kthvalue(neg_scores, num_neg - allowed).values
            neg_scores = neg_scores[neg_scores >= cut]
            keep = pos_scores >= cut
            pos_scores, pos_weights = pos_scores[keep], pos_weights[keep]
    scores = torch.cat([neg_scores, pos_scores])
    fp_step = torch.cat(
        [torch.ones(neg_scores.numel(), dtype=torch.float64, device=device), torch.zeros_like(pos_weights)],
    )
    pro_step = torch.cat([torch.zeros(neg_scores.numel(), dtype=torch.float64, device=device), pos_weights])
    scores, order = torch.sort(scores, descending=True, stable=True)
    fpr = fp_step[order].cumsum(0) / num_neg
    pro = pro_step[order].cumsum(0) / num_regions
    # One curve point per distinct threshold: the last element of each run of equal scores.
    last_of_run = torch.ones_like(scores, dtype=torch.bool)
    last_of_run[:-1] = scores[:-1] != scores[1:]
    zero = torch.zeros(1, dtype=torch.float64, device=device)
    fpr = torch.cat([zero, fpr[last_of_run].clamp(max=1.0)])
    pro = torch.cat([zero, pro[last_of_run].clamp(max=1.0)])
    top = torch.full((1,), math.inf, dtype=torch.float64, device=device)
    thresholds = torch.cat([top, scores[last_of_run].double()])
    return fpr, pro, thresholds


def area_under_curve_to(fpr: torch.Tensor, pro: torch.Tensor, fpr_limit: float) -> torch.Tensor:
    """Trapezoid area under ``pro(fpr)`` on ``[0, fpr_limit]``, divided by ``fpr_limit``.

    Args:
        fpr: ``(K,)`` non-decreasing, starting at 0.
        pro: ``(K,)``.
        fpr_limit: integration limit in ``(0, 1]``.

    Returns:
        0-d float64 tensor. The curve is linearly interpolated at ``fpr_limit`` when the limit
        falls between two curve points (MVTec 3D-AD ``trapezoid(..., x_max=...)``).
    """
    limit = torch.tensor([fpr_limit], dtype=fpr.dtype, device=fpr.device)
    last = int(torch.searchsorted(fpr, limit, right=True)) - 1  # last point with fpr <= limit
    x, y = fpr[: last + 1], pro[: last + 1]
    if float(fpr[last]) < fpr_limit and last + 1 < fpr.numel():
        x0, x1, y0, y1 = fpr[last], fpr[last + 1], pro[last], pro[last + 1]
        y_limit = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        x, y = torch.cat([x, limit]), torch.cat([y, y_limit])
    return torch.trapezoid(y, x) / fpr_limit


# --------------------------------------------------------------------------------------------
# functional AUPRO
# --------------------------------------------------------------------------------------------
def _split_pixels(maps: torch.Tensor, gt_masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    maps = _squeeze_channel(maps, "anomaly maps")
    gt_masks = _squeeze_channel(gt_masks, "gt masks").bool()
    if maps.shape != gt_masks.shape:
        msg = f"anomaly maps {tuple(maps.shape)} and gt masks {tuple(gt_masks.shape)} must have the same shape."
        raise ValueError(msg)
    labels, num = pixel_region_labels(gt_masks)
    weights = _region_weights(labels[gt_masks].to(maps.device))
    del labels
    return maps[~gt_masks], maps[gt_masks], weights, num


def _squeeze_channel(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x).as_subclass(torch.Tensor)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim != 3:
        msg = f"{name} must be (B, H, W) (or (B, 1, H, W)), got {tuple(x.shape)}."
        raise ValueError(msg)
    return x


def pixel_aupro(anomaly_maps: torch.Tensor, gt_masks: torch.Tensor, fpr_limit: float = 0.3) -> torch.Tensor:
    """AUPRO of 2D anomaly maps (MVTec 3D-AD ``au-pro``).

    Args:
        anomaly_maps: ``(B, H, W)`` float scores.
        gt_masks: ``(B, H, W)`` bool ground truth.
        fpr_limit: integration limit.

    Returns:
        0-d float64 tensor.
    """
    neg, pos, weights, num = _split_pixels(anomaly_maps, gt_masks)
    fpr, pro, _ = pro_curve(neg, pos, weights, num, fpr_limit)
    return area_under_curve_to(fpr, pro, fpr_limit)


def point_aupro(
    scores: torch.Tensor,
    points: torch.Tensor,
    gt_mask: torch.Tensor,
    batch: torch.Tensor | None = None,
    fpr_limit: float = 0.3,
    *,
    radius_factor: float = DEFAULT_RADIUS_FACTOR,
    radius: float | None = None,
) -> torch.Tensor:
    """AUPRO of unorganized clouds (regions on the radius graph, see the module docstring).

    Args:
        scores: ``(ΣN,)`` per-point scores.
        points: ``(ΣN, 3)``.
        gt_mask: ``(ΣN,)`` bool.
        batch: ``(ΣN,)`` sorted cloud ids or ``None``.
        fpr_limit: integration limit.
        radius_factor, radius: region linking rule.

    Returns:
        0-d float64 tensor.
    """
    labels, num = point_region_labels(points, gt_mask, batch, radius_factor=radius_factor, radius=radius)
    gt = gt_mask.bool()
    weights = _region_weights(labels[gt.cpu()].to(scores.device))
    fpr, pro, _ = pro_curve(scores[~gt], scores[gt], weights, num, fpr_limit)
    return area_under_curve_to(fpr, pro, fpr_limit)


# --------------------------------------------------------------------------------------------
# the metric
# --------------------------------------------------------------------------------------------
class _PointAUPRO(Metric):
    """Torchmetrics AUPRO over point clouds and pixel maps (see the module docstring).

    Args:
        fpr_limit: integration limit (0.3 in the papers).
        mode: ``"auto"`` (pixel maps for 2D maps and organized clouds, radius regions otherwise),
            ``"organized"`` (require grid information) or ``"points"`` (radius regions always).
        radius_factor, radius: linking rule of unorganized regions.
        kwargs: torchmetrics ``Metric`` arguments.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        fpr_limit: float = 0.3,
        mode: str = "auto",
        radius_factor: float = DEFAULT_RADIUS_FACTOR,
        radius: float | None = None,
        **kwargs: Any,  # noqa: ANN401
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 < fpr_limit <= 1.0:
            msg = f"fpr_limit must lie in (0, 1], got {fpr_limit}."
            raise ValueError(msg)
        if mode not in ("auto", "organized", "points"):
            msg = f"mode must be 'auto', 'organized' or 'points', got {mode!r}."
            raise ValueError(msg)
        self.fpr_limit = float(fpr_limit)
        self.mode = mode
        self.radius_factor = radius_factor
        self.radius = radius
        self.add_state("neg_scores", default=[], dist_reduce_fx="cat")
        self.add_state("pos_scores", default=[], dist_reduce_fx="cat")
        self.add_state("pos_weights", default=[], dist_reduce_fx="cat")
        self.add_state("num_regions", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        anomaly_map: torch.Tensor,
        gt_mask: torch.Tensor,
        *,
        points: torch.Tensor | None = None,
        batch_index: torch.Tensor | None = None,
        grid_index: torch.Tensor | None = None,
        grid_shape: torch.Tensor | None = None,
        pixel_gt_mask: torch.Tensor | None = None,
    ) -> None:
        """Add a batch.

        Args:
            anomaly_map: ``(ΣN,)`` per-point scores, or ``(B, H, W)`` pixel maps.
            gt_mask: ``(ΣN,)`` per-point labels, or ``(B, H, W)`` pixel masks.
            points: ``(ΣN, 3)``; needed for unorganized clouds.
            batch_index: ``(ΣN,)`` cloud of each point.
            grid_index, grid_shape, pixel_gt_mask: organized clouds (see ``PointCloudBatch``).
        """
        anomaly_map = torch.as_tensor(anomaly_map).as_subclass(torch.Tensor).detach()
        gt_mask = torch.as_tensor(gt_mask).as_subclass(torch.Tensor)
        if anomaly_map.ndim >= 2:
            if self.mode == "points":
                msg = "mode='points' needs per-point scores, got a pixel map."
                raise ValueError(msg)
            neg, pos, weights, num = _split_pixels(anomaly_map, gt_mask)
        else:
            neg, pos, weights, num = self._split_points(
                anomaly_map, gt_mask, points, batch_index, grid_index, grid_shape, pixel_gt_mask,
            )
        self.neg_scores.append(neg if neg.is_floating_point() else neg.float())
        self.pos_scores.append(pos if pos.is_floating_point() else pos.float())
        self.pos_weights.append(weights.to(pos.device))
        self.num_regions += num

    def _split_points(
        self,
        scores: torch.Tensor,
        gt_mask: torch.Tensor,
        points: torch.Tensor | None,
        batch_index: torch.Tensor | None,
        grid_index: torch.Tensor | None,
        grid_shape: torch.Tensor | None,
        pixel_gt_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        organized = grid_index is not None and grid_shape is not None and pixel_gt_mask is not None
        if self.mode == "organized" and not organized:
            msg = "mode='organized' needs grid_index, grid_shape and pixel_gt_mask in the batch."
            raise ValueError(msg)
        if organized and self.mode != "points":
            from anomalib_3d.data.adapters import points_to_pixel_map, resize_nearest

            pixel_gt_mask = _squeeze_channel(pixel_gt_mask, "pixel_gt_mask")
            maps = points_to_pixel_map(
                scores.float(), grid_index, grid_shape, batch_index, batch_size=pixel_gt_mask.shape[0],
            )
            if tuple(maps.shape[-2:]) != tuple(pixel_gt_mask.shape[-2:]):
                maps = resize_nearest(maps, tuple(pixel_gt_mask.shape[-2:]))
            return _split_pixels(maps, pixel_gt_mask)
        if points is None:
            msg = (
                "AUPRO of an unorganized cloud needs the batch's points (to find ground-truth regions); "
                "the batch has none."
            )
            raise ValueError(msg)
        gt = gt_mask.bool().reshape(-1)
        if gt.shape[0] != scores.shape[0]:
            msg = f"gt_mask has {gt.shape[0]} entries for {scores.shape[0]} scores."
            raise ValueError(msg)
        labels, num = point_region_labels(
            points, gt, batch_index, radius_factor=self.radius_factor, radius=self.radius,
        )
        weights = _region_weights(labels[gt.cpu()].to(scores.device))
        return scores[~gt], scores[gt], weights, num

    def _gathered(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        def cat(state: Sequence[torch.Tensor] | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
            if isinstance(state, torch.Tensor):
                return state
            return dim_zero_cat(state) if len(state) else torch.zeros(0, dtype=dtype)

        return (
            cat(self.neg_scores, torch.float32),
            cat(self.pos_scores, torch.float32),
            cat(self.pos_weights, torch.float64),
            int(self.num_regions),
        )

    def curve(self, fpr_limit: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The PRO curve ``(fpr, pro)`` (float64, non-decreasing), cut just past ``fpr_limit``
        (default: this metric's limit; pass 1.0 for the whole curve)."""
        neg, pos, weights, num = self._gathered()
        fpr, pro, _ = pro_curve(neg, pos, weights, num, self.fpr_limit if fpr_limit is None else fpr_limit)
        return fpr, pro

    def compute(self) -> torch.Tensor:
        """AUPRO in ``[0, 1]``; NaN (with a warning) without anomalous regions or normal elements."""
        neg, pos, weights, num = self._gathered()
        if num == 0 or neg.numel() == 0:
            logger.warning(
                "AUPRO is undefined: the evaluated data has %d anomalous regions and %d normal elements; "
                "returning NaN.", num, neg.numel(),
            )
            return torch.tensor(float("nan"))
        fpr, pro, _ = pro_curve(neg, pos, weights, num, self.fpr_limit)
        return area_under_curve_to(fpr, pro, self.fpr_limit).float()


class PointAUPRO(AnomalibMetric, _PointAUPRO):  # type: ignore[misc]
    """AUPRO as an anomalib metric: updates from a ``PointCloudBatch`` or a ``DepthBatch``.

    Required batch fields are ``fields`` (default ``["anomaly_map", "gt_mask"]``); the geometry
    needed to form regions (``points``, ``batch_index``, ``grid_index``, ``grid_shape``,
    ``pixel_gt_mask``) is read from the batch when present. The logged name is ``prefix + "AUPRO"``
    (``point_AUPRO`` by default).

    Example:
        >>> metric = PointAUPRO(strict=False)
        >>> metric.update(point_batch)  # doctest: +SKIP
        >>> metric.compute()  # doctest: +SKIP
    """

    _GEOMETRY_FIELDS = ("points", "batch_index", "grid_index", "grid_shape", "pixel_gt_mask")

    def __init__(
        self,
        fields: Sequence[str] | None = None,
        prefix: str = "point_",
        strict: bool = True,
        **kwargs: Any,  # noqa: ANN401
    ) -> None:
        super().__init__(fields=fields or ["anomaly_map", "gt_mask"], prefix=prefix, strict=strict, **kwargs)
        self.name = f"{prefix}AUPRO"

    def update(self, batch: Any, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        """Update from a batch (see the class docstring)."""
        geometry = {
            name: _plain(getattr(batch, name, None)) for name in self._GEOMETRY_FIELDS if name not in kwargs
        }
        super().update(batch, *args, **geometry, **kwargs)


def _plain(value: object) -> object:
    return value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value


__all__ = [
    "DEFAULT_RADIUS_FACTOR",
    "PointAUPRO",
    "area_under_curve_to",
    "pixel_aupro",
    "pixel_region_labels",
    "point_aupro",
    "point_region_labels",
    "pro_curve",
]
