"""MultiViewScenes: split files, view sampling, DataLoader + collate, synthetic scenes end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalib_3d.data.datamodules.multiview_scenes import MultiViewScenes, select_views
from anomalib_3d.data.scenes import InvalidSceneError, SceneBatch, UnknownSplitError

SIZE = 8


def _write_scene(root: Path, scene_id: str, anomalous: list[bool], views: int = 12) -> None:
    """A minimal scene in the released layout: RGB + metadata + segmentations."""
    scene = root / scene_id
    (scene / "RGB").mkdir(parents=True)
    names = ["object"] + [f"object.{i:03d}" for i in range(1, len(anomalous))]
    for v in range(views):
        rgba = np.full((SIZE, SIZE, 4), 255, dtype=np.uint8)
        rgba[..., 0] = v
        Image.fromarray(rgba, mode="RGBA").save(scene / "RGB" / f"{v:04d}.png")
        for index, name in enumerate(names):
            mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
            mask[index] = 255
            folder = scene / "segmentations" / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask, mode="L").save(folder / f"{name}_{v:04d}.png")
    poses = []
    for v in range(views):
        pose = np.eye(4)
        pose[:3, 3] = [0.0, 0.0, 1.0 + v]
        poses.append({"rotation": pose.tolist()})
    objects = [
        {"name": name, "path": f"/x/duck_001{'-fracture-00' + str(i) if odd else ''}.blend",
         "bbox": [[0.1 * i, 0.0, 0.05], [0.1, 0.2, 0.1]]}
        for i, (name, odd) in enumerate(zip(names, anomalous, strict=True))
    ]
    meta = {"objects": objects, "camera": {"K": [[10, 0, 4], [0, 10, 4], [0, 0, 1]], "poses": poses}}
    (scene / "scene3d.metadata.json").write_text(json.dumps(meta))


@pytest.fixture
def toys_root(tmp_path: Path) -> Path:
    root = tmp_path / "toys"
    _write_scene(root, "duck_001-001", [False, True, False])
    _write_scene(root, "duck_001-002", [False, False, False, False])
    _write_scene(root, "duck_002-001", [True, False, False, False, False])
    _write_scene(root, "cat_000-001", [False, True, False])
    _write_scene(root, "cat_000-002", [False, False, False])
    split = {"train": ["duck_001-001", "duck_001-002", "duck_002-001"], "unseen-test": ["cat_000-001"],
             "seen-test": ["cat_000-002"]}
    (root / "toys-split.json").write_text(json.dumps(split))
    return root


def test_released_layout_splits_labels_and_batches(toys_root: Path) -> None:
    dm = MultiViewScenes(root=toys_root, train_batch_size=3, eval_batch_size=2)
    dm.setup()
    assert sorted(dm.train_data.samples.scene_id) == ["duck_001-001", "duck_001-002", "duck_002-001"]
    assert sorted(dm.test_data.samples.scene_id) == ["cat_000-001", "cat_000-002"]  # both test keys
    assert dm.test_data.samples.set_index("scene_id").label_index.to_dict() == {"cat_000-001": 1, "cat_000-002": 0}

    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, SceneBatch)
    assert batch.image.shape == (3, 10, 3, SIZE, SIZE)  # 2 x 5 views in training
    assert batch.source_views.tolist() == [[True] * 5 + [False] * 5] * 3
    assert batch.num_objects.tolist() == [len(n) for n in _objects_per_scene(batch)]
    by_scene = dict(zip(batch.scene_id, _split_labels(batch), strict=True))
    assert by_scene == {"duck_001-001": [False, True, False], "duck_001-002": [False] * 4,
                        "duck_002-001": [True, False, False, False, False]}
    # The pose of each sampled view is the pose of that view (translation z = 1 + view).
    assert torch.equal(batch.world_to_camera[..., 2, 3], 1.0 + batch.view_index.float())
    # And the image is that view's (red channel = view index).
    assert torch.equal((batch.image[:, :, 0, 0, 0] * 255).round().long(), batch.view_index)

    test_batch = next(iter(dm.test_dataloader()))
    assert test_batch.image.shape[:2] == (2, 5) and bool(test_batch.source_views.all())
    assert len(dm.val_data) == len(dm.test_data)


def _objects_per_scene(batch: SceneBatch) -> list[list[str]]:
    ptr = batch.object_ptr.tolist()
    return [batch.object_names[ptr[b] : ptr[b + 1]] for b in range(batch.batch_size)]


def _split_labels(batch: SceneBatch) -> list[list[bool]]:
    ptr = batch.object_ptr.tolist()
    return [batch.object_labels[ptr[b] : ptr[b + 1]].tolist() for b in range(batch.batch_size)]


def test_test_views_are_fixed_by_seed_and_training_views_are_fresh(toys_root: Path) -> None:
    views = []
    for _ in range(2):
        dm = MultiViewScenes(root=toys_root, test_split="unseen-test", seed=3)
        dm.setup()
        views.append(dm.test_data[0].view_index.tolist())
    assert views[0] == views[1] and len(set(views[0])) == 5
    dm = MultiViewScenes(root=toys_root, test_split="unseen-test", seed=4)
    dm.setup()
    assert dm.test_data[0].view_index.tolist() != views[0]
    assert list(dm.test_data.samples.scene_id) == ["cat_000-001"]
    torch.manual_seed(0)
    draws = {tuple(dm.train_data[0].view_index.tolist()) for _ in range(5)}
    assert len(draws) > 1 and all(len(set(d)) == 10 for d in draws)
    assert select_views(12, 5, "s", 0) == select_views(12, 5, "s", 0)


def test_bad_splits_and_too_few_views(toys_root: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownSplitError, match="unknown test split"):
        MultiViewScenes(root=toys_root, test_split="novel-test").setup()
    with pytest.raises(UnknownSplitError, match="no .<dataset>-split.json. files"):
        MultiViewScenes(root=tmp_path).setup()
    split = json.loads((toys_root / "toys-split.json").read_text())
    split["train"].append("duck_404-001")
    (toys_root / "toys-split.json").write_text(json.dumps(split))
    with pytest.raises(UnknownSplitError, match="duck_404-001"):
        MultiViewScenes(root=toys_root).setup()
    split["train"].pop()
    (toys_root / "toys-split.json").write_text(json.dumps(split))
    dm = MultiViewScenes(root=toys_root, num_views=7)
    dm.setup()
    with pytest.raises(InvalidSceneError, match="14 views are needed"):
        dm.train_data[0]


def test_synthetic_scenes_through_the_real_loader(tmp_path: Path) -> None:
    params = {"categories": ["nut", "bottle"], "unseen_categories": ["ring"], "num_train": 3, "num_test": 2,
              "num_test_unseen": 2, "num_views": 10, "image_size": 48, "points_per_object": 1500}
    dm = MultiViewScenes(root=tmp_path, synthetic=params, load_depth=True, train_batch_size=2, eval_batch_size=4)
    dm.setup()
    assert dm.dataset_root.parent == tmp_path and (dm.dataset_root / "manifest.json").is_file()
    assert len(dm.train_data) == 3 and len(dm.test_data) == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch.image.shape == (2, 10, 3, 48, 48) and batch.depth.shape == (2, 10, 48, 48)
    assert batch.depth.max() > 0 and batch.object_index.max() >= 2
    test = next(iter(dm.test_dataloader()))
    assert test.image.shape[:2] == (4, 5)
    assert set(test.category) == {"nut", "bottle", "ring"}
    stamp = (dm.dataset_root / "manifest.json").stat().st_mtime_ns
    again = MultiViewScenes(root=tmp_path, synthetic=params)
    again.setup()  # cached: nothing regenerated
    assert (again.dataset_root / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(TypeError):
        MultiViewScenes(root=tmp_path, synthetic={"num_scenes": 3})
