"""Camera rigs: PointAD's view angles, rotation matrices, per-cloud normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from anomalib_3d.render import CameraRig, fit_unit_sphere, pointad_angles, pointad_rig, rotation_matrices, rotation_rig

PI = math.pi

# Transcribed from the paper's Table 7 (Appendix B); the 11-view row with its typo fixed
# (printed "-1/2, -1/2, 1/6" where the evenly spaced set needs "-1/2, -1/3, -1/6").
PAPER_TABLE_7 = {
    1: [0.0],
    3: [-PI / 2, 0.0, PI / 2],
    5: [-2 * PI / 3, -PI / 3, 0.0, PI / 3, 2 * PI / 3],
    7: [-3 * PI / 4, -PI / 2, -PI / 4, 0.0, PI / 4, PI / 2, 3 * PI / 4],
    9: [-4 * PI / 5, -3 * PI / 5, -2 * PI / 5, -PI / 5, 0.0, PI / 5, 2 * PI / 5, 3 * PI / 5, 4 * PI / 5],
    11: [-5 * PI / 6, -2 * PI / 3, -PI / 2, -PI / 3, -PI / 6, 0.0, PI / 6, PI / 3, PI / 2, 2 * PI / 3, 5 * PI / 6],
}


@pytest.mark.parametrize("num_views", sorted(PAPER_TABLE_7))
def test_pointad_angles_match_paper_table_7(num_views: int) -> None:
    assert pointad_angles(num_views) == pytest.approx(PAPER_TABLE_7[num_views], abs=1e-12)


def test_pointad_rig_default_is_nine_views_about_x_at_336() -> None:
    rig = pointad_rig()
    assert rig.num_views == 9
    assert rig.axis == "x"
    assert rig.image_size == (336, 336)
    expected = torch.tensor(Rotation.from_euler("x", [[a] for a in PAPER_TABLE_7[9]]).as_matrix(), dtype=torch.float32)
    torch.testing.assert_close(rig.rotations, expected, atol=1e-6, rtol=0)
    assert rig.captions()[0] == "X -4π/5" and rig.captions()[4] == "X 0"


@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_rotation_matrices_match_scipy(axis: str) -> None:
    angles = [-2.0, -0.3, 0.0, 1.1, 3.0]
    expected = torch.tensor(Rotation.from_euler(axis, [[a] for a in angles]).as_matrix(), dtype=torch.float32)
    torch.testing.assert_close(rotation_matrices(angles, axis), expected, atol=1e-6, rtol=0)


def test_rotation_rig_keeps_settings() -> None:
    rig = rotation_rig([0.0, 1.0], axis="y", projection="pinhole", image_size=(64, 80), fov_deg=45.0, margin=0.2)
    assert rig.num_views == 2 and rig.projection == "pinhole" and rig.image_size == (64, 80)
    assert rig.fov_deg == 45.0 and rig.margin == 0.2 and rig.angles == (0.0, 1.0)


def test_pinhole_camera_distance_fits_unit_sphere_with_margin() -> None:
    rig = rotation_rig([0.0], projection="pinhole", image_size=100, fov_deg=60.0, margin=0.1)
    # The silhouette of the unit sphere seen from distance d has half-angle asin(1/d); its image
    # radius must be (1 - margin) of the half image.
    silhouette_px = rig.focal_px * math.tan(math.asin(1.0 / rig.camera_distance))
    assert silhouette_px == pytest.approx(0.9 * 50.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rotations": torch.eye(3)}, "V, 3, 3"),
        ({"rotations": torch.zeros(0, 3, 3)}, "at least one view"),
        ({"rotations": torch.full((1, 3, 3), float("nan"))}, "NaN"),
        ({"rotations": torch.eye(3)[None], "projection": "fisheye"}, "projection"),
        ({"rotations": torch.eye(3)[None], "margin": 1.0}, "margin"),
        ({"rotations": torch.eye(3)[None], "fov_deg": 0.0}, "fov_deg"),
        ({"rotations": torch.eye(3)[None], "image_size": (0, 5)}, "positive"),
    ],
)
def test_bad_rig_raises(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CameraRig(**kwargs)


def test_bad_view_counts_raise() -> None:
    with pytest.raises(ValueError, match="positive integer"):
        pointad_angles(0)
    with pytest.raises(ValueError, match="axis"):
        rotation_matrices([0.0], axis="w")


def test_fit_unit_sphere_fits_each_cloud_in_unit_sphere() -> None:
    generator = torch.Generator().manual_seed(0)
    first = torch.rand(50, 3, generator=generator) * 10 + 100
    second = torch.rand(30, 3, generator=generator) * 0.01 - 5
    points = torch.cat([first, second])
    batch = torch.cat([torch.zeros(50, dtype=torch.long), torch.ones(30, dtype=torch.long)])
    normalised, centre, scale = fit_unit_sphere(points, batch, 2)
    for cloud, raw in enumerate((first, second)):
        mine = normalised[batch == cloud]
        # Independent: bounding-box centre and max radius computed directly.
        bbox_centre = (raw.min(0).values + raw.max(0).values) / 2
        torch.testing.assert_close(centre[cloud], bbox_centre)
        assert mine.norm(dim=1).max().item() == pytest.approx(1.0, abs=1e-5)
        torch.testing.assert_close(mine * scale[cloud] + centre[cloud], raw, atol=1e-4, rtol=0)
    # The single-cloud fast path agrees with the general one.
    alone, centre_alone, scale_alone = fit_unit_sphere(first, torch.zeros(50, dtype=torch.long), 1)
    torch.testing.assert_close(alone, normalised[:50])
    torch.testing.assert_close(scale_alone, scale[:1])


def test_rig_from_rotations_mixes_axes_pairs_and_matrices() -> None:
    from anomalib_3d.render import rig_from_rotations

    matrix = Rotation.from_euler("zyx", [10, -20, 30], degrees=True).as_matrix()
    rig = rig_from_rotations([("x", -45), ("Y", 30), [("x", 180), ("z", 15)], matrix.tolist()], image_size=32)
    expected = [
        Rotation.from_euler("x", -45, degrees=True).as_matrix(),
        Rotation.from_euler("y", 30, degrees=True).as_matrix(),
        # pairs compose left to right: X 180 acts first, then Z 15
        Rotation.from_euler("z", 15, degrees=True).as_matrix() @ Rotation.from_euler("x", 180, degrees=True).as_matrix(),
        matrix,
    ]
    torch.testing.assert_close(rig.rotations, torch.tensor(np.stack(expected), dtype=torch.float32), atol=1e-6, rtol=0)
    assert rig.captions()[:2] == ["X -45°", "Y 30°"]
    with pytest.raises(ValueError, match="not a rotation"):
        rig_from_rotations([[[2.0, 0, 0], [0, 1, 0], [0, 0, 1]]])
    with pytest.raises(ValueError, match="axis"):
        rig_from_rotations([("w", 10)])


def test_presets_are_the_authors_rigs() -> None:
    from anomalib_3d.render import rig_preset

    mvtec = rig_preset("pointad_mvtec")
    expected = [Rotation.from_euler("x", a, degrees=True).as_matrix() for a in (-45, -15, 0, 15, 45)]
    expected += [Rotation.from_euler("y", a, degrees=True).as_matrix() for a in (-30, -15, 15, 30)]
    torch.testing.assert_close(mvtec.rotations, torch.tensor(np.stack(expected), dtype=torch.float32), atol=1e-6, rtol=0)
    real3d = rig_preset("pointad_real3d")
    torch.testing.assert_close(real3d.rotations, pointad_rig(9).rotations, atol=1e-6, rtol=0)  # Table 7 = k * 36°
    with pytest.raises(ValueError, match="pointad_mvtec"):
        rig_preset("nope")


def test_sensor_to_object_flip_shows_the_sensor_side_upright() -> None:
    """A sensor-frame point nearer to the sensor (smaller z) must be nearer to our camera (+Z),
    and a point higher in the sensor image (smaller y, y down) higher in ours (+Y up)."""
    from anomalib_3d.render import SENSOR_TO_OBJECT, rig_preset

    rig = rig_preset("pointad_real3d").with_pre_rotation(SENSOR_TO_OBJECT, "flip X")
    front = rig.rotations[4]  # the 0° view
    near, far = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 2.0])
    assert float((front @ near)[2]) > float((front @ far)[2])
    top, bottom = torch.tensor([0.0, -1.0, 1.0]), torch.tensor([0.0, 1.0, 1.0])
    assert float((front @ top)[1]) > float((front @ bottom)[1])
    expected = Rotation.from_euler("x", 36, degrees=True).as_matrix() @ np.diag([1.0, -1.0, -1.0])
    torch.testing.assert_close(rig.rotations[5], torch.tensor(expected, dtype=torch.float32), atol=1e-6, rtol=0)
    assert rig.captions()[5] == "X 36° ∘ flip X"
