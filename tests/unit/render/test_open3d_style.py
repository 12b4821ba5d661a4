"""The Open3D-style camera and points of the renderer: per-view framing, square points, a render
window resized to the output, the nearest-centre visibility and Open3D's lighting; each checked
against a hand computation or a brute-force reference (Open3D itself: tests/integration/test_open3d_parity.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from anomalib_3d.render import (
    EYECANDIES_SENSOR_TO_OBJECT,
    footprint_offsets,
    open3d_phong,
    rasterize_points,
    render_points,
    rig_from_rotations,
    rotation_matrices,
    rotation_rig,
)
from anomalib_3d.render.zbuffer import square_side


def _box(sides: tuple[float, float, float], count: int = 4000, seed: int = 0) -> torch.Tensor:
    """Points filling an axis-aligned box with the given sides (corners included, so the box is exact)."""
    generator = torch.Generator().manual_seed(seed)
    points = (torch.rand(count, 3, generator=generator) - 0.5) * torch.tensor(sides)
    corners = torch.tensor([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    return torch.cat([points, corners * torch.tensor(sides)]) + torch.tensor([3.0, -2.0, 5.0])


# ---------------------------------------------------------------------------------------------
# square points: Open3D's coverage rule, measured on Open3D (pixel centres inside the square)


@pytest.mark.parametrize(("side", "x", "expected"), [(6, 9.143, (6, 11)), (7, 9.143, (6, 12)), (12, 9.143, (3, 14)),
                                                     (6, 9.7, (7, 12)), (1, 9.9, (9, 9))])
def test_square_covers_the_pixels_whose_centre_lies_inside(side: int, x: float, expected: tuple[int, int]) -> None:
    """A point at window coordinate ``x`` covers every pixel ``c`` with ``c + 0.5`` in
    ``[x - side / 2, x + side / 2]`` (what Open3D drew for the first three rows, measured)."""
    rig = rotation_rig([0.0], image_size=32)
    # Orthographic, unnormalised: x_px = 16 + scale * p, so p places the point at x.
    scale = rig.ortho_scale_px
    point = torch.tensor([[(x - 16.0) / scale, (16.0 - 20.5) / scale, 0.0]])
    out = rasterize_points(point, rig=rig, normalize=False, point_radius_px=side / 2, point_shape="square")
    covered = (out.pixel_to_point[0, 0] == 0).nonzero()
    columns, rows = covered[:, 1], covered[:, 0]
    hand = [c for c in range(32) if x - side / 2 <= c + 0.5 <= x + side / 2]
    assert (int(columns.min()), int(columns.max())) == expected == (hand[0], hand[-1])
    assert len(covered) == side * side
    assert int(rows.max() - rows.min()) + 1 == side


def test_square_sides_must_be_whole_pixels() -> None:
    assert square_side(3.5) == 7 and footprint_offsets(3.0, "square").shape == (36, 2)
    with pytest.raises(ValueError, match="integer side"):
        rasterize_points(torch.zeros(1, 3), rig=rotation_rig([0.0], image_size=16), point_radius_px=1.25,
                         point_shape="square")
    with pytest.raises(ValueError, match="point_shape"):
        rasterize_points(torch.zeros(1, 3), rig=rotation_rig([0.0], image_size=16), point_shape="star")


def test_square_z_buffer_equals_brute_force_with_mixed_sizes() -> None:
    """Two clouds in one batch, squares of 4 and 5 px: owners equal a loop over points and pixels."""
    generator = torch.Generator().manual_seed(3)
    points = torch.rand(120, 3, generator=generator) * 2 - 1
    batch = torch.cat([torch.zeros(60, dtype=torch.long), torch.ones(60, dtype=torch.long)])
    rig = rig_from_rotations([("x", 0.0), ("y", 40.0)], image_size=(20, 24))
    out = rasterize_points(points, batch, rig, point_radius_px=[2.0, 2.5], point_shape="square")
    from anomalib_3d.render import fit_unit_sphere
    from anomalib_3d.render.zbuffer import _project

    normalised, _, _ = fit_unit_sphere(points, batch, 2)
    x, y, depth = _project(normalised, rig)
    owner = np.full((2, 2, 20, 24), -1)
    best = np.full((2, 2, 20, 24), np.inf)
    for n in range(120):
        side = 4 if n < 60 else 5
        for v in range(2):
            xs, ys = float(x[n, v]), float(y[n, v])
            if not (0 <= xs < 24 and 0 <= ys < 20):
                continue
            for row in range(20):
                for col in range(24):
                    if xs - side / 2 <= col + 0.5 <= xs + side / 2 and ys - side / 2 <= row + 0.5 <= ys + side / 2:
                        cell = (int(batch[n]), v, row, col)
                        if float(depth[n, v]) < best[cell]:
                            best[cell], owner[cell] = float(depth[n, v]), n
    np.testing.assert_array_equal(out.pixel_to_point.numpy(), owner)


# ---------------------------------------------------------------------------------------------
# Open3D's camera refitted to every view


def test_view_box_framing_puts_the_longest_side_at_one_over_two_zoom() -> None:
    """A flat 4 x 2 x 0.5 box seen straight on: Open3D's camera looks at its centre from
    ``d = 0.7 * 4 / tan 30`` away, so its front face (0.25 nearer) spans ``4 / (1.4 * 4) * d / (d - 0.25)``
    of the frame, wherever the box is and whatever its scale."""
    points = _box((4.0, 2.0, 0.5))
    rig = rotation_rig([0.0], image_size=300).like_open3d(window_size=None)
    out = rasterize_points(points, rig=rig, point_radius_px=0)
    distance = 0.7 * 4.0 / math.tan(math.radians(30))
    focal = 150.0 / math.tan(math.radians(30))
    half_width = focal * 2.0 / (distance - 0.25)
    assert abs(2 * half_width / 300 - 1 / 1.4 * distance / (distance - 0.25)) < 1e-9
    covered = (out.pixel_to_point[0, 0] >= 0).nonzero()
    assert int(covered[:, 1].min()) == math.floor(150 - half_width)
    assert int(covered[:, 1].max()) == math.floor(150 + half_width)
    half_height = focal * 1.0 / (distance - 0.25)
    assert int(covered[:, 0].min()) == math.floor(150 - half_height)
    assert int(covered[:, 0].max()) == math.floor(150 + half_height)


def test_recede_backs_off_just_enough_steps() -> None:
    """A cube's near corners leave Open3D's default frame in perspective. The camera backs off in
    steps of 1 input unit (the cube's side is 20) until they are inside: by hand, the corner at
    (-h, -h, h) (normalised half-side h) needs ``depth >= f h / (W / 2 - 1/2)``."""
    cube = torch.tensor([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])
    cube = torch.cat([cube, torch.rand(200, 3) * 2 - 1]) * 10.0
    step = 1.0
    rig = rotation_rig([0.0], image_size=64).like_open3d(window_size=None, recede_step=step)
    scale = 10.0 * math.sqrt(3.0)  # the unit-sphere fit: farthest corner from the centre
    half = 1.0 / math.sqrt(3.0)  # the normalised cube's half-side
    focal = 32.0 / math.tan(math.radians(30))
    start = 0.7 * 2.0 * half / math.tan(math.radians(30))
    needed = focal * half / 31.5 + half
    steps = math.ceil((needed - start) / (step / scale))
    assert steps > 1
    out = rasterize_points(cube, rig=rig, point_radius_px=0)
    from anomalib_3d.render import fit_unit_sphere
    from anomalib_3d.render.zbuffer import view_boxes

    normalised, _, fitted = fit_unit_sphere(cube, torch.zeros(len(cube), dtype=torch.long), 1)
    assert abs(float(fitted) - scale) < 1e-4
    distance = float(view_boxes(normalised, rig, None, 1, fitted).distance)
    assert abs(distance - (start + steps * step / scale)) < 1e-5
    assert bool(((out.point_uv >= 0) & (out.point_uv < 64)).all())
    # One step fewer leaves the corner (-1, -1, 1) outside [0, W) in OpenCV coordinates.
    depth = start + (steps - 1) * step / scale - half
    assert focal * -half / depth + 31.5 < 0


# ---------------------------------------------------------------------------------------------
# window -> output, nearest-centre visibility


def test_window_render_reads_the_window_and_resizes_images_antialiased() -> None:
    points = _box((2.0, 1.0, 0.2), count=3000)
    small = rotation_rig([0.0, 0.7], image_size=48).like_open3d(window_size=144)
    out = render_points(points, rig=small, point_radius_px=1.5, point_shape="square", shading=False,
                        base_color=(0.2, 0.2, 0.2))
    assert out.images.shape == (1, 2, 3, 48, 48) and out.pixel_to_point.shape == (1, 2, 48, 48)
    full = render_points(points, rig=rotation_rig([0.0, 0.7], image_size=144).like_open3d(window_size=None),
                         point_radius_px=1.5, point_shape="square", shading=False, base_color=(0.2, 0.2, 0.2))
    expected = F.interpolate(full.images[0], size=(48, 48), mode="bicubic", antialias=True).clamp(0, 1)
    torch.testing.assert_close(out.images[0], expected)
    # Output pixel (i, j) reads window pixel (3 i + 1, 3 j + 1): the one under its centre.
    torch.testing.assert_close(out.pixel_to_point[0], full.pixel_to_point[0, :, 1::3, 1::3])
    # The authors' correspondence: floor((x - 1/2) * 48 / 144) of the window coordinate x, clipped.
    from anomalib_3d.render import fit_unit_sphere
    from anomalib_3d.render.zbuffer import _project

    normalised, _, scale = fit_unit_sphere(points, torch.zeros(len(points), dtype=torch.long), 1)
    x, y, _ = _project(normalised, small, None, 1, scale)
    expected_uv = torch.stack([((x - 0.5) / 3).floor(), ((y - 0.5) / 3).floor()], -1).clamp(0, 47).long()
    assert torch.equal(out.point_uv, expected_uv)


def test_nearest_visibility_keeps_only_the_nearest_centre_per_output_pixel() -> None:
    generator = torch.Generator().manual_seed(7)
    points = torch.rand(3000, 3, generator=generator)
    rig = rotation_rig([0.0, 1.0], image_size=24).like_open3d(window_size=72)
    out = rasterize_points(points, rig=rig, point_radius_px=2.0, point_shape="square", visibility="nearest")
    for view in range(2):
        uv = out.point_uv[:, view].numpy()
        depth = out.point_depth[:, view].numpy()
        expected = np.zeros(len(points), dtype=bool)
        for pixel in {tuple(p) for p in uv}:
            members = np.flatnonzero((uv == pixel).all(1))
            expected[members[np.argmin(depth[members])]] = True  # argmin: lowest index on ties
        np.testing.assert_array_equal(out.visible[:, view].numpy(), expected)


def test_open3d_lighting_by_hand() -> None:
    """One point facing the camera on the viewing axis of a view box: both front lights shine
    straight on it (diffuse 2 x 0.66) and reflect straight into the eye (specular 2 x 0.2); the
    lights behind contribute nothing."""
    points = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0]])
    normals = torch.tensor([[0.0, 0.0, 1.0]] * 5)
    out = rasterize_points(points, rig=rotation_rig([0.0], image_size=32).like_open3d(window_size=None))
    diffuse, specular = open3d_phong(normals, out)
    assert abs(float(diffuse[0, 0]) - 1.32) < 1e-5 and abs(float(specular[0, 0]) - 0.4) < 1e-5
    # A normal turned away is turned back (Open3D's normals have no consistent sign).
    flipped, _ = open3d_phong(-normals, out)
    torch.testing.assert_close(flipped, diffuse)
    # Off-axis points see the light at an angle: less diffuse light, the highlight (shininess 100) all but gone.
    assert float(diffuse[1, 0]) < 1.32 and float(specular[1, 0]) < 0.01


def test_eyecandies_turn_is_three_quarters_of_pi_about_x() -> None:
    torch.testing.assert_close(EYECANDIES_SENSOR_TO_OBJECT, rotation_matrices([0.75 * math.pi], "x")[0])
    assert not torch.allclose(EYECANDIES_SENSOR_TO_OBJECT, rotation_matrices([math.pi], "x")[0])
