"""What PointAD sees: sensor-frame scans from the front, the authors' rigs, per-cloud radii that do
not depend on the batch, and predictions identical alone and in any batch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from anomalib_3d_plugins.pointad.clip_backbone import FrozenCLIP
from anomalib_3d_plugins.pointad.prompts import PromptLearner
from anomalib_3d_plugins.pointad.render_settings import RenderSettings
from anomalib_3d_plugins.pointad.torch_model import PointADModel

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 40  # organized grid of the synthetic scan


def dented_dome_scan(size: int = SIZE, pit_depth: float = 0.02) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """An organized sensor-frame scan (camera at the origin looking along +z, y down) of a dome
    bulging towards the sensor, with a pit (a dent: surface pushed *away* from the sensor).

    Returns ``(points (N, 3), grid_index (N,), dent (N,) bool, pit depth (N,))``; grid pixels
    outside the dome have no point (as MVTec 3D-AD's zeros after background removal)."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    x = (cols - size / 2 + 0.5) * 0.01
    y = (rows - size / 2 + 0.5) * 0.01
    radius = 0.45 * size * 0.01
    d2 = x**2 + y**2
    inside = d2 < radius**2
    height = np.sqrt(np.clip(radius**2 - d2, 0, None))  # towards the sensor
    cx, cy = -0.3 * radius, 0.25 * radius
    pit = pit_depth * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (0.15 * radius) ** 2))
    z = 1.0 - height + pit  # the pit is farther from the sensor
    dent = inside & (np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (0.15 * radius) ** 2)) > 0.5)
    xyz = np.stack([x, y, z], axis=-1).reshape(-1, 3)
    index = np.flatnonzero(inside.reshape(-1))
    return (torch.from_numpy(xyz[index]).float(), torch.from_numpy(index), torch.from_numpy(dent.reshape(-1)[index]),
            torch.from_numpy(pit.reshape(-1)[index]).float())


@pytest.fixture(scope="module")
def backbone() -> FrozenCLIP:
    torch.manual_seed(0)
    return FrozenCLIP("pointad-tiny-vit", None)


def make_model(backbone: FrozenCLIP, **render: object) -> PointADModel:
    torch.manual_seed(1)
    render.setdefault("image_size", 96)
    return PointADModel(backbone, PromptLearner(backbone), render=RenderSettings(**render), smoothing_k=8).eval()


# ---------------------------------------------------------------------------------------------
def test_default_rigs_are_the_authors_mvtec_and_real3d_sets(backbone: FrozenCLIP) -> None:
    model = make_model(backbone)
    flip = Rotation.from_euler("x", 180, degrees=True)
    mvtec = [("x", a) for a in (-45, -15, 0, 15, 45)] + [("y", a) for a in (-30, -15, 15, 30)]
    expected = np.stack([(Rotation.from_euler(ax, a, degrees=True) * flip).as_matrix() for ax, a in mvtec])
    torch.testing.assert_close(model.rig_for(True).rotations, torch.from_numpy(expected).float(), atol=1e-6, rtol=0)
    real3d = np.stack([Rotation.from_euler("x", 36 * k, degrees=True).as_matrix() for k in range(-4, 5)])
    torch.testing.assert_close(model.rig_for(False).rotations, torch.from_numpy(real3d).float(), atol=1e-6, rtol=0)


def test_view_axis_alone_selects_the_table_7_set_about_that_axis(backbone: FrozenCLIP) -> None:
    model = make_model(backbone, view_axis="y")
    angles = [36 * k for k in range(-4, 5)]
    expected = Rotation.from_euler("y", np.array(angles)[:, None], degrees=True).as_matrix()
    torch.testing.assert_close(model.rig_for(False).rotations, torch.from_numpy(expected).float(), atol=1e-6, rtol=0)
    three = make_model(backbone, view_axis="z", num_views=3).rig_for(False).rotations
    expected = Rotation.from_euler("z", [[-90], [0], [90]], degrees=True).as_matrix()
    torch.testing.assert_close(three, torch.from_numpy(expected).float(), atol=1e-6, rtol=0)


def test_explicit_views_mix_axes_and_matrices(backbone: FrozenCLIP) -> None:
    matrix = Rotation.from_euler("zyx", [10, 20, 30], degrees=True).as_matrix()
    model = make_model(backbone, views=(("x", -30.0), ("y", 45.0), matrix.tolist()), object_frame="none")
    expected = np.stack([Rotation.from_euler("x", -30, degrees=True).as_matrix(),
                         Rotation.from_euler("y", 45, degrees=True).as_matrix(), matrix])
    for organized in (False, True):
        torch.testing.assert_close(model.rig_for(organized).rotations, torch.from_numpy(expected).float(),
                                   atol=1e-6, rtol=0)


