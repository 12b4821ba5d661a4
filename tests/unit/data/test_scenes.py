"""Scene data: the released layout on a hand-written folder, the dataclasses, the synthetic generator."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalib_3d.data.errors import PointCloudError, UnsupportedFormatError
from anomalib_3d.data.scenes import (
    InvalidBoxError,
    InvalidPoseError,
    InvalidSceneError,
    MissingViewError,
    SceneBatch,
    SceneItem,
    UnknownSplitError,
    boxes_from_metadata,
    boxes_to_corners,
    boxes_to_metadata,
    is_anomalous_asset,
    load_scene,
    read_depth,
    read_scene_metadata,
    read_split,
)

H = W = 8
K = [[10.0, 0.0, 4.0], [0.0, 12.0, 4.0], [0.0, 0.0, 1.0]]


def _pose(yaw: float, t: tuple[float, float, float]) -> list[list[float]]:
    c, s = math.cos(yaw), math.sin(yaw)
    # A world-to-camera rotation looking along world -z... any proper rotation will do here.
    return [[c, -s, 0.0, t[0]], [0.0, 0.0, -1.0, t[1]], [s, c, 0.0, t[2]], [0.0, 0.0, 0.0, 1.0]]


POSES = [_pose(0.1 * i, (0.01 * i, 0.02, 0.9 + 0.1 * i)) for i in range(3)]
OBJECTS = [
    {"name": "object", "path": "/data/blend/banana_028/banana_028.blend",
     "bbox": [[0.23, 0.22, 0.034], [0.26, 0.38, 0.072]]},
    {"name": "object.001", "path": "/data/blend/banana_028/banana_028-crack-001.blend",
     "bbox": [[-0.28, 0.17, 0.034], [0.31, 0.33, 0.073]]},
    {"name": "object.002", "path": "/data/blend/banana_028/banana_028.blend",
     "bbox": [[-0.05, -0.15, 0.034], [0.26, 0.38, 0.072]]},
]


def _png(path: Path, array: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def _object_mask(view: int, index: int) -> np.ndarray:
    """Object ``index`` owns row ``2 * index + view % 2`` of view ``view``."""
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[2 * index + view % 2] = 255
    return mask


def _write_scene(root: Path, name: str = "banana_028-001", views: int = 3, masks_dir: bool = False) -> Path:
    scene = root / name
    for v in range(views):
        rgba = np.zeros((H, W, 4), dtype=np.uint8)
        rgba[..., 0] = 10 * v
        rgba[..., 1] = np.arange(W, dtype=np.uint8)[None] * 20
        rgba[..., 3] = 255
        _png(scene / "RGB" / f"{v:04d}.png", rgba, "RGBA")
        for index, obj in enumerate(OBJECTS):
            _png(scene / "segmentations" / obj["name"] / f"{obj['name']}_{v:04d}.png", _object_mask(v, index), "L")
        _png(scene / "segmentations" / "floor_object" / f"floor_object_{v:04d}.png", np.zeros((H, W), np.uint8), "L")
        label = np.zeros((H, W), dtype=np.uint8)
        label[2 + v % 2, :3] = 255
        _png(scene / "binary_labels" / f"{v:04d}.png", label, "L")
        depth = np.full((H, W), 1e10, dtype=np.float32)
        depth[:, : v + 1] = 0.5 + v
        (scene / "depth").mkdir(exist_ok=True)
        np.save(scene / "depth" / f"{v:04d}.npy", depth)
        if masks_dir:
            full = np.zeros((H, W), dtype=np.uint8)
            full[:, -1] = 255
            _png(scene / "masks" / f"{v:04d}.png", full, "L")
    meta = {"objects": OBJECTS, "camera": {"poses": [{"rotation": p} for p in POSES], "K": K}}
    (scene / "scene3d.metadata.json").write_text(json.dumps(meta))
    return scene


# ----------------------------------------------------------------------------------------------
# the released layout, hand-written


def test_metadata_counts_poses_boxes_labels_exact(tmp_path: Path) -> None:
    meta = read_scene_metadata(_write_scene(tmp_path))
    assert meta.num_views == 3 and meta.num_objects == 3
    assert torch.equal(meta.intrinsics, torch.tensor(K))
    assert torch.equal(meta.world_to_camera, torch.tensor(POSES, dtype=torch.float32))
    # [h, w, d] in the file -> sizes (x, y, z) = (w, h, d) inside.
    assert torch.allclose(meta.boxes[1], torch.tensor([[-0.28, 0.17, 0.034], [0.33, 0.31, 0.073]]))
    assert meta.object_labels.tolist() == [False, True, False]
    assert meta.object_names == ["object", "object.001", "object.002"]
    assert meta.scene_id == "banana_028-001"


def test_load_scene_reads_every_field(tmp_path: Path) -> None:
    scene = _write_scene(tmp_path)
    item = load_scene(scene, [2, 0], load_depth=True, source_views=[True, False])
    assert isinstance(item, SceneItem)
    assert item.num_views == 2 and item.num_objects == 3
    assert item.image.shape == (2, 3, H, W)
    assert item.image[0, 0, 0, 0].item() == pytest.approx(20 / 255)  # view 2's red = 10 * 2
    assert torch.allclose(item.image[1, 1, 0], torch.arange(W) * 20 / 255)
    assert torch.equal(item.world_to_camera, torch.tensor([POSES[2], POSES[0]], dtype=torch.float32))
    assert torch.equal(item.intrinsics, torch.tensor([K, K]))
    assert item.view_index.tolist() == [2, 0]
    assert item.source_views.tolist() == [True, False]
    assert item.object_labels.tolist() == [False, True, False] and bool(item.gt_label)
    for slot, view in enumerate([2, 0]):
        for index in range(3):
            expected = torch.from_numpy(_object_mask(view, index) > 0)
            assert torch.equal(item.object_index[slot] == index, expected)
        assert torch.equal(item.silhouette[slot], item.object_index[slot] >= 0)  # no masks/: union of objects
        assert item.gt_mask[slot].sum() == 3 and item.gt_mask[slot, 2 + view % 2, :3].all()
        assert torch.all(item.depth[slot, :, : view + 1] == 0.5 + view)
        assert torch.all(item.depth[slot, :, view + 1 :] == 0.0)  # background 1e10 -> 0
    assert item.scene_id == "banana_028-001" and item.category == "banana"
    assert item.image_path == str(scene)


def test_masks_folder_wins_over_segmentation_union(tmp_path: Path) -> None:
    item = load_scene(_write_scene(tmp_path, masks_dir=True))
    assert item.silhouette[:, :, -1].all() and item.silhouette.sum() == 3 * H


def test_resize_scales_intrinsics(tmp_path: Path) -> None:
    item = load_scene(_write_scene(tmp_path), image_size=(16, 4))
    assert item.image.shape == (3, 3, 16, 4)
    assert item.object_index.shape == (3, 16, 4)
    assert torch.allclose(item.intrinsics[0], torch.tensor([[5.0, 0.0, 2.0], [0.0, 24.0, 8.0], [0.0, 0.0, 1.0]]))


def test_anomaly_rule_reads_the_asset_file_name() -> None:
    assert is_anomalous_asset("/a/b-c/banana_028-crack-001.blend")
    assert not is_anomalous_asset("/some-dir/with-dashes/banana_028.blend")


def test_box_conversions_roundtrip() -> None:
    meta = [[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]]
    boxes = boxes_from_metadata(meta)
    assert torch.allclose(boxes, torch.tensor([[[0.1, 0.2, 0.3], [0.5, 0.4, 0.6]]]))
    assert np.allclose(boxes_to_metadata(boxes), meta)
    corners = boxes_to_corners(boxes)
    assert torch.allclose(corners[0, 0], torch.tensor([-0.15, 0.0, 0.0]))
    assert torch.allclose(corners[0, 1], torch.tensor([0.35, 0.4, 0.6]))


def _yaw(angle: float, location: tuple[float, float, float]) -> list[list[float]]:
    c, s = math.cos(angle), math.sin(angle)
    return [[c, -s, 0.0, location[0]], [s, c, 0.0, location[1]], [0.0, 0.0, 1.0, location[2]], [0.0, 0.0, 0.0, 1.0]]


def test_released_boxes_are_local_sizes_turned_by_the_rotation_matrix(tmp_path: Path) -> None:
    """An elongated object (0.4 x 0.1 x 0.05 m along its own axes) turned by 30 degrees about z."""
    scene = _write_scene(tmp_path)
    location = (0.1, -0.2, 0.03)
    sizes = (0.4, 0.1, 0.05)

    def rotate(meta: dict) -> None:
        for index, obj in enumerate(meta["objects"]):
            obj["rotation_matrix"] = _yaw(math.radians(30.0) if index == 1 else 0.0, location)
            obj["bbox"] = [list(location), list(sizes)]

    _edit_metadata(scene, rotate)
    meta = read_scene_metadata(scene)
    c, s = math.cos(math.radians(30.0)), math.sin(math.radians(30.0))
    # The enclosing world box of the turned box, by hand: |cos| 0.4 + |sin| 0.1 along x, etc.
    expected = torch.tensor([list(location), [0.4 * c + 0.1 * s, 0.4 * s + 0.1 * c, 0.05]])
    assert torch.allclose(meta.boxes[1], expected, atol=1e-6)
    # Not turned: the sizes are x, y, z as written (no h / w swap).
    assert torch.allclose(meta.boxes[0], torch.tensor([list(location), list(sizes)]), atol=1e-6)
    assert torch.allclose(meta.object_sizes, torch.tensor([sizes] * 3))
    assert torch.allclose(meta.object_poses[1], torch.tensor(_yaw(math.radians(30.0), location)), atol=1e-6)
    item = load_scene(scene)
    assert torch.equal(item.object_poses, meta.object_poses) and torch.equal(item.object_sizes, meta.object_sizes)
    # Every corner of the oriented box lies inside the world box, and the box touches them.
    signs = torch.tensor([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], dtype=torch.float32)
    corners = (signs * torch.tensor(sizes) / 2) @ meta.object_poses[1, :3, :3].T + torch.tensor(location)
    low, high = boxes_to_corners(meta.boxes[1:2])[0]
    assert bool(((corners >= low - 1e-6) & (corners <= high + 1e-6)).all())
    assert torch.allclose(corners.min(0).values, low, atol=1e-6) and torch.allclose(corners.max(0).values, high, atol=1e-6)


def test_rotation_matrix_scale_is_removed_and_mixed_conventions_refused(tmp_path: Path) -> None:
    scene = _write_scene(tmp_path)

    def scaled(meta: dict) -> None:
        for obj in meta["objects"]:
            pose = np.array(_yaw(0.5, (0.0, 0.0, 0.0)))
            pose[:3, :3] *= 0.9999999  # Blender's scale of ~1 in the released matrices
            obj["rotation_matrix"] = pose.tolist()

    _edit_metadata(scene, scaled)
    rotation = read_scene_metadata(scene).object_poses[0, :3, :3].double()
    assert torch.allclose(rotation @ rotation.T, torch.eye(3, dtype=torch.float64), atol=1e-6)

    _edit_metadata(scene, lambda meta: meta["objects"][0].pop("rotation_matrix"))
    with pytest.raises(InvalidSceneError, match="rotation_matrix"):
        read_scene_metadata(scene)


# ----------------------------------------------------------------------------------------------
# bad scenes -> named errors that name the file


def _edit_metadata(scene: Path, edit) -> None:  # noqa: ANN001
    path = scene / "scene3d.metadata.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def test_missing_view_image(tmp_path: Path) -> None:
    scene = _write_scene(tmp_path)
    (scene / "RGB" / "0001.png").unlink()
    with pytest.raises(MissingViewError, match="0001.png") as info:
        load_scene(scene)
    assert isinstance(info.value, PointCloudError) and info.value.fix
    load_scene(scene, [0, 2])  # the other views still load
    with pytest.raises(MissingViewError, match="3 poses"):
        load_scene(scene, [3])


def test_missing_segmentation_and_depth(tmp_path: Path) -> None:
    scene = _write_scene(tmp_path)
    (scene / "segmentations" / "object.001" / "object.001_0002.png").unlink()
    (scene / "depth" / "0000.npy").unlink()
    with pytest.raises(MissingViewError, match="object.001"):
        load_scene(scene, [2])
    with pytest.raises(MissingViewError, match="0000.npy"):
        load_scene(scene, [0], load_depth=True, load_masks=False)


@pytest.mark.parametrize(
    ("edit", "error", "text"),
    [
        (lambda m: m["camera"]["poses"][1].update(rotation=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]),
         InvalidPoseError, r"poses\[1\].*\(3, 4\)"),
        (lambda m: m["camera"]["poses"][0].update(rotation=[[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
         InvalidPoseError, "rigid"),
        (lambda m: m["camera"].update(K=[[1, 0], [0, 1]]), InvalidPoseError, "camera.K"),
        (lambda m: m["objects"][2].update(bbox=[[0, 0, 0], [0.1, -0.2, 0.1]]), InvalidBoxError, r"objects\[2\]"),
        (lambda m: m["objects"][0].update(bbox=[[0, 0, 0]]), InvalidBoxError, r"objects\[0\]"),
        (lambda m: m["objects"][0].update(bbox=[[0, 0, "x"], [1, 1, 1]]), InvalidBoxError, "numeric"),
        (lambda m: m["objects"][1].pop("path"), InvalidSceneError, r"objects\[1\]"),
        (lambda m: m.pop("camera"), InvalidSceneError, "camera"),
    ],
)
def test_bad_metadata_raises_named_errors(tmp_path: Path, edit, error: type, text: str) -> None:  # noqa: ANN001
    scene = _write_scene(tmp_path)
    _edit_metadata(scene, edit)
    with pytest.raises(error, match=text) as info:
        read_scene_metadata(scene)
    assert "scene3d.metadata.json" in str(info.value)


def test_missing_metadata_and_split_file(tmp_path: Path) -> None:
    scene = _write_scene(tmp_path)
    (scene / "scene3d.metadata.json").unlink()
    with pytest.raises(InvalidSceneError, match="scene3d.metadata.json"):
        read_scene_metadata(scene)
    with pytest.raises(UnknownSplitError, match="does not exist"):
        read_split(tmp_path / "toys-split.json")
    (tmp_path / "toys-split.json").write_text(json.dumps({"train": "not a list"}))
    with pytest.raises(UnknownSplitError, match="lists of scene ids"):
        read_split(tmp_path / "toys-split.json")


@pytest.mark.parametrize("channels", ["blender_rgb", "z"])
def test_exr_depth_is_read_with_the_installed_dependency(tmp_path: Path, channels: str) -> None:
    import OpenEXR  # a dependency of anomalib-3d: the released scenes ship depth as EXR only

    depth = np.full((4, 5), 1e10, dtype=np.float32)
    depth[1:3, 2:4] = 0.75
    depth[3, 0] = 1.25
    # Blender (the release) writes depth into R, G and B, ZIP-compressed; other tools write Z.
    layers = {"R": depth, "G": depth, "B": depth} if channels == "blender_rgb" else {"Z": depth}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    path = tmp_path / "0000.exr"
    with OpenEXR.File(header, layers) as exr:
        exr.write(str(path))
    read = read_depth(path)
    expected = np.where(depth < 1e9, depth, 0.0)
    assert read.dtype == np.float32 and read.shape == (4, 5)
    assert np.array_equal(read, expected)


def test_scene_with_exr_depth_loads_like_npy(tmp_path: Path) -> None:
    import OpenEXR

    scene = _write_scene(tmp_path)
    reference = load_scene(scene, load_depth=True).depth
    (scene / "depth_exr").mkdir()
    for view in range(3):
        depth = np.load(scene / "depth" / f"{view:04d}.npy")
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        with OpenEXR.File(header, {"R": depth, "G": depth, "B": depth}) as exr:
            exr.write(str(scene / "depth_exr" / f"{view:04d}.exr"))
        (scene / "depth" / f"{view:04d}.npy").unlink()
    assert torch.equal(load_scene(scene, load_depth=True).depth, reference)


def test_corrupt_exr_raises_a_named_error(tmp_path: Path) -> None:
    path = tmp_path / "0000.exr"
    path.write_bytes(b"\x76\x2f\x31\x01" + b"\0" * 16)
    with pytest.raises(PointCloudError, match="EXR"):
        read_depth(path)


# ----------------------------------------------------------------------------------------------
# dataclasses: ragged objects


def _item(num_objects: int, views: int = 2, seed: int = 0, scene_id: str | None = None) -> SceneItem:
    generator = torch.Generator().manual_seed(seed)
    boxes = torch.rand(num_objects, 2, 3, generator=generator) + 0.1
    return SceneItem(
        image=torch.rand(views, 3, 6, 7, generator=generator),
        intrinsics=torch.eye(3).expand(views, 3, 3),
        world_to_camera=torch.eye(4).expand(views, 4, 4),
        gt_mask=torch.zeros(views, 6, 7),
        boxes=boxes,
        object_labels=torch.arange(num_objects) == 0,
        object_names=[f"o{i}" for i in range(num_objects)],
        gt_label=num_objects > 0,
        scene_id=scene_id,
    )


def test_collate_ragged_objects_and_back() -> None:
    items = [_item(3, seed=1, scene_id="a"), _item(0, seed=2), _item(5, seed=3, scene_id="c")]
    batch = SceneBatch.collate(items)
    assert batch.batch_size == 3 and batch.num_views == 2
    assert batch.image.shape == (3, 2, 3, 6, 7)
    assert batch.boxes.shape == (8, 2, 3)
    assert batch.object_batch.tolist() == [0, 0, 0, 2, 2, 2, 2, 2]
    assert batch.num_objects.tolist() == [3, 0, 5]
    assert batch.object_ptr.tolist() == [0, 3, 3, 8]
    assert batch.scene_id == ["a", "", "c"]
    assert batch.gt_label.tolist() == [True, False, True]
    dense, valid = batch.pad_objects()
    assert dense["boxes"].shape == (3, 5, 2, 3) and valid.sum(1).tolist() == [3, 0, 5]
    assert torch.equal(dense["boxes"][2, :5], items[2].boxes)
    assert torch.all(dense["boxes"][0, 3:] == 0)
    with pytest.raises(ValueError, match="max_objects"):
        batch.pad_objects(max_objects=4)
    back = batch.items
    for original, restored in zip(items, back, strict=True):
        assert torch.equal(original.boxes, restored.boxes)
        assert torch.equal(original.image, restored.image)
        assert original.object_names == restored.object_names
        assert original.scene_id == restored.scene_id


def test_collate_refuses_mismatched_scenes() -> None:
    with pytest.raises(InvalidSceneError, match="different shapes"):
        SceneBatch.collate([_item(2, views=2), _item(2, views=3)])
    partial = _item(2)
    partial.gt_mask = None
    with pytest.raises(InvalidSceneError, match="gt_mask"):
        SceneBatch.collate([_item(2), partial])


def test_item_validators_catch_bad_shapes() -> None:
    with pytest.raises(InvalidSceneError, match="image"):
        SceneItem(image=torch.rand(2, 4, 5, 5))
    with pytest.raises(InvalidPoseError, match="rigid"):
        SceneItem(image=torch.rand(2, 3, 5, 5), world_to_camera=torch.eye(4).expand(2, 4, 4) * 2)
    with pytest.raises(InvalidSceneError, match="views"):
        SceneItem(image=torch.rand(2, 3, 5, 5), intrinsics=torch.eye(3).expand(3, 3, 3))
    with pytest.raises(InvalidBoxError):
        SceneItem(image=torch.rand(2, 3, 5, 5), boxes=-torch.ones(1, 2, 3))
    with pytest.raises(InvalidSceneError, match="disagree"):
        SceneItem(image=torch.rand(2, 3, 5, 5), boxes=torch.ones(2, 2, 3), object_labels=torch.zeros(3))


# ----------------------------------------------------------------------------------------------
# synthetic scenes


SMALL = {"num_views": 3, "image_size": 48, "points_per_object": 1500}


def test_make_scene_is_deterministic_and_labels_follow_the_assets() -> None:
    from anomalib_3d.data.synthetic.scenes import make_scene

    first = make_scene("gear", 11, num_odd=1, **SMALL)
    second = make_scene("gear", 11, num_odd=1, **SMALL)
    assert np.array_equal(first.points, second.points) and np.array_equal(first.world_to_camera, second.world_to_camera)
    assert first.asset_paths == second.asset_paths
    assert 3 <= first.num_objects <= 6 and first.object_labels.sum() == 1
    assert [is_anomalous_asset(p) for p in first.asset_paths] == first.object_labels.tolist()
    other = make_scene("gear", 12, num_odd=1, **SMALL)
    assert not np.array_equal(first.points, other.points)


def test_scene_colour_random_makes_colour_oddness_relative_to_the_scene() -> None:
    from anomalib_3d.data.synthetic.generator import CATEGORY_COLORS
    from anomalib_3d.data.synthetic.scenes import make_scene, scene_dataset_params

    family = make_scene("gear", 11, num_odd=1, **SMALL)
    explicit = make_scene("gear", 11, num_odd=1, scene_colour="family", **SMALL)
    assert np.array_equal(family.points, explicit.points) and np.array_equal(family.albedo, explicit.albedo)
    base_colours = []
    for seed in range(6):
        scene = make_scene("gear", seed, num_odd=1, scene_colour="random", colour_defect_probability=1.0, **SMALL)
        per_object = np.stack([scene.albedo[scene.object_id == k][0] for k in range(scene.num_objects)])
        odd = scene.object_labels
        assert scene.defects[int(np.flatnonzero(odd)[0])] == "colour"
        normal = per_object[~odd]
        assert np.allclose(normal, normal[0])  # the scene's normal instances share one colour ...
        assert np.abs(per_object[odd][0] - normal[0]).max() >= 0.25  # ... and the odd one differs clearly
        base_colours.append(normal[0])
    # ... while across scenes the normal colour is free: far from the family colour in some scenes.
    spread = np.abs(np.stack(base_colours) - np.array(CATEGORY_COLORS["gear"])).max(axis=1)
    assert spread.max() > 0.2
    with pytest.raises(ValueError, match="scene_colour"):
        scene_dataset_params(scene_colour="rainbow")


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_generated_dataset_is_byte_identical_for_a_seed(tmp_path: Path) -> None:
    from anomalib_3d.data.synthetic.scenes import generate_scene_dataset

    params = {"categories": ["nut"], "unseen_categories": ["ring"], "num_train": 2, "num_test": 1,
              "num_test_unseen": 1, **SMALL}
    a = generate_scene_dataset(tmp_path / "a", **params)
    b = generate_scene_dataset(tmp_path / "b", **params)
    assert _tree_digest(a) == _tree_digest(b)
    c = generate_scene_dataset(tmp_path / "c", **{**params, "seed": 1})
    assert _tree_digest(a) != _tree_digest(c)
    split = read_split(a / "synthetic-split.json")
    assert {k: len(v) for k, v in split.items()} == {"train": 2, "seen-test": 1, "unseen-test": 1}
    assert all(s.startswith("ring") for s in split["unseen-test"])


def test_loader_reads_what_the_generator_writes_geometry_included(tmp_path: Path) -> None:
    from anomalib_3d.data.synthetic.scenes import make_scene, render_scene, write_scene

    scene = make_scene("cup", 5, num_odd=1, num_views=3, image_size=64, points_per_object=3000)
    render = render_scene(scene)
    item = load_scene(write_scene(scene, tmp_path / "cup_scene", render), load_depth=True)
    assert item.object_labels.tolist() == scene.object_labels.tolist()
    assert torch.allclose(item.boxes, torch.from_numpy(scene.boxes).float(), atol=1e-5)
    assert torch.allclose(item.object_poses, torch.from_numpy(scene.object_poses).float(), atol=1e-6)
    assert torch.equal(item.object_index, torch.from_numpy(render.object_index))
    assert torch.equal(item.gt_mask, torch.from_numpy(render.anomaly))
    assert item.gt_mask.any() and not (item.gt_mask & ~item.silhouette).any()

    # Depth, K and poses agree: floor pixels lifted back to the world lie on z = 0.
    floor = torch.from_numpy(render.floor)
    view, rows, cols = torch.nonzero(floor, as_tuple=True)
    z = item.depth[view, rows, cols].double()
    pixels = torch.stack([cols + 0.5, rows + 0.5, torch.ones_like(z)], dim=1)
    cam = (torch.linalg.inv(item.intrinsics[view].double()) @ pixels.unsqueeze(-1)).squeeze(-1) * z.unsqueeze(1)
    pose = item.world_to_camera[view].double()
    world = (pose[:, :3, :3].transpose(1, 2) @ (cam - pose[:, :3, 3]).unsqueeze(-1)).squeeze(-1)
    assert world[:, 2].abs().max().item() < 1e-3

    # Object pixels lifted back to the world lie inside (a pixel's slack around) their own box.
    view, rows, cols = torch.nonzero(item.object_index >= 0, as_tuple=True)
    owner = item.object_index[view, rows, cols]
    z = item.depth[view, rows, cols].double()
    pixels = torch.stack([cols + 0.5, rows + 0.5, torch.ones_like(z)], dim=1)
    cam = (torch.linalg.inv(item.intrinsics[view].double()) @ pixels.unsqueeze(-1)).squeeze(-1) * z.unsqueeze(1)
    pose = item.world_to_camera[view].double()
    world = (pose[:, :3, :3].transpose(1, 2) @ (cam - pose[:, :3, 3]).unsqueeze(-1)).squeeze(-1)
    corners = boxes_to_corners(item.boxes.double())[owner]
    slack = 0.03  # a disc of ~1.5 px at ~1 m is ~2.5 cm wide
    inside = ((world >= corners[:, 0] - slack) & (world <= corners[:, 1] + slack)).all(dim=1)
    assert inside.float().mean().item() > 0.98
    # ... and inside their oriented box, in each object's own frame (the released convention).
    pose = item.object_poses.double()[owner]
    local = torch.einsum("nji,nj->ni", pose[:, :3, :3], world - pose[:, :3, 3])
    half = item.object_sizes.double()[owner] / 2
    assert (local.abs() <= half + slack).all(dim=1).float().mean().item() > 0.98
