"""Scene pictures: projected boxes land on hand-computed pixels, boxes behind the camera are skipped,
and the SceneVisualizer writes one PNG per test scene where anomalib puts image results."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from anomalib_3d.visualization.colormap import score_to_rgb
from anomalib_3d.visualization.scenes import (
    GT_ANOMALOUS_BOX_RGB,
    GT_NORMAL_BOX_RGB,
    SceneVisualizer,
    clip_segment,
    draw_scene,
    project_box_edges,
    scene_output_path,
)

SIZE = 128
FOCAL = 100.0
CENTRE = 64.0
BLUE = (0, 0, 255)
RED = tuple(round(c * 255) for c in GT_ANOMALOUS_BOX_RGB)
GREEN = tuple(round(c * 255) for c in GT_NORMAL_BOX_RGB)


def _camera(rotation: torch.Tensor | None = None, eye: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor]:
    intrinsics = torch.tensor([[FOCAL, 0.0, CENTRE], [0.0, FOCAL, CENTRE], [0.0, 0.0, 1.0]])
    rotation = torch.eye(3) if rotation is None else rotation
    pose = torch.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = -rotation @ torch.tensor(eye)
    return intrinsics[None], pose[None]


def _blue_view() -> torch.Tensor:
    image = torch.zeros(1, 3, SIZE, SIZE)
    image[:, 2] = 1.0
    return image


def _panel_origins(picture: np.ndarray) -> list[tuple[int, int]]:
    """Top-left pixel of every panel: the first column holding the view's blue background, and the runs
    of rows holding blue within the panel's width (drawn lines may cover a panel's border pixels)."""
    blue = np.all(picture == BLUE, axis=-1)
    left = int(np.nonzero(blue.any(axis=0))[0].min())
    column = blue[:, left : left + SIZE].any(axis=1)
    starts = [int(r) for r in np.nonzero(column & ~np.concatenate([[False], column[:-1]]))[0]]
    return [(r, left) for r in starts]


def _pixel(picture: np.ndarray, origin: tuple[int, int], col: int, row: int) -> tuple[int, ...]:
    return tuple(int(v) for v in picture[origin[0] + row, origin[1] + col])


def test_unit_box_lands_on_hand_projected_pixels() -> None:
    """Camera at the origin looking down +z; a unit box centred 5 m ahead.

    Near face (z = 4.5): 64 +- 100 * 0.5 / 4.5 = 52.89 / 75.11 -> pixels 52 and 75.
    Far face (z = 5.5): 64 +- 9.09 -> 54.91 / 73.09 -> pixels 54 and 73.
    """
    intrinsics, pose = _camera()
    boxes = torch.tensor([[[0.0, 0.0, 5.0], [1.0, 1.0, 1.0]]])
    picture = draw_scene(_blue_view(), intrinsics, pose, boxes, labels=torch.tensor([True]), panel_size=None,
                         line_width=1)
    (origin,) = _panel_origins(picture)
    near_lo, near_hi = math.floor(CENTRE - FOCAL * 0.5 / 4.5), math.floor(CENTRE + FOCAL * 0.5 / 4.5)
    far_lo, far_hi = math.floor(CENTRE - FOCAL * 0.5 / 5.5), math.floor(CENTRE + FOCAL * 0.5 / 5.5)
    assert (near_lo, near_hi, far_lo, far_hi) == (52, 75, 54, 73)
    for col, row in [(near_lo, near_lo), (near_hi, near_lo), (near_lo, near_hi), (near_hi, near_hi),
                     (far_lo, far_lo), (far_hi, far_hi), (64, near_lo), (near_hi, 64)]:
        assert _pixel(picture, origin, col, row) == RED, (col, row)
    # Inside the faces and just outside the near face: untouched background.
    for col, row in [(64, 64), (60, 68), (near_hi + 2, near_hi + 2), (near_lo - 2, 64)]:
        assert _pixel(picture, origin, col, row) == BLUE, (col, row)


def test_rotated_and_translated_camera() -> None:
    """Camera at (1, 2, -3), rolled 90 degrees about its optical axis (camera x = world y, camera y = -world x);
    a box 1 (x) by 0.5 (y) by 1 (z) at (1, 2, 2): its near face spans 64 +- 5.56 columns, 64 +- 11.1 rows."""
    rotation = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    intrinsics, pose = _camera(rotation, eye=(1.0, 2.0, -3.0))
    boxes = torch.tensor([[[1.0, 2.0, 2.0], [1.0, 0.5, 1.0]]])
    picture = draw_scene(_blue_view(), intrinsics, pose, boxes, labels=torch.tensor([True]), panel_size=None,
                         line_width=1)
    (origin,) = _panel_origins(picture)
    col_hi, row_hi = math.floor(CENTRE + FOCAL * 0.25 / 4.5), math.floor(CENTRE + FOCAL * 0.5 / 4.5)
    assert (col_hi, row_hi) == (69, 75)
    assert _pixel(picture, origin, col_hi, row_hi) == RED
    # The unrotated box would have a corner here; the rolled one does not.
    assert _pixel(picture, origin, row_hi, col_hi) == BLUE


def test_prediction_row_is_coloured_by_score_above_ground_truth() -> None:
    intrinsics, pose = _camera()
    boxes = torch.tensor([[[0.0, 0.0, 5.0], [1.0, 1.0, 1.0]]])
    score = 0.9
    picture = draw_scene(_blue_view(), intrinsics, pose, boxes, scores=torch.tensor([score]),
                         labels=torch.tensor([False]), panel_size=None, line_width=1)
    prediction, truth = _panel_origins(picture)
    expected = tuple(int(v) for v in (score_to_rgb(torch.tensor(score)) * 255).round())
    assert _pixel(picture, prediction, 52, 75) == expected
    assert _pixel(picture, truth, 52, 75) == GREEN
    # The colour bar holds both ends of the colormap.
    colours = {tuple(int(v) for v in c) for c in picture.reshape(-1, 3)}
    for end in (0.0, 1.0):
        assert tuple(int(v) for v in (score_to_rgb(torch.tensor(end)) * 255).round()) in colours


def test_panel_size_scales_the_cameras_with_the_views() -> None:
    intrinsics, pose = _camera()
    boxes = torch.tensor([[[0.0, 0.0, 5.0], [1.0, 1.0, 1.0]]])
    picture = draw_scene(_blue_view(), intrinsics, pose, boxes, labels=torch.tensor([True]), panel_size=2 * SIZE,
                         line_width=1)
    blue = np.all(picture == BLUE, axis=-1)
    rows, cols = np.nonzero(blue)
    origin = (int(rows.min()), int(cols.min()))
    # Doubling the image doubles the continuous coordinates: 2 * 75.11 = 150.2 -> pixel 150.
    assert _pixel(picture, origin, 150, 150) == RED
    assert _pixel(picture, origin, 105, 105) == RED  # 2 * 52.89 = 105.8


def test_boxes_behind_the_camera_are_not_drawn() -> None:
    intrinsics, pose = _camera()
    behind = torch.tensor([[[0.0, 0.0, -5.0], [1.0, 1.0, 1.0]]])
    _, visible, _ = project_box_edges(behind, intrinsics, pose)
    assert not visible.any()
    picture = draw_scene(_blue_view(), intrinsics, pose, behind, scores=torch.tensor([1.0]),
                         labels=torch.tensor([True]), panel_size=None, line_width=1)
    for origin in _panel_origins(picture):
        panel = picture[origin[0] : origin[0] + SIZE, origin[1] : origin[1] + SIZE]
        assert np.all(panel == BLUE)


def test_box_straddling_the_camera_is_clipped_not_crashed() -> None:
    """A box from z = -0.5 to 1.5 around the optical axis: the four edges along z cross the camera
    plane; their front parts run off the image, the far face (z = 1.5, +-33.3 px) is drawn."""
    intrinsics, pose = _camera()
    boxes = torch.tensor([[[0.0, 0.0, 0.5], [1.0, 1.0, 2.0]]])
    segments, visible, _ = project_box_edges(boxes, intrinsics, pose)
    # The near face (z = -0.5) is behind the camera; the far face and the clipped z-edges remain.
    z_edges, near_face = torch.tensor([8, 9, 10, 11]), torch.tensor([0, 1, 4, 5])
    assert visible[0, 0, z_edges].all() and not visible[0, 0, near_face].any() and int(visible.sum()) == 8
    assert torch.isfinite(segments[visible]).all()
    picture = draw_scene(_blue_view(), intrinsics, pose, boxes, labels=torch.tensor([True]), panel_size=None,
                         line_width=1)
    (origin,) = _panel_origins(picture)
    far = math.floor(CENTRE + FOCAL * 0.5 / 1.5)
    assert far == 97
    assert _pixel(picture, origin, far, far) == RED
    # The clipped z-edge leaves the far corner towards the image corner: its pixels lie on the diagonal.
    assert _pixel(picture, origin, 110, 110) == RED


def test_clip_segment() -> None:
    start, end = clip_segment((-10.0, 5.0), (30.0, 5.0), 20.0, 10.0)
    assert np.allclose(start, (0.0, 5.0)) and np.allclose(end, (20.0, 5.0))
    assert clip_segment((-10.0, -5.0), (30.0, -5.0), 20.0, 10.0) is None
    start, end = clip_segment((1.0, 1.0), (2.0, 3.0), 20.0, 10.0)
    assert np.allclose(start, (1.0, 1.0)) and np.allclose(end, (2.0, 3.0))
    start, end = clip_segment((10.0, 5.0), (1e9, 5.0 + 1e9), 20.0, 10.0)  # nearly 45 degrees, far off the image
    assert np.allclose(start, (10.0, 5.0)) and np.allclose(end, (15.0, 10.0), atol=1e-6)


def test_bad_shapes_raise() -> None:
    intrinsics, pose = _camera()
    boxes = torch.zeros(2, 2, 3)
    with pytest.raises(ValueError, match="scores"):
        draw_scene(_blue_view(), intrinsics, pose, boxes, scores=torch.zeros(3))
    with pytest.raises(ValueError, match="views"):
        draw_scene(_blue_view(), intrinsics.expand(2, 3, 3), pose, boxes)


def test_predicted_boxes_replace_the_given_ones_in_the_prediction_row() -> None:
    """Scene 1 of a batch of two has one proposal at the unit box (score 0.9); scene 0 has none."""
    import dataclasses

    from anomalib_3d.data.scenes import SceneBatch, SceneItem

    if "pred_boxes" not in {f.name for f in dataclasses.fields(SceneBatch)}:
        pytest.skip("SceneBatch has no predicted-box fields")
    intrinsics, pose = _camera()
    far_box = torch.tensor([[[3.0, 0.0, 20.0], [0.5, 0.5, 0.5]]])  # the given box, out of the way of the proposal
    items = [SceneItem(image=_blue_view(), intrinsics=intrinsics, world_to_camera=pose, boxes=far_box,
                       object_labels=torch.tensor([False]), scene_id=f"s{i}") for i in range(2)]
    batch = SceneBatch.collate(items)
    batch.update(object_scores=torch.tensor([0.1, 0.1]), pred_boxes=torch.tensor([[[0.0, 0.0, 5.0], [1.0, 1.0, 1.0]]]),
                 pred_object_scores=torch.tensor([0.9]), pred_object_batch=torch.tensor([1]))
    pictures = SceneVisualizer(panel_size=None, line_width=1).visualize(batch)
    expected = tuple(int(v) for v in (score_to_rgb(torch.tensor(0.9)) * 255).round())
    empty, with_proposal = (_panel_origins(p) for p in pictures)
    assert _pixel(pictures[1], with_proposal[0], 75, 75) == expected
    assert _pixel(pictures[1], with_proposal[1], 75, 75) == BLUE  # the ground-truth row has no box there
    assert _pixel(pictures[0], empty[0], 75, 75) == BLUE


def test_scene_output_path_follows_anomalib_image_rule(tmp_path: Path) -> None:
    from anomalib.utils.path import generate_output_filename

    scene = "/data/MultiViewScenes/scenes_abc/cup_seentest_0001"
    path = scene_output_path(tmp_path, scene, "unused", "MultiViewScenes", "synthetic_scenes")
    image_rule = generate_output_filename(scene + ".png", tmp_path, "MultiViewScenes", "synthetic_scenes", mkdir=False)
    assert path == image_rule == tmp_path / "scenes_abc" / "cup_seentest_0001.png"
    assert path.parent.is_dir()
    assert scene_output_path(tmp_path, None, "batch0000_01") == tmp_path / "batch0000_01.png"


def test_visualizer_writes_one_png_per_test_scene(tmp_path: Path) -> None:
    """A real tiny Engine run (README's tiny CPU parameters, 1 epoch)."""
    from anomalib.engine import Engine
    from anomalib_3d_plugins.odd_one_out import OddOneOut
    from PIL import Image

    from anomalib_3d.data.datamodules.multiview_scenes import MultiViewScenes

    torch.manual_seed(0)
    datamodule = MultiViewScenes(
        root=tmp_path / "data",
        synthetic={"num_train": 2, "num_test": 2, "num_test_unseen": 1, "num_views": 10, "image_size": 32,
                   "points_per_object": 800, "max_objects": 4},
        train_batch_size=2, eval_batch_size=2,
    )
    model = OddOneOut(grid_shape=[24, 24, 8], voxel_size=0.06, grid_center=[0, 0, 0.12], feature_dim=8,
                      projection_dim=8, crop_size=4, num_blocks=1, heads=2, token_dim=16, topk=5,
                      render_size=[12, 12], num_samples=16, visualizer=SceneVisualizer(max_views=3, panel_size=64))
    engine = Engine(accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path / "results", max_epochs=1,
                    enable_progress_bar=False, enable_model_summary=False)
    engine.fit(model, datamodule=datamodule)
    engine.test(model, datamodule=datamodule, verbose=False)
    images = Path(engine.trainer.default_root_dir) / "images"
    written = sorted(images.rglob("*.png"))
    scenes = sorted(Path(p).name for p in datamodule.test_data.samples.image_path)
    assert sorted(p.stem for p in written) == scenes
    folder = datamodule.dataset_root.name  # anomalib keeps the folders after the dataset folder
    assert all(p.parent == images / folder for p in written)
    width, height = Image.open(written[0]).size
    assert width > 3 * 64 and height > 2 * 64
