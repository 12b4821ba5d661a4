"""AUPRO against a deliberately simple MVTec 3D-AD reference, anomalib's AUPRO and hand cases."""

from __future__ import annotations

import bisect

import numpy as np
import pytest
import torch
from anomalib.metrics.aupro import _AUPRO
from scipy import ndimage

from anomalib_3d.data.adapters import organized_to_item, points_to_pixel_map
from anomalib_3d.data.dataclasses import PointCloudBatch, PointCloudItem
from anomalib_3d.metrics import PointAUPRO, pixel_aupro, pixel_region_labels, point_aupro, point_region_labels
from anomalib_3d.metrics.aupro import _scipy_radius_components, pro_curve


# ---------------------------------------------------------------------------------------------
# reference: the MVTec 3D-AD au-pro definition, one threshold at a time
# ---------------------------------------------------------------------------------------------
def reference_aupro(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3, connectivity: int = 8) -> float:
    structure = np.ones((3, 3), dtype=int) if connectivity == 8 else ndimage.generate_binary_structure(2, 1)
    regions = []
    for mask in masks:
        labels, num = ndimage.label(mask, structure=structure)
        regions.append([labels == k for k in range(1, num + 1)])
    negatives = ~masks.astype(bool)
    curve = [(0.0, 0.0)]
    for t in sorted(np.unique(maps), reverse=True):
        above = maps >= t
        fpr = above[negatives].mean()
        overlaps = [above[i][region].mean() for i, image_regions in enumerate(regions) for region in image_regions]
        curve.append((float(fpr), float(np.mean(overlaps))))
    xs, ys = [c[0] for c in curve], [c[1] for c in curve]
    area = 0.0
    for i in range(1, len(xs)):
        if xs[i] <= limit:
            area += 0.5 * (ys[i] + ys[i - 1]) * (xs[i] - xs[i - 1])
    if limit not in xs:
        ins = bisect.bisect(xs, limit)
        y_at = ys[ins - 1] + (ys[ins] - ys[ins - 1]) * (limit - xs[ins - 1]) / (xs[ins] - xs[ins - 1])
        area += 0.5 * (y_at + ys[ins - 1]) * (limit - xs[ins - 1])
    return area / limit


def random_case(seed: int, batch: int = 3, height: int = 24, width: int = 30, quantize: bool = False):
    rng = np.random.default_rng(seed)
    masks = np.zeros((batch, height, width), dtype=bool)
    for b in range(batch):
        for _ in range(rng.integers(1, 4)):
            r, c = rng.integers(0, height - 4), rng.integers(0, width - 4)
            h, w = rng.integers(1, 7, size=2)
            masks[b, r : r + h, c : c + w] = True
        masks[b] |= rng.random((height, width)) < 0.01  # isolated pixels and diagonal contacts
    maps = rng.random((batch, height, width)) + 0.4 * masks
    if quantize:
        maps = np.round(maps * 15) / 15  # many ties, across positives and negatives
    return maps.astype(np.float32), masks


# ---------------------------------------------------------------------------------------------
# organized / pixel AUPRO
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("quantize", [False, True])
def test_pixel_aupro_matches_reference(seed: int, quantize: bool) -> None:
    maps, masks = random_case(seed, quantize=quantize)
    ours = float(pixel_aupro(torch.from_numpy(maps), torch.from_numpy(masks)))
    assert ours == pytest.approx(reference_aupro(maps, masks), abs=1e-6)


@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_pixel_aupro_other_limits_match_reference(limit: float) -> None:
    maps, masks = random_case(11, quantize=True)
    ours = float(pixel_aupro(torch.from_numpy(maps), torch.from_numpy(masks), fpr_limit=limit))
    assert ours == pytest.approx(reference_aupro(maps, masks, limit), abs=1e-6)


def test_hand_case_vertical_steps() -> None:
    # 10 negatives, one region of 2 pixels scored 0.9 and 0.5.
    # Curve: (0,0) (0,.5) (.1,.5) (.1,1) (.2,1) (.3,1) ... -> area .05 + .2 = .25 -> 0.25 / 0.3.
    neg = [0.8, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05, 0.02, 0.01]
    maps = torch.tensor([neg + [0.9, 0.5]]).view(1, 1, 12)
    masks = torch.zeros(1, 1, 12, dtype=torch.bool)
    masks[0, 0, 10:] = True
    assert float(pixel_aupro(maps, masks)) == pytest.approx(0.25 / 0.3, abs=1e-12)


