"""Z-buffered splatting: projection, occlusion, masks, batching, shading, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from doubles.clouds import random_cube_cloud

from anomalib_3d.data.errors import EmptyPointCloudError, GroundTruthMismatchError, InvalidPointsError
from anomalib_3d.render import (
    disc_offsets,
    pointad_rig,
    rasterize_points,
    render_mask,
    render_mask_like,
    render_points,
    rotation_rig,
)


def _brute_force_zbuffer(uv: np.ndarray, depth: np.ndarray, batch: np.ndarray, num_clouds: int, hw, radius: float):
    """Reference z-buffer: Python loops over points and disc pixels, nearest (depth, index) wins."""
    height, width = hw
    num_points, num_views = depth.shape
    best_depth = np.full((num_clouds, num_views, height, width), np.inf)
    owner = np.full((num_clouds, num_views, height, width), -1, dtype=np.int64)
    reach = int(math.floor(radius))
    steps = range(-reach, reach + 1)
    disc = [(dx, dy) for dy in steps for dx in steps if dx * dx + dy * dy <= radius**2]
    for n in range(num_points):
        for v in range(num_views):
            u0, v0 = uv[n, v]
            if not (0 <= u0 < width and 0 <= v0 < height):
                continue
            for dx, dy in disc:
                col, row = u0 + dx, v0 + dy
                if 0 <= col < width and 0 <= row < height:
                    cell = (batch[n], v, row, col)
                    if (depth[n, v], n) < (best_depth[cell], owner[cell] if owner[cell] >= 0 else np.inf):
                        best_depth[cell], owner[cell] = depth[n, v], n
    return owner, best_depth


# ---------------------------------------------------------------------------------------------
# projection of a lone point, hand computed


def test_lone_point_orthographic_lands_on_hand_computed_pixel() -> None:
    rig = rotation_rig([0.0, math.pi / 2], image_size=100, margin=0.1)
    point = torch.tensor([[0.5, 0.25, 0.3]])
    out = rasterize_points(point, rig=rig, normalize=False, point_radius_px=0)
    # 45 px per unit (0.9 * 50); view 0: u = floor(50 + 22.5), v = floor(50 - 11.25).
    # view 1 (90 deg about X): (x, y, z) -> (x, -z, y), so v = floor(50 + 0.3 * 45) = 63.
    assert out.point_uv[0].tolist() == [[72, 38], [72, 63]]
    assert out.pixel_to_point[0, 0, 38, 72] == 0 and out.pixel_to_point[0, 1, 63, 72] == 0
    assert int((out.pixel_to_point >= 0).sum()) == 2  # radius 0: exactly one pixel per view
    distance = rig.camera_distance
    assert out.depth[0, 0, 38, 72].item() == pytest.approx(distance - 0.3)
    assert out.depth[0, 1, 63, 72].item() == pytest.approx(distance - 0.25)
    assert out.visible.all()


def test_lone_point_pinhole_lands_on_hand_computed_pixel() -> None:
    rig = rotation_rig([0.0], projection="pinhole", image_size=(80, 120), fov_deg=60.0, margin=0.1)
    point = torch.tensor([[0.5, 0.25, 0.2]])
    out = rasterize_points(point, rig=rig, normalize=False, point_radius_px=0)
    focal = 40.0 / math.tan(math.radians(30.0))  # shorter side is 80 px
    distance = 1.0 / math.sin(math.atan(0.9 * math.tan(math.radians(30.0))))
    depth = distance - 0.2
    u = math.floor(60.0 + focal * 0.5 / depth)
    v = math.floor(40.0 - focal * 0.25 / depth)
    assert out.point_uv[0, 0].tolist() == [u, v]
    assert out.pixel_to_point[0, 0, v, u] == 0
    assert out.depth[0, 0, v, u].item() == pytest.approx(depth)


def test_normalised_lone_point_lands_in_image_centre() -> None:
    out = rasterize_points(torch.tensor([[3.0, -7.0, 2.0]]), rig=pointad_rig(3, image_size=64))
    assert out.point_uv[0].tolist() == [[32, 32]] * 3


def test_disc_covers_exactly_the_pixels_within_radius() -> None:
    offsets = disc_offsets(2.0)
    expected = {(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3) if dx * dx + dy * dy <= 4}
    assert {tuple(o) for o in offsets.tolist()} == expected and len(expected) == 13
    out = rasterize_points(torch.zeros(1, 3), rig=rotation_rig([0.0], image_size=32), point_radius_px=2.0)
    covered = (out.pixel_to_point[0, 0] == 0).nonzero()
    assert {(c - 16, r - 16) for r, c in covered.tolist()} == expected


# ---------------------------------------------------------------------------------------------
# occlusion and the reference z-buffer


def test_point_behind_another_is_hidden() -> None:
    rig = rotation_rig([0.0], image_size=64)
    front_then_back = torch.tensor([[0.1, 0.1, 0.5], [0.1, 0.1, -0.5]])  # same (x, y), back is deeper
    out = rasterize_points(front_then_back, rig=rig, normalize=False, point_radius_px=1.5)
    assert out.point_uv[0].tolist() == out.point_uv[1].tolist()
    assert out.visible[:, 0].tolist() == [True, False]
    u, v = out.point_uv[0, 0].tolist()
    assert out.pixel_to_point[0, 0, v, u] == 0
    assert not (out.pixel_to_point == 1).any()  # the back disc is entirely covered
    # Seen from behind (rotate by pi about X) the roles swap.
    flipped = rasterize_points(front_then_back, rig=rotation_rig([math.pi], image_size=64), normalize=False)
    assert flipped.visible[:, 0].tolist() == [False, True]


def test_depth_tolerance_rule() -> None:
    rig = rotation_rig([0.0], image_size=64)
    close_pair = torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 0.49]])  # 0.01 apart along the view axis
    loose = rasterize_points(close_pair, rig=rig, normalize=False, depth_tolerance=0.02)
    strict = rasterize_points(close_pair, rig=rig, normalize=False, depth_tolerance=0.0)
    assert loose.visible[:, 0].tolist() == [True, True]
    assert strict.visible[:, 0].tolist() == [True, False]


@pytest.mark.parametrize("projection", ["orthographic", "pinhole"])
@pytest.mark.parametrize("radius", [0.0, 1.0, 1.5, 2.5])
def test_zbuffer_matches_brute_force(projection: str, radius: float) -> None:
    points = torch.cat([random_cube_cloud(150, 1), random_cube_cloud(90, 2) * 0.3])
    batch = torch.cat([torch.zeros(150, dtype=torch.long), torch.ones(90, dtype=torch.long)])
    rig = rotation_rig([-1.0, 0.0, 2.0], projection=projection, image_size=(24, 30))
    out = rasterize_points(points, batch, rig, point_radius_px=radius, depth_tolerance=0.0)
    owner, best_depth = _brute_force_zbuffer(
        out.point_uv.numpy(), out.point_depth.numpy().astype(np.float64), batch.numpy(), 2, (24, 30), radius
    )
    np.testing.assert_array_equal(out.pixel_to_point.numpy(), owner)
    np.testing.assert_array_equal(out.depth.numpy(), best_depth.astype(np.float32))
    # With zero tolerance a point is visible iff it owns its own centre pixel.
    b, u, v = batch.numpy(), out.point_uv[..., 0].numpy(), out.point_uv[..., 1].numpy()
    views = np.arange(3)[None, :]
    np.testing.assert_array_equal(out.visible.numpy(), owner[b[:, None], views, v, u] == np.arange(240)[:, None])


def test_projection_matches_float64_reference() -> None:
    points = random_cube_cloud(500, 3)
    rig = pointad_rig(9, image_size=336)
    out = rasterize_points(points, rig=rig)
    lows, highs = points.double().min(0).values, points.double().max(0).values
    centred = points.double() - (lows + highs) / 2
    normalised = centred / centred.norm(dim=1).max()
    cam = torch.einsum("vij,nj->nvi", rig.rotations.double(), normalised)
    x = 168 + 0.9 * 168 * cam[..., 0]
    y = 168 - 0.9 * 168 * cam[..., 1]
    # float32 rounding may move a point across a pixel border only when it sits on one.
    safe = ((x - x.round()).abs() > 1e-3) & ((y - y.round()).abs() > 1e-3)
    assert safe.float().mean() > 0.98
    assert torch.equal(out.point_uv[..., 0][safe], x.floor().long()[safe])
    assert torch.equal(out.point_uv[..., 1][safe], y.floor().long()[safe])


# ---------------------------------------------------------------------------------------------
# images, values, masks, batching


def test_shapes_and_dtypes() -> None:
    points = random_cube_cloud(200, 4)
    batch = torch.cat([torch.zeros(120, dtype=torch.long), torch.ones(80, dtype=torch.long)])
    out = render_points(points, batch, pointad_rig(5, image_size=(40, 48)), normals=points, values=torch.rand(200, 4))
    assert out.images.shape == (2, 5, 3, 40, 48) and out.images.dtype == torch.float32
    assert out.depth.shape == (2, 5, 40, 48) and out.depth.dtype == torch.float32
    assert out.pixel_to_point.shape == (2, 5, 40, 48) and out.pixel_to_point.dtype == torch.long
    assert out.point_uv.shape == (200, 5, 2) and out.point_uv.dtype == torch.long
    assert out.visible.shape == (200, 5) and out.visible.dtype == torch.bool
    assert out.values.shape == (2, 5, 4, 40, 48)
    assert 0.0 <= out.images.min() and out.images.max() <= 1.0
    background = out.pixel_to_point < 0
    assert torch.isinf(out.depth[background]).all() and torch.isfinite(out.depth[~background]).all()
    assert (out.images.permute(0, 1, 3, 4, 2)[background] == 1.0).all()  # white background
    scalar = render_points(points, rig=pointad_rig(1, image_size=8), shading=False, values=torch.rand(200))
    assert scalar.values.shape == (1, 1, 8, 8)


def test_values_are_splatted_with_the_same_zbuffer() -> None:
    points = random_cube_cloud(300, 5)
    values = torch.rand(300, 2)
    out = render_points(points, rig=pointad_rig(3, image_size=32), shading=False, values=values, values_background=-1.0)
    hit = out.pixel_to_point >= 0
    expected = values[out.pixel_to_point.clamp(min=0)].permute(0, 1, 4, 2, 3)
    assert torch.equal(out.values.permute(0, 1, 3, 4, 2)[hit], expected.permute(0, 1, 3, 4, 2)[hit])
    assert (out.values.permute(0, 1, 3, 4, 2)[~hit] == -1.0).all()


def test_mask_aligns_with_image() -> None:
    points = random_cube_cloud(400, 6)
    labels = torch.zeros(400, dtype=torch.long)
    labels[:40] = 1
    colors = torch.full((400, 3), 0.5)
    colors[:40] = torch.tensor([1.0, 0.0, 0.0])  # anomalous points red
    rig = pointad_rig(9, image_size=48)
    out = render_points(points, rig=rig, colors=colors, shading=False, point_radius_px=1.5)
    mask = render_mask(labels, points, rig=rig, point_radius_px=1.5)
    assert mask.shape == (1, 9, 48, 48) and set(mask.unique().tolist()) == {0.0, 1.0}
    red = (out.images[:, :, 0] == 1.0) & (out.images[:, :, 1] == 0.0)
    assert torch.equal(mask == 1.0, red)
    assert torch.equal(render_mask_like(labels.bool(), out), mask)
    # The anomalous point's own centre pixel is white wherever it is visible.
    for view in range(9):
        for n in range(40):
            col, row = out.point_uv[n, view].tolist()
            if out.visible[n, view] and out.pixel_to_point[0, view, row, col] == n:
                assert mask[0, view, row, col] == 1.0


def test_batched_render_equals_each_cloud_alone() -> None:
    first, second = random_cube_cloud(250, 7) * 5 + 3, random_cube_cloud(120, 8)
    normals = torch.nn.functional.normalize(random_cube_cloud(370, 9), dim=1)
    points = torch.cat([first, second])
    batch = torch.cat([torch.zeros(250, dtype=torch.long), torch.ones(120, dtype=torch.long)])
    rig = pointad_rig(5, image_size=40)
    together = render_points(points, batch, rig, normals=normals)
    alone = [
        render_points(first, None, rig, normals=normals[:250]),
        render_points(second, None, rig, normals=normals[250:]),
    ]
    for cloud, single in enumerate(alone):
        assert torch.equal(together.images[cloud], single.images[0])
        assert torch.equal(together.depth[cloud], single.depth[0])
        shift = 250 * cloud
        expected_owner = torch.where(single.pixel_to_point[0] >= 0, single.pixel_to_point[0] + shift, -1)
        assert torch.equal(together.pixel_to_point[cloud], expected_owner)
    assert torch.equal(together.visible, torch.cat([alone[0].visible, alone[1].visible]))
    assert torch.equal(together.point_uv, torch.cat([alone[0].point_uv, alone[1].point_uv]))


def test_trailing_empty_cloud_renders_blank() -> None:
    batch = torch.zeros(20, dtype=torch.long)
    out = render_points(random_cube_cloud(20, 10), batch, pointad_rig(1, image_size=16), num_clouds=2, shading=False)
    assert out.images.shape[0] == 2 and (out.images[1] == 1.0).all() and (out.pixel_to_point[1] == -1).all()


# ---------------------------------------------------------------------------------------------
# shading


def test_lambert_shading_flips_normals_towards_camera() -> None:
    rig = rotation_rig([0.0], image_size=16)
    point = torch.zeros(1, 3)
    kwargs = {"rig": rig, "light_dir": (0.0, 0.0, 1.0), "ambient": 0.25, "base_color": (0.8, 0.8, 0.8)}
    facing = render_points(point, normals=torch.tensor([[0.0, 0.0, 1.0]]), **kwargs).images[0, 0, :, 8, 8]
    away = render_points(point, normals=torch.tensor([[0.0, 0.0, -1.0]]), **kwargs).images[0, 0, :, 8, 8]
    grazing = render_points(point, normals=torch.tensor([[1.0, 0.0, 0.0]]), **kwargs).images[0, 0, :, 8, 8]
    tilted = render_points(point, normals=torch.tensor([[0.0, 0.6, -0.8]]), **kwargs).images[0, 0, :, 8, 8]
    torch.testing.assert_close(facing, torch.full((3,), 0.8))  # full light
    torch.testing.assert_close(away, facing)  # flipped to face the camera
    torch.testing.assert_close(grazing, torch.full((3,), 0.8 * 0.25))  # ambient only
    torch.testing.assert_close(tilted, torch.full((3,), 0.8 * (0.25 + 0.75 * 0.8)))
    # Off-axis light: the flipped normal (0, -0.6, 0.8) against l = (0, 1, 1) / sqrt(2).
    oblique = render_points(point, normals=torch.tensor([[0.0, 0.6, -0.8]]), **{**kwargs, "light_dir": (0.0, 1.0, 1.0)})
    lambert = (-0.6 + 0.8) / math.sqrt(2.0)
    torch.testing.assert_close(oblique.images[0, 0, :, 8, 8], torch.full((3,), 0.8 * (0.25 + 0.75 * lambert)))
    # Light from behind the surface leaves only the ambient term.
    behind = render_points(point, normals=torch.tensor([[0.0, 0.0, 1.0]]), **{**kwargs, "light_dir": (0.0, 0.0, -1.0)})
    torch.testing.assert_close(behind.images[0, 0, :, 8, 8], torch.full((3,), 0.8 * 0.25))


def test_pinhole_shading_uses_per_point_view_direction() -> None:
    # A point off the optical axis whose normal faces +Z (towards an orthographic camera) but
    # away from the pinhole's centre (0, 0, d): n . (c - p) = -0.95 * 0.9 + 0.31 * d < 0.
    point = torch.tensor([[0.9, 0.0, 0.0]])
    normal = torch.nn.functional.normalize(torch.tensor([[0.95, 0.0, 0.31]]), dim=1)
    kwargs = {"normals": normal, "light_dir": (1.0, 0.0, 0.0), "ambient": 0.2, "base_color": (1.0,) * 3}
    kwargs["normalize"] = False
    ortho = render_points(point, rig=rotation_rig([0.0], image_size=32), **kwargs)
    pinhole = render_points(point, rig=rotation_rig([0.0], projection="pinhole", image_size=32), **kwargs)
    distance = pinhole.rig.camera_distance
    assert float(normal[0, 0] * -0.9 + normal[0, 2] * distance) < 0  # the premise
    u, v = ortho.point_uv[0, 0].tolist()
    assert ortho.images[0, 0, 0, v, u].item() == pytest.approx(0.2 + 0.8 * float(normal[0, 0]))  # lit as is
    u, v = pinhole.point_uv[0, 0].tolist()
    assert pinhole.images[0, 0, 0, v, u].item() == pytest.approx(0.2)  # flipped: faces away from the light


def test_estimated_normals_when_none_given() -> None:
    ops = pytest.importorskip("anomalib_3d.ops", reason="anomalib_3d.ops (normal estimation) not available yet")
    if not hasattr(ops, "estimate_normals"):
        pytest.skip("anomalib_3d.ops.estimate_normals not available yet")

    generator = torch.Generator().manual_seed(11)
    sphere = torch.nn.functional.normalize(torch.randn(3000, 3, generator=generator), dim=1)
    rig = pointad_rig(1, image_size=48)
    estimated = render_points(sphere, rig=rig)
    exact = render_points(sphere, rig=rig, normals=sphere)
    hit = estimated.pixel_to_point >= 0
    difference = (estimated.images - exact.images).abs().amax(dim=2)[hit]
    assert difference.median() < 0.02


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("points", "error", "match"),
    [
        (torch.tensor([[0.0, float("nan"), 0.0], [1.0, 1.0, 1.0]]), InvalidPointsError, "NaN"),
        (torch.tensor([[0.0, float("inf"), 0.0]]), InvalidPointsError, "NaN/inf"),
        (torch.zeros(5, 2), InvalidPointsError, r"\(N, 3\)"),
        (torch.zeros(5, 3, 1), InvalidPointsError, r"\(N, 3\)"),
        (torch.zeros(5, 3, dtype=torch.long), InvalidPointsError, "floating"),
        (torch.zeros(0, 3), EmptyPointCloudError, "empty"),
        (np.zeros((5, 3)), InvalidPointsError, "torch.Tensor"),
    ],
)
def test_bad_points_raise(points, error, match: str) -> None:
    with pytest.raises(error, match=match):
        render_points(points, rig=pointad_rig(1, image_size=8), shading=False)


def test_bad_companions_raise() -> None:
    points = random_cube_cloud(10, 12)
    rig = pointad_rig(1, image_size=8)
    with pytest.raises(InvalidPointsError, match="batch"):
        render_points(points, torch.zeros(9, dtype=torch.long), rig, shading=False)
    with pytest.raises(InvalidPointsError, match="negative"):
        render_points(points, torch.full((10,), -1), rig, shading=False)
    with pytest.raises(InvalidPointsError, match="num_clouds"):
        render_points(points, torch.full((10,), 3), rig, shading=False, num_clouds=2)
    with pytest.raises(InvalidPointsError, match="colors"):
        render_points(points, rig=rig, colors=torch.rand(10, 4), shading=False)
    with pytest.raises(InvalidPointsError, match="normals"):
        render_points(points, rig=rig, normals=torch.full((10, 3), float("nan")))
    with pytest.raises(InvalidPointsError, match="values"):
        render_points(points, rig=rig, values=torch.rand(11, 2), shading=False)
    with pytest.raises(ValueError, match="point_radius_px"):
        render_points(points, rig=rig, point_radius_px=-1.0, shading=False)
    with pytest.raises(ValueError, match="depth_tolerance"):
        render_points(points, rig=rig, depth_tolerance=float("nan"), shading=False)
    with pytest.raises(GroundTruthMismatchError, match="one label per point"):
        render_mask(torch.zeros(7), points, rig=rig)
    with pytest.raises(GroundTruthMismatchError, match="one label per point"):
        render_mask_like(torch.zeros(7), rasterize_points(points, rig=rig))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    points = random_cube_cloud(2000, 13)
    normals = torch.nn.functional.normalize(random_cube_cloud(2000, 14), dim=1)
    rig = pointad_rig(9, image_size=64)
    cpu = render_points(points, rig=rig, normals=normals)
    gpu = render_points(points.cuda(), rig=rig, normals=normals.cuda())
    assert gpu.images.device.type == "cuda" and gpu.visible.device.type == "cuda"
    assert (gpu.pixel_to_point.cpu() != cpu.pixel_to_point).float().mean() < 1e-3


def test_arithmetic_key_packing_matches_in_place_packing(monkeypatch: pytest.MonkeyPatch) -> None:
    from anomalib_3d.render import zbuffer

    points = random_cube_cloud(300, 15)
    rig = pointad_rig(3, image_size=32)
    in_place = rasterize_points(points, rig=rig)
    monkeypatch.setattr(zbuffer, "_LITTLE_ENDIAN", False)  # the portable shift/or path
    portable = rasterize_points(points, rig=rig)
    assert torch.equal(in_place.pixel_to_point, portable.pixel_to_point)
    assert torch.equal(in_place.depth, portable.depth)
    assert torch.equal(in_place.visible, portable.visible)


def test_per_cloud_radius_renders_each_cloud_as_alone() -> None:
    """Clouds of a batch with radii 1, 3 and 0 give the very images / owners / visibility they give alone."""
    rig = pointad_rig(3, image_size=40)
    clouds = [random_cube_cloud(150, 21), random_cube_cloud(400, 22), random_cube_cloud(60, 23)]
    radii = [1.0, 3.0, 0.0]
    alone = [render_points(c, rig=rig, point_radius_px=r, normals=c) for c, r in zip(clouds, radii, strict=True)]
    points = torch.cat(clouds)
    batch = torch.cat([torch.full((c.shape[0],), i) for i, c in enumerate(clouds)])
    together = render_points(points, batch, rig, point_radius_px=radii, normals=points)
    assert together.point_radius_px == radii
    start = 0
    for i, (cloud, single) in enumerate(zip(clouds, alone, strict=True)):
        stop = start + cloud.shape[0]
        assert torch.equal(together.images[i], single.images[0])
        owners = together.pixel_to_point[i]
        assert torch.equal(torch.where(owners >= 0, owners - start, owners), single.pixel_to_point[0])
        assert torch.equal(together.visible[start:stop], single.visible)
        start = stop
    with pytest.raises(ValueError, match="3 clouds"):
        render_points(points, batch, rig, point_radius_px=[1.0, 2.0])