def _front_view(model: PointADModel, points: torch.Tensor, index: torch.Tensor) -> tuple[object, int]:
    output = model.render(points, torch.zeros(points.shape[0], dtype=torch.long), 1, with_images=True,
                          grid_index=index, grid_shape=(SIZE, SIZE))
    captions = model.rig_for(True).captions()
    return output, next(i for i, c in enumerate(captions) if c.startswith("X 0°"))


def test_sensor_frame_scan_is_seen_from_the_sensor_side_with_the_dent_deeper(backbone: FrozenCLIP) -> None:
    points, index, dent, pit = dented_dome_scan()
    model = make_model(backbone)
    output, front = _front_view(model, points, index)
    depth = output.point_depth[:, front]
    visible = output.visible[:, front]
    # The dome's apex (nearest to the sensor: smallest sensor z) is the nearest point to our camera.
    apex = torch.argmin(points[:, 2])
    assert depth[apex] <= depth.min() + 1e-6
    assert bool(visible[dent].all()) and float(visible.float().mean()) > 0.85  # the rim is grazing
    # Upright: sensor rows (y down) keep their order in the image rows.
    rows = output.point_uv[:, front, 1].float()
    assert np.corrcoef(rows.numpy(), points[:, 1].numpy())[0, 1] > 0.99
    # Render depth grows with the distance from the sensor (slope 1 / scale), so the pit lies
    # deeper than the dome would without it, by the pit's own depth.
    slope, intercept = np.polyfit(points[visible, 2].double().numpy(), depth[visible].double().numpy(), 1)
    assert slope * float(output.scale[0]) == pytest.approx(1.0, abs=1e-3)
    dome_without_pit = intercept + slope * (points[:, 2] - pit).double()
    extra = (depth.double() - dome_without_pit)[dent] * float(output.scale[0])
    assert float(extra.mean()) == pytest.approx(float(pit[dent].mean()), rel=0.05)
    assert float(extra.min()) > 0
    centre = points[dent].mean(0)
    # ...and shaded as a pit: against the same dome without it, the wall facing the light
    # brightens and the opposite wall darkens (a bump: the reverse). A pit's wall at offset o
    # from its centre leans towards -o, so it faces the light l (camera x right, y up) when
    # o . l < 0; the renderer's light comes from (-0.4, 0.5) in the image plane.
    smooth, _ = _front_view(model, dented_dome_scan(pit_depth=0.0)[0], index)
    uv = output.point_uv[:, front]
    shade = output.images[0, front].mean(0)[uv[:, 1], uv[:, 0]] - smooth.images[0, front].mean(0)[uv[:, 1], uv[:, 0]]
    offset_x, offset_y = points[:, 0] - centre[0], -(points[:, 1] - centre[1])  # sensor y is down
    towards_light = offset_x * -0.4 + offset_y * 0.5
    lit, shadowed = dent & (towards_light < 0), dent & (towards_light > 0)
    assert float(shade[lit].mean()) > 0.02 and float(shade[shadowed].mean()) < -0.02


def test_without_the_flip_the_front_view_sees_the_inside_and_the_dent_as_a_bump(backbone: FrozenCLIP) -> None:
    """The bug this guards against: sensor-frame scans rendered from behind."""
    points, index, dent, pit = dented_dome_scan()
    model = make_model(backbone, object_frame="none")
    output, front = _front_view(model, points, index)
    depth = output.point_depth[:, front]
    apex = torch.argmin(points[:, 2])
    assert depth[apex] > depth.median()  # the apex is now on the far side
    slope, intercept = np.polyfit(points[:, 2].double().numpy(), depth.double().numpy(), 1)
    assert slope < 0  # nearer to the sensor = farther from the camera: seen from behind
    extra = (depth.double() - (intercept + slope * (points[:, 2] - pit).double()))[dent]
    assert float(extra.mean()) < 0  # the pit now reads as a bump


def test_every_view_of_the_mvtec_rig_sees_the_sensor_side(backbone: FrozenCLIP) -> None:
    points, index, dent, pit = dented_dome_scan()
    output = make_model(backbone).render(points, torch.zeros(points.shape[0], dtype=torch.long), 1,
                                         with_images=False, grid_index=index, grid_shape=(SIZE, SIZE))
    assert output.num_views == 9
    seen = output.visible.float().mean(0)
    assert bool((seen > 0.6).all()), seen  # no grazing views
    assert bool((output.visible[dent].float().mean(0) > 0.5).all())