def test_hand_case_interpolation_at_limit() -> None:
    # 7 negatives (FPR steps of 1/7): the limit 0.3 falls between 2/7 and 3/7. One 1-pixel region
    # scored 0.5 is found after two false positives: area = (0.3 - 2/7) * 1 -> / 0.3 = 1/21.
    maps = torch.tensor([[[0.9, 0.8, 0.4, 0.3, 0.2, 0.1, 0.05, 0.5]]])
    masks = torch.zeros(1, 1, 8, dtype=torch.bool)
    masks[0, 0, 7] = True
    assert float(pixel_aupro(maps, masks)) == pytest.approx(1 / 21, abs=1e-12)


def test_regions_weigh_equally_not_pixels() -> None:
    # A 1-pixel region found first, a 9-pixel region never found before FPR 0.3:
    # PRO = 0.5 on [0, 0.3] (pixel-weighted it would be 0.1).
    maps = torch.zeros(1, 10, 10)
    masks = torch.zeros(1, 10, 10, dtype=torch.bool)
    masks[0, 0, 0] = True
    maps[0, 0, 0] = 1.0
    masks[0, 5:8, 5:8] = True
    maps[0, 5:8, 5:8] = -1.0  # below every negative
    assert float(pixel_aupro(maps, masks)) == pytest.approx(0.5, abs=1e-12)


