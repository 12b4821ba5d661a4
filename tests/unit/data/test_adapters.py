"""Organized grids ↔ points and anomalib's DepthBatch adapter."""

from __future__ import annotations

import torch
from anomalib.data import DepthBatch

from anomalib_3d.data.adapters import (
    depth_batch_to_point_batch,
    repair_depth_samples,
    organized_to_item,
    points_to_pixel_map,
    resize_organized,
    valid_pixel_mask,
)


def _grid(h: int = 6, w: int = 5) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    xyz = torch.stack([xx + 1, yy + 1, torch.full_like(xx, 2.0)], dim=-1)
    xyz[0, :] = 0.0
    xyz[3, 2] = float("nan")
    return xyz


def test_organized_to_item_drops_invalid_pixels_and_indexes_them() -> None:
    xyz = _grid()
    item = organized_to_item(xyz, point_path="a.tiff")
    valid = valid_pixel_mask(xyz)
    assert item.num_points == int(valid.sum()) == 6 * 5 - 5 - 1
    rows, cols = item.grid_index // 5, item.grid_index % 5
    assert torch.equal(item.points, xyz[rows, cols])
    assert item.grid_shape.tolist() == [6, 5]


def test_scores_go_back_to_exactly_their_pixels() -> None:
    xyz = _grid()
    item = organized_to_item(xyz)
    scores = torch.arange(item.num_points, dtype=torch.float32) + 10
    pixel_map = points_to_pixel_map(scores, item.grid_index, item.grid_shape)[0]
    assert torch.equal(pixel_map.reshape(-1)[item.grid_index], scores)
    missing = ~valid_pixel_mask(xyz)
    assert (pixel_map[missing] == scores.min()).all()


def test_resize_never_invents_points() -> None:
    xyz = _grid(40, 40)
    xyz[:, :13] = 0.0
    out = resize_organized(xyz, (17, 23))
    valid_out = valid_pixel_mask(out)
    source = xyz.reshape(-1, 3)
    for p in out[valid_out]:
        assert (source == p).all(dim=1).any(), "resized grid contains a point that is not in the input"


def test_depth_batch_adapter_keeps_labels_and_maps_back() -> None:
    xyz = torch.stack([_grid(), _grid()]).permute(0, 3, 1, 2).nan_to_num(0.0)  # (B, 3, H, W)
    mask = torch.zeros(2, 6, 5, dtype=torch.bool)
    mask[1, 4:6, 1:3] = True  # all four pixels carry points
    batch = DepthBatch(image=torch.rand(2, 3, 6, 5), depth_map=xyz, gt_mask=mask, gt_label=torch.tensor([0, 1]),
                       image_path=["a.png", "b.png"], depth_path=["a.tiff", "b.tiff"])
    points = depth_batch_to_point_batch(batch)
    assert points.batch_size == 2
    per_cloud = points.items
    assert int(per_cloud[0].gt_mask.sum()) == 0 and int(per_cloud[1].gt_mask.sum()) == 4
    assert torch.equal(points.colors[:3], batch.image[0].reshape(3, -1)[:, points.grid_index[:3]].T)
    back = points_to_pixel_map(points.gt_mask.float(), points.grid_index, points.grid_shape, points.batch_index)
    assert torch.equal(back.bool(), mask)


def test_repair_fills_only_missing_masks_of_normal_samples() -> None:
    import numpy as np
    import pandas as pd

    samples = pd.DataFrame({
        "image_path": ["a.png", "b.png", "c.png", "d.png"],
        "depth_path": ["a.tiff", "b.tiff", "c.tiff", "d.tiff"],
        "label_index": [0, 0, 1, 1],
        "mask_path": [np.nan, "gt/b.png", np.nan, "gt/d.png"],
    })
    assert repair_depth_samples(samples) == 1
    assert samples.mask_path.tolist()[:2] == ["", "gt/b.png"]
    assert pd.isna(samples.mask_path[2])  # an anomalous sample without a mask stays a reportable problem
    assert repair_depth_samples(samples) == 0
    assert repair_depth_samples(pd.DataFrame({"image_path": ["x.pcd"]})) == 0  # not a depth table