# ---------------------------------------------------------------------------------------------
def test_radius_from_the_grid_pitch_and_from_the_spacing(backbone: FrozenCLIP) -> None:
    """Organized: sqrt(2/pi) x grid pitch in render pixels; unorganized: sqrt(2/ln 2) x median NN distance."""
    model = make_model(backbone, image_size=336)
    side = torch.arange(50, dtype=torch.float32) * 0.01
    yy, xx = torch.meshgrid(side, side, indexing="ij")
    plane = torch.stack([xx, yy, torch.ones_like(xx)], dim=-1).reshape(-1, 3)  # pitch 0.01, half-diagonal 0.3465
    half_diagonal = math.hypot(0.49, 0.49) / 2
    pixels = 0.9 * 168 / half_diagonal  # orthographic: unit sphere over 90 % of the half image
    organized = model.radius_for_cloud(plane, torch.arange(2500), (50, 50))
    assert organized == pytest.approx(math.sqrt(2 / math.pi) * 0.01 * pixels, abs=2e-3)  # 3.485
    unorganized = model.radius_for_cloud(plane)
    assert unorganized == pytest.approx(math.sqrt(2 / math.log(2)) * 0.01 * pixels, abs=2e-3)  # 7.405
    assert make_model(backbone, point_radius_px=2.5).radius_for_cloud(plane) == 2.5


def _cloud(num: int, seed: int) -> torch.Tensor:
    from anomalib_3d.data.synthetic import make_sample

    return torch.from_numpy(make_sample("cup", "bulge", seed=seed, num_points=num).points).float()


def test_predictions_are_identical_alone_and_in_any_batch(backbone: FrozenCLIP) -> None:
    """Mixed densities (300 / 3000 / 1200 points): each cloud's radius, map and score as alone."""
    model = make_model(backbone, num_views=3, image_size=64)
    clouds = [_cloud(300, 0), _cloud(3000, 1), _cloud(1200, 2)]
    alone = [model.predict(c, torch.zeros(c.shape[0], dtype=torch.long), 1) for c in clouds]
    radii_alone = [model.cloud_radii(c, torch.zeros(c.shape[0], dtype=torch.long), 1)[0] for c in clouds]
    assert len(set(radii_alone)) == 3  # the densities really differ
    for order in ([0, 1, 2], [2, 0, 1], [1, 2]):
        points = torch.cat([clouds[i] for i in order])
        batch = torch.cat([torch.full((clouds[i].shape[0],), j) for j, i in enumerate(order)])
        assert model.cloud_radii(points, batch, len(order)) == [radii_alone[i] for i in order]
        together = model.predict(points, batch, len(order))
        for j, i in enumerate(order):
            part = batch == j
            torch.testing.assert_close(together.anomaly_map[part], alone[i].anomaly_map, atol=1e-5, rtol=0)
            torch.testing.assert_close(together.pred_score[j], alone[i].pred_score[0], atol=1e-5, rtol=0)


def test_organized_predictions_are_identical_alone_and_in_a_batch(backbone: FrozenCLIP) -> None:
    model = make_model(backbone, image_size=64)
    points, index, _, _ = dented_dome_scan()
    sparse = torch.arange(points.shape[0]) % 3 == 0  # another density on the same grid
    a = model.predict(points, torch.zeros(points.shape[0], dtype=torch.long), 1, grid_index=index,
                      grid_shape=(SIZE, SIZE))
    b = model.predict(points[sparse], torch.zeros(int(sparse.sum()), dtype=torch.long), 1, grid_index=index[sparse],
                      grid_shape=(SIZE, SIZE))
    both = model.predict(torch.cat([points, points[sparse]]),
                         torch.cat([torch.zeros(points.shape[0]), torch.ones(int(sparse.sum()))]).long(), 2,
                         grid_index=torch.cat([index, index[sparse]]), grid_shape=torch.tensor([[SIZE, SIZE]] * 2))
    n = points.shape[0]
    torch.testing.assert_close(both.anomaly_map[:n], a.anomaly_map, atol=1e-5, rtol=0)
    torch.testing.assert_close(both.anomaly_map[n:], b.anomaly_map, atol=1e-5, rtol=0)
    torch.testing.assert_close(both.pred_score, torch.cat([a.pred_score, b.pred_score]), atol=1e-5, rtol=0)