def test_region_labels_are_8_connected_and_unique_across_images() -> None:
    masks = torch.zeros(2, 5, 5, dtype=torch.bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # diagonal contact: one region
    masks[0, 4, 4] = True
    masks[1, 2, 2] = True
    labels, num = pixel_region_labels(masks)
    assert num == 3
    assert labels[0, 0, 0] == labels[0, 1, 1] != labels[0, 4, 4]
    assert len({int(labels[0, 0, 0]), int(labels[0, 4, 4]), int(labels[1, 2, 2])}) == 3


@pytest.mark.parametrize("seed", range(4))
def test_matches_anomalib_aupro(seed: int) -> None:
    """anomalib's AUPRO: same definition (OpenCV 8-connectivity, all distinct thresholds, trapezoid
    interpolated at the limit, / limit) but float32 cumulative sums -> agreement to ~1e-7."""
    maps, masks = random_case(100 + seed, batch=4, height=40, width=48, quantize=seed % 2 == 1)
    anomalib_metric = _AUPRO(fpr_limit=0.3)
    anomalib_metric.update(torch.from_numpy(maps), torch.from_numpy(masks).float())
    theirs = float(anomalib_metric.compute())
    ours = float(pixel_aupro(torch.from_numpy(maps), torch.from_numpy(masks)))
    # max |difference| observed over these cases: 8e-8 (float32 rounding in anomalib)
    assert ours == pytest.approx(theirs, abs=1e-6)


def test_truncated_curve_equals_full_curve() -> None:
    maps, masks = random_case(5, batch=2, height=50, width=50, quantize=True)
    m, g = torch.from_numpy(maps), torch.from_numpy(masks)
    labels, num = pixel_region_labels(g)
    sizes = torch.bincount(labels.reshape(-1))
    weights = 1.0 / sizes[labels[g]].double()
    full = pro_curve(m[~g], m[g], weights, num, None)
    cut = pro_curve(m[~g], m[g], weights, num, 0.3)
    n = cut[0].numel()
    assert n < full[0].numel()
    assert torch.equal(full[0][:n], cut[0]) and torch.allclose(full[1][:n], cut[1], atol=1e-12)
    assert float(cut[0][-1]) > 0.3 >= float(cut[0][-2])


def test_perfect_and_inverted_detectors() -> None:
    _, masks = random_case(3)
    g = torch.from_numpy(masks)
    assert float(pixel_aupro(g.float(), g)) == pytest.approx(1.0)
    assert float(pixel_aupro(-g.float(), g)) == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------
# unorganized AUPRO
# ---------------------------------------------------------------------------------------------
def grid_clouds(maps: np.ndarray, masks: np.ndarray, scale: float = 1.0):
    """Each map as a cloud: one point per pixel at (col, row, 0) * scale, in raster order."""
    batch, height, width = maps.shape
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    grid = np.stack([cols, rows, np.zeros_like(rows)], -1).reshape(-1, 3).astype(np.float32) * scale
    points = torch.from_numpy(np.tile(grid, (batch, 1)))
    batch_index = torch.arange(batch).repeat_interleave(height * width)
    return points, batch_index, torch.from_numpy(maps.reshape(-1)), torch.from_numpy(masks.reshape(-1))


@pytest.mark.parametrize("seed", range(3))
def test_unorganized_equals_organized_on_a_grid(seed: int) -> None:
    """radius_factor 1.5 (default) x spacing 1 links the 8-neighbourhood (diagonal √2) but not 2:
    exactly MVTec's 8-connected regions, so both AUPROs coincide."""
    maps, masks = random_case(200 + seed, quantize=seed == 1)
    points, batch, scores, gt = grid_clouds(maps, masks, scale=0.37)  # the rule is scale-free
    organized = float(pixel_aupro(torch.from_numpy(maps), torch.from_numpy(masks)))
    unorganized = float(point_aupro(scores, points, gt, batch))
    assert unorganized == pytest.approx(organized, abs=1e-9)


def test_radius_factor_one_gives_4_connectivity() -> None:
    maps, masks = random_case(7)
    points, batch, scores, gt = grid_clouds(maps, masks)
    four = float(point_aupro(scores, points, gt, batch, radius_factor=1.0))
    assert four == pytest.approx(reference_aupro(maps, masks, connectivity=4), abs=1e-6)


def test_scipy_fallback_components_match_ops() -> None:
    maps, masks = random_case(8)
    points, batch, _, gt = grid_clouds(maps, masks)
    labels, num = point_region_labels(points, gt, batch)
    fallback = _scipy_radius_components(points, 1.5, batch, gt)
    assert int(fallback.max()) + 1 == num
    # same partition (labels may be numbered differently)
    pairs = set(zip(labels[gt].tolist(), fallback[gt].tolist(), strict=True))
    assert len(pairs) == num


def test_absolute_radius_overrides_factor() -> None:
    maps, masks = random_case(9)
    points, batch, scores, gt = grid_clouds(maps, masks, scale=2.0)
    by_radius = float(point_aupro(scores, points, gt, batch, radius=3.0))  # 1.5 spacings
    assert by_radius == pytest.approx(float(pixel_aupro(torch.from_numpy(maps), torch.from_numpy(masks))), abs=1e-9)


# ---------------------------------------------------------------------------------------------
# the anomalib metric
# ---------------------------------------------------------------------------------------------
def organized_batch(seed: int) -> tuple[PointCloudBatch, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    items, maps, masks = [], [], []
    for b in range(2):
        height, width = 20, 26
        xyz = torch.from_numpy(rng.normal(size=(height, width, 3)).astype(np.float32))
        xyz[rng.random((height, width)) < 0.2] = 0.0  # pixels without a point
        mask = torch.zeros(height, width, dtype=torch.bool)
        mask[3 + b : 9, 4 : 10 + b] = True
        mask[15, 20] = True
        item = organized_to_item(xyz, pixel_gt_mask=mask, gt_label=True, category="c")
        score = torch.from_numpy(rng.random(item.num_points).astype(np.float32)) + 0.3 * item.gt_mask
        item.anomaly_map = score
        items.append(item)
        dense = torch.full((height * width,), float(score.min()))
        dense[item.grid_index] = score
        maps.append(dense.view(height, width))
        masks.append(mask)
    return PointCloudBatch.collate(items), torch.stack(maps), torch.stack(masks)


def test_metric_on_organized_point_batch_uses_the_pixel_grid() -> None:
    batch, maps, masks = organized_batch(0)
    metric = PointAUPRO()
    metric.update(batch)
    expected = reference_aupro(maps.numpy(), masks.numpy())
    assert metric.name == "point_AUPRO"
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-6)
    scattered = points_to_pixel_map(batch.anomaly_map, batch.grid_index, batch.grid_shape, batch.batch_index)
    assert torch.equal(scattered, maps)


def test_metric_accumulates_batches_like_one_big_batch() -> None:
    maps, masks = random_case(21, batch=4)
    m, g = torch.from_numpy(maps), torch.from_numpy(masks)
    metric = PointAUPRO()
    for part in (slice(0, 1), slice(1, 4)):
        metric.update(type("DepthLike", (), {"anomaly_map": m[part], "gt_mask": g[part]})())
    assert float(metric.compute()) == pytest.approx(reference_aupro(maps, masks), abs=1e-6)


def test_metric_on_unorganized_point_batch() -> None:
    maps, masks = random_case(22, batch=2)
    points, batch_index, scores, gt = grid_clouds(maps, masks, scale=0.01)
    items = [
        PointCloudItem(points=points[batch_index == b], gt_mask=gt[batch_index == b],
                       anomaly_map=scores[batch_index == b], gt_label=True)
        for b in range(2)
    ]
    metric = PointAUPRO()
    metric.update(PointCloudBatch.collate(items))
    assert float(metric.compute()) == pytest.approx(reference_aupro(maps, masks), abs=1e-6)


def test_metric_strictness_and_undefined_cases() -> None:
    empty = type("NoMap", (), {"anomaly_map": None, "gt_mask": torch.zeros(1, 4, 4)})()
    lenient = PointAUPRO(strict=False)
    lenient.update(empty)
    assert lenient.compute() is None
    with pytest.raises(ValueError, match="anomaly_map"):
        PointAUPRO(strict=True).update(empty)
    no_regions = PointAUPRO()
    no_regions.update(type("B", (), {"anomaly_map": torch.rand(1, 4, 4), "gt_mask": torch.zeros(1, 4, 4)})())
    assert torch.isnan(no_regions.compute())
