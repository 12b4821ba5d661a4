"""Pixel maps -> points: exact round trip, view averaging, upsampling, fallbacks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from doubles.clouds import random_cube_cloud

from anomalib_3d.render import (
    gather_to_points,
    pointad_rig,
    rasterize_points,
    render_points,
    rotation_rig,
    upsample_maps,
)


def test_gather_of_rendered_values_returns_the_values_of_visible_points() -> None:
    points = random_cube_cloud(600, 0)
    batch = torch.cat([torch.zeros(400, dtype=torch.long), torch.ones(200, dtype=torch.long)])
    values = torch.randint(0, 1000, (600, 3)).float()  # integers: averaging copies is exact
    # Zero tolerance: visible <=> owner of the centre pixel, so every read is the point's own value.
    out = render_points(points, batch, pointad_rig(9, image_size=64), shading=False, values=values, depth_tolerance=0.0)
    gathered = gather_to_points(out.values, out, fallback="nan")
    seen = out.visible.any(dim=1)
    assert seen.float().mean() > 0.5
    assert torch.equal(gathered[seen], values[seen])
    assert torch.isnan(gathered[~seen]).all()
    # 1-channel maps (B, V, H, W) give (N,).
    scalar = render_points(
        points, batch, pointad_rig(9, image_size=64), shading=False, values=values[:, 0], depth_tolerance=0.0
    )
    assert torch.equal(gather_to_points(scalar.values, scalar, fallback="zero")[seen], values[seen, 0])


def test_gather_averages_over_visible_views_only() -> None:
    rig = rotation_rig([0.0, math.pi / 2, math.pi], image_size=32)
    out = rasterize_points(random_cube_cloud(50, 1), rig=rig, point_radius_px=1.0)
    # View k's map is the constant k + 1 everywhere: each point gets the mean of (k + 1) over its
    # visible views, computed independently here.
    maps = torch.arange(1, 4, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 32, 32).contiguous()
    gathered = gather_to_points(maps, out, fallback="zero")
    visible = out.visible.float()
    expected = (visible * torch.tensor([1.0, 2.0, 3.0])).sum(1) / visible.sum(1).clamp(min=1)
    torch.testing.assert_close(gathered, expected)


def test_low_resolution_maps_are_bilinearly_upsampled() -> None:
    out = rasterize_points(random_cube_cloud(300, 2), rig=pointad_rig(3, image_size=48))
    coarse = torch.rand(1, 3, 2, 6, 6)  # e.g. CLIP patch maps
    fine = F.interpolate(coarse.view(6, 1, 6, 6), size=(48, 48), mode="bilinear", align_corners=False)
    fine = fine.view(1, 3, 2, 48, 48)
    torch.testing.assert_close(upsample_maps(coarse, (48, 48)), fine)
    torch.testing.assert_close(gather_to_points(coarse, out), gather_to_points(fine, out))
    # A constant map stays constant after upsampling.
    constant = torch.full((1, 3, 7, 5), 0.25)
    torch.testing.assert_close(gather_to_points(constant, out), torch.full((300,), 0.25))


def _hidden_point_scene() -> tuple[torch.Tensor, torch.Tensor]:
    """Front sheet of points plus one point hidden right behind sheet point 71, seen from one view.

    Sheet points are 0.1 apart (2.9 px at 64 px); with 1 px discs no sheet point covers another's
    centre pixel, so every sheet point reads its own value.
    """
    grid = torch.linspace(-0.5, 0.5, 11)
    xs, ys = torch.meshgrid(grid, grid, indexing="ij")
    sheet = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.full((121,), 0.5)], dim=1)
    hidden = torch.tensor([[0.101, 0.001, -0.5]])
    return torch.cat([sheet, hidden]), torch.arange(122, dtype=torch.float32)


@pytest.mark.parametrize(("fallback", "expected"), [("zero", 0.0), ("nan", float("nan"))])
def test_unseen_points_get_the_fallback(fallback: str, expected: float) -> None:
    points, values = _hidden_point_scene()
    out = render_points(
        points,
        rig=rotation_rig([0.0], image_size=64),
        shading=False,
        values=values,
        normalize=False,
        point_radius_px=1.0,
    )
    assert not out.visible[121].any() and out.visible[:121].all()
    gathered = gather_to_points(out.values, out, fallback=fallback)
    torch.testing.assert_close(gathered[121], torch.tensor(expected), equal_nan=True)
    assert torch.equal(gathered[:121], values[:121])


def test_unseen_points_take_their_nearest_visible_neighbour() -> None:
    pytest.importorskip("anomalib_3d.ops", reason="anomalib_3d.ops (knn) not available yet")
    points, values = _hidden_point_scene()
    # A second cloud sitting right on the hidden point must not be used as a neighbour source.
    other = points[121:] + torch.linspace(-0.3, 0.3, 5).unsqueeze(1) * torch.tensor([1.0, 0.0, 0.0])
    both = torch.cat([points, other])
    batch = torch.cat([torch.zeros(122, dtype=torch.long), torch.ones(5, dtype=torch.long)])
    out = render_points(
        both,
        batch,
        rotation_rig([0.0], image_size=64),
        shading=False,
        values=torch.cat([values, -values[:5]]),
        normalize=False,
        point_radius_px=1.0,
    )
    assert not out.visible[121].any()
    gathered = gather_to_points(out.values, out)
    nearest = int(torch.cdist(points[121:], points[:121]).argmin())  # brute-force reference
    assert nearest == 71 and gathered[121] == values[71]


def test_bad_maps_raise() -> None:
    out = rasterize_points(random_cube_cloud(20, 3), rig=pointad_rig(3, image_size=16))
    with pytest.raises(ValueError, match="maps must have shape"):
        gather_to_points(torch.rand(2, 3, 16, 16), out)
    with pytest.raises(ValueError, match="maps must have shape"):
        gather_to_points(torch.rand(1, 3, 16), out)
    with pytest.raises(ValueError, match="fallback"):
        gather_to_points(torch.rand(1, 3, 16, 16), out, fallback="mean")


def test_view_loop_for_wide_maps_matches_the_one_shot_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from anomalib_3d.render import correspondence

    out = rasterize_points(random_cube_cloud(400, 4), rig=pointad_rig(5, image_size=32))
    maps = torch.rand(1, 5, 6, 32, 32)
    one_shot = gather_to_points(maps, out, fallback="nan")
    monkeypatch.setattr(correspondence, "_ALL_VIEWS_AT_ONCE", 0)
    torch.testing.assert_close(gather_to_points(maps, out, fallback="nan"), one_shot, equal_nan=True)
