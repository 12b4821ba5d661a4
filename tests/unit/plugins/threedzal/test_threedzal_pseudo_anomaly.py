"""3DzAL pseudo-anomalies: each cue the paper's per-cell generator leaves (shown first), and the
whole-grid generator that removes it.

* two surfaces on the pixel rays of an attached region (per-cell adding) vs one point per ray,
  every ray under the outline covered (grid ``attach``);
* point counts that give the label away (per-cell generator) vs count-matched positives
  (two-sample Kolmogorov-Smirnov test from scipy);
* an interest region at the centroid of all seeds (between two clusters) vs on the strongest cluster;
* every grid kind against hand-computed geometry, and the switches (kinds, disentanglement mode,
  adding scale, denoising) doing what they say.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial import Delaunay

from anomalib_3d.data.datasets import remove_background_plane
from anomalib_3d.data.synthetic.generator import make_scan
from anomalib_3d_plugins.threedzal.cells import OrganizedCloud, cut_cells
from anomalib_3d_plugins.threedzal.grid_defects import (
    ATTACH_LIFT,
    InterestPatch,
    angular_pitch,
    attach,
    bump,
    ellipse_distance,
    hole,
    interest_centre,
    shift_along_rays,
    synthesise_defect,
)
from anomalib_3d_plugins.threedzal.loss import patch_denoising_loss
from anomalib_3d_plugins.threedzal.pseudo_anomaly import add_points, camera_visible, interest_region, match_counts
from anomalib_3d_plugins.threedzal.settings import ThreeDzALSettings
from anomalib_3d_plugins.threedzal.torch_model import ThreeDzALModel

FOCAL = 100.0


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    del one_thread


def pinhole_plane(size: int = 32, focal: float = FOCAL) -> tuple[torch.Tensor, torch.Tensor]:
    """A tilted plane seen by a pinhole camera at the origin: one point on every pixel's ray."""
    coords = torch.arange(size, dtype=torch.float64) + 0.5 - size / 2
    v, u = torch.meshgrid(coords, coords, indexing="ij")
    rays = torch.stack([u / focal, v / focal, torch.ones_like(u)], dim=-1)
    # plane z = 0.4 + 0.2 y  ->  depth t with t = 0.4 + 0.2 t v/f
    depth = 0.4 / (1 - 0.2 * v / focal)
    return (rays * depth[..., None]).float(), torch.ones(size, size, dtype=torch.bool)


def pixel_of(points: torch.Tensor, xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest pixel ray (by direction) of each point, and the angle to it in units of the pixel pitch."""
    rays = (xyz / xyz.norm(dim=-1, keepdim=True)).reshape(-1, 3).double()
    directions = (points / points.norm(dim=-1, keepdim=True)).double()
    angle = torch.cdist(directions, rays)
    nearest = angle.argmin(dim=1)
    return nearest, angle.gather(1, nearest[:, None])[:, 0] * FOCAL


def _bumpy_region(n_side: int = 5) -> torch.Tensor:
    """A small curved piece of foreign surface (the material of an adding pseudo-anomaly)."""
    g = torch.linspace(-1, 1, n_side)
    x, y = torch.meshgrid(g, g, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1), 0.5 * (x.square() + y.square()).reshape(-1)], dim=1)[:24]


# ------------------------------------------------------------------------------------------------
# cue 1: two surfaces on one pixel ray


def test_per_cell_adding_puts_two_points_on_pixel_rays_and_interleaves_two_surfaces() -> None:
    xyz, valid = pinhole_plane()
    points = xyz[valid]
    rows, cols = torch.meshgrid(torch.arange(8, 16), torch.arange(8, 16), indexing="ij")
    cell = (rows * 32 + cols).reshape(-1)  # row-major index = index into points
    region = _bumpy_region()
    made = add_points(points, region, anchor=int(cell[27]), patch_size=64, patch_index=cell)
    union = made.points[made.patch_index]
    pixel, _ = pixel_of(union, xyz)
    # the cue: the surface point and an added point share a pixel ray
    assert torch.bincount(pixel).max() >= 2
    # camera_visible keeps one point per ray, but inside the added region's outline the rays it
    # misses keep the original surface: two interleaved surfaces, and added points off the lattice
    keep = camera_visible(union, points[cell])
    kept, labels = union[keep], made.labels[made.patch_index][keep]
    kept_pixel, off_lattice = pixel_of(kept, xyz)
    added = union[made.labels[made.patch_index]]
    hull = Delaunay((added[:, :2] / added[:, 2:]).numpy())
    pixel_rays = (xyz.reshape(-1, 3)[kept_pixel, :2] / xyz.reshape(-1, 3)[kept_pixel, 2:]).numpy()
    inside = torch.from_numpy(hull.find_simplex(pixel_rays) >= 0)
    surface_share = float((~labels[inside]).float().mean())
    assert inside.sum() >= 8 and 0.2 < surface_share < 0.9
    assert float(off_lattice[labels].median()) > 0.1  # added points between pixel rays


def test_grid_attach_gives_one_point_per_pixel_ray_and_covers_its_whole_outline() -> None:
    xyz, valid = pinhole_plane()
    outline = ellipse_distance((12, 12), (6, 6), (5.0, 3.5), 0.4) < 1
    relief = torch.rand(12, 12, generator=torch.Generator().manual_seed(0)) * outline
    made = attach(xyz, valid, (14, 15), InterestPatch(outline, relief), amplitude=0.01)
    covered = torch.zeros(32, 32, dtype=torch.bool)
    covered[8:20, 9:21] = outline
    assert torch.equal(made.affected, covered) and torch.equal(made.valid, valid)
    moved = made.xyz[covered]
    pixel, off_lattice = pixel_of(moved, xyz)
    # every point under the outline is on its own pixel's ray; each ray holds exactly one point
    assert torch.equal(pixel, covered.reshape(-1).nonzero().squeeze(1))
    assert float(off_lattice.max()) < 1e-3
    everything, _ = pixel_of(made.xyz[made.valid], xyz)
    assert int(torch.bincount(everything).max()) == 1
    # in front of the surface by the lifted relief, untouched elsewhere
    lift = xyz[covered].norm(dim=-1) - moved.norm(dim=-1)
    expected = 0.01 * (ATTACH_LIFT + (1 - ATTACH_LIFT) * relief[outline])
    assert torch.allclose(lift, expected, atol=1e-6)
    assert torch.equal(made.xyz[~covered], xyz[~covered])


def test_shift_along_rays_is_the_hand_computed_move() -> None:
    p = torch.tensor([[0.0, 0.0, 1.0], [0.3, 0.4, 0.0], [0.0, 0.0, 0.0]])
    moved = shift_along_rays(p, torch.tensor([0.1, -0.5, 0.2]))
    assert torch.allclose(moved, torch.tensor([[0.0, 0.0, 0.9], [0.6, 0.8, 0.0], [0.0, 0.0, 0.0]]))


def test_angular_pitch_is_one_over_the_focal_length() -> None:
    xyz, valid = pinhole_plane(size=40, focal=200.0)
    # adjacent unit rays are 1/f apart at the image centre and cos^2 closer at the border
    assert angular_pitch(xyz, valid) == pytest.approx(1 / 200.0, rel=5e-3)


def test_bump_and_hole_against_their_formulas() -> None:
    xyz, valid = pinhole_plane()
    centre, radii, angle = (16, 14), (6.0, 4.0), 0.3
    distance = ellipse_distance((32, 32), centre, radii, angle)
    weight = torch.where(distance < 1, 0.5 * (1 + torch.cos(math.pi * distance.clamp(max=1))), torch.zeros(()))
    for height in (0.02, -0.02):
        made = bump(xyz, valid, centre, radii, angle, height)
        assert made.kind == ("bulge" if height > 0 else "dent")
        shift = xyz.norm(dim=-1) - made.xyz.norm(dim=-1)
        assert torch.allclose(shift, height * weight, atol=1e-6)
        assert float(shift[centre].abs()) == pytest.approx(0.02, rel=1e-5)
        _, off = pixel_of(made.xyz.reshape(-1, 3), xyz)
        assert float(off.max()) < 1e-3  # only along rays
        assert torch.equal(made.affected, weight > 0.05)
    holed = hole(xyz, valid, centre, radii, angle)
    assert torch.equal(holed.affected, distance < 1) and torch.equal(holed.valid, distance >= 1)
    assert (holed.xyz[distance < 1] == 0).all() and torch.equal(holed.xyz[distance >= 1], xyz[distance >= 1])


# ------------------------------------------------------------------------------------------------
# cue 2: point counts


def _scan_cloud(category: str, seed: int, size: int = 96) -> OrganizedCloud:
    scan = make_scan(category, None, seed, (size, size))
    valid = torch.from_numpy(remove_background_plane(scan.xyz))
    xyz = torch.from_numpy(scan.xyz) * valid[..., None]
    return OrganizedCloud(xyz, valid, None, (size, size), valid.reshape(-1).nonzero().squeeze(1))


def _distinct_counts(patches: torch.Tensor) -> np.ndarray:
    return np.array([torch.unique(p, dim=0).shape[0] for p in patches])


def _count_model(**switches: object) -> ThreeDzALModel:
    model = ThreeDzALModel(ThreeDzALSettings(grid_size=96, patch_size=8, use_fpfh=False, feature_dim=8, pointnet_centroids=4,
                           pointnet_widths=(8, 8), generator_backbone="small", top_fraction=0.01, region_size=24,
                           positives_per_sample=48, seed=0, **switches))
    source = _scan_cloud("bottle", 1)
    model.set_task_irrelevant([(source.xyz, source.valid)])
    return model


def test_per_cell_generator_gives_the_label_away_by_point_count_and_count_matching_removes_it() -> None:
    clouds = [_scan_cloud("cup", seed) for seed in range(4)]
    per_cloud = [(cloud, cut_cells(cloud.xyz, cloud.valid, 8)) for cloud in clouds]
    paper = _count_model(pseudo_anomalies="paper", count_matched=False)
    pos, neg, _ = paper.training_patches(per_cloud)
    pos_counts, neg_counts = _distinct_counts(pos), _distinct_counts(neg)
    # the cue: removal cells go below the 4 points every normal training cell has, and the two
    # count distributions differ
    assert (pos_counts >= 4).all() and (neg_counts < 4).any()
    assert stats.ks_2samp(pos_counts, neg_counts).pvalue < 1e-3
    grid = _count_model()
    pos, neg, sources = grid.training_patches(per_cloud)
    pos_counts, neg_counts = _distinct_counts(pos), _distinct_counts(neg)
    assert len(neg_counts) >= 60
    result = stats.ks_2samp(pos_counts, neg_counts)
    assert result.statistic == 0 and result.pvalue == 1.0
    assert sorted(pos_counts.tolist()) == sorted(neg_counts.tolist())
    assert (neg_counts < 64).any()  # the negatives do include sparse cells (holes, silhouettes)
    assert sum(cells.numel() for _, cells in sources) == pos.shape[0]


def test_match_counts_pairs_equal_counts_without_repeats_while_the_pool_lasts() -> None:
    negatives = torch.tensor([5, 64, 64, 7, 64, 5])
    pool = torch.tensor([64, 5, 64, 9, 5, 64, 64])
    kept, chosen = match_counts(negatives, pool, torch.Generator().manual_seed(0))
    assert kept.tolist() == [True, True, True, False, True, True]
    assert torch.equal(pool[chosen], negatives[kept])
    assert len(set(chosen.tolist())) == chosen.numel()  # enough of each count: no cell twice
    kept, chosen = match_counts(torch.tensor([5, 5, 5]), torch.tensor([5, 64]))
    assert kept.all() and chosen.tolist() == [0, 0, 0]


# ------------------------------------------------------------------------------------------------
# cue 3: where the interest region sits


def _two_cluster_map(size: int = 32) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                                indexing="ij")
    strong = torch.exp(-((rows - 8) ** 2 + (cols - 6) ** 2) / 4)
    weak = 0.9 * torch.exp(-((rows - 8) ** 2 + (cols - 26) ** 2) / 4)
    return strong + weak


def test_centroid_of_all_seeds_lies_on_nothing_and_the_region_sits_on_the_strongest_cluster() -> None:
    xyz, valid = pinhole_plane()
    soft = _two_cluster_map()
    fraction = 24 / 1024
    seeds = soft.reshape(-1).topk(24).indices
    seed_rc = torch.stack([seeds // 32, seeds % 32], dim=1).float()
    # the cue: seeds on both clusters, their centroid on a pixel of no interest
    assert (seed_rc[:, 1] < 12).any() and (seed_rc[:, 1] > 20).any()
    centroid = seed_rc.mean(dim=0).round().long()
    assert float(soft[centroid[0], centroid[1]]) < 0.01
    row, col = interest_centre(valid, soft, fraction)
    assert int(soft.reshape(-1).topk(24).indices.eq(row * 32 + col).sum()) == 1  # a seed itself
    assert abs(row - 8) <= 1 and abs(col - 6) <= 1  # of the stronger cluster
    region = interest_region(xyz, valid, soft, fraction, region_size=9)
    pixel, _ = pixel_of(region, xyz)
    assert ((pixel // 32 - 8).abs() <= 2).all() and ((pixel % 32 - 6).abs() <= 2).all()


# ------------------------------------------------------------------------------------------------
# switches


def test_pseudo_kinds_switch_each_kind() -> None:
    cloud = _scan_cloud("cup", 0)
    originals = cut_cells(cloud.xyz, cloud.valid, 8)
    full_counts = set(originals.counts.tolist())
    hole_model = _count_model(pseudo_kinds=("hole",))
    hole_model.patch_scale.fill_(1.0)
    made, counts = hole_model.grid_negatives(cloud, 20)
    assert made.shape[0] >= 20 and made.shape[1:] == (64, 3)
    # a hole removes points: no negative keeps a full cell
    assert int(counts.max()) < 64 or 64 not in full_counts
    bulge_model = _count_model(pseudo_kinds=("bulge",))
    bulge_model.patch_scale.fill_(1.0)
    _, counts = bulge_model.grid_negatives(cloud, 20)
    assert set(counts.tolist()) <= full_counts  # bumps move points, never remove them
    with pytest.raises(ValueError, match="pseudo_kinds"):
        ThreeDzALModel(ThreeDzALSettings(grid_size=16, pseudo_kinds=("crack",)))
    with pytest.raises(ValueError, match="pseudo_anomalies"):
        ThreeDzALModel(ThreeDzALSettings(grid_size=16, pseudo_anomalies="voxels"))


def test_synthesise_defect_sizes_span_whole_cells() -> None:
    cloud = _scan_cloud("plate", 0, size=128)
    g = torch.Generator().manual_seed(3)
    spans = []
    for _ in range(40):
        made = synthesise_defect(cloud.xyz, cloud.valid, "bulge", g, patch_size=8, diameter_cells=(1.0, 2.0))
        rows, cols = made.affected.nonzero().unbind(1)
        spans.append(len({(int(r) // 8, int(c) // 8) for r, c in zip(rows, cols, strict=True)}))
    assert min(spans) >= 1 and max(spans) >= 4  # one to several cells, never a single-cell tile only
    assert synthesise_defect(cloud.xyz, cloud.valid, "attach", g, patch_size=8) is None  # no material


def test_disentanglement_mode_and_adding_scale_switches_reach_the_model() -> None:
    from anomalib_3d_plugins.threedzal import ThreeDzAL

    signed = ThreeDzAL(grid_size=16, disentanglement_mode="signed", feature_dim=4)
    squared = ThreeDzAL(grid_size=16, feature_dim=4)
    assert signed.model.loss.disentanglement.mode == "signed" and squared.model.loss.disentanglement.mode == "squared"
    features, fpfh = torch.randn(6, 4), torch.rand(6, 33)
    projected = fpfh @ signed.model.loss.disentanglement.projection
    assert signed.model.loss.disentanglement(-projected, fpfh).item() == pytest.approx(-1.0, abs=1e-6)
    assert squared.model.loss.disentanglement(-projected, fpfh).item() == pytest.approx(1.0, abs=1e-6)
    assert signed.model.loss.disentanglement(features, fpfh) != squared.model.loss.disentanglement(features, fpfh)
    assert ThreeDzAL(grid_size=16, adding_scale=2.5).model.settings.adding_scale == 2.5
    cloud, _ = pinhole_plane()
    cloud = cloud.reshape(-1, 3)
    region = _bumpy_region()
    rms = lambda p: float((p - p.mean(0)).square().sum(1).mean().sqrt())  # noqa: E731
    one = add_points(cloud, region, 500, 16, scale=1.0)
    half = add_points(cloud, region, 500, 16, scale=0.5)
    assert rms(half.points[1024:]) == pytest.approx(0.5 * rms(one.points[1024:]), rel=1e-5)


def test_denoising_loss_and_its_switch() -> None:
    clean = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    rebuilt = torch.tensor([[[0.0, 0.5, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]])
    # mean over rebuilt of nearest squared distance (0.25, 0, 1) / 3 + mean over clean (0.25, 0) / 2
    assert patch_denoising_loss(rebuilt, clean).item() == pytest.approx((0.25 + 0 + 1) / 3 + 0.25 / 2)
    with pytest.raises(ValueError, match="learned_branch"):
        ThreeDzALModel(ThreeDzALSettings(grid_size=16, learned_branch=False, denoising_loss=True))
    model = _count_model(denoising_loss=True, contrastive_loss=False, classifier=False)
    assert not model.needs_pseudo_anomalies and not model.uses_task_irrelevant
    losses = model.training_losses([_scan_cloud("cup", 0)])
    assert set(losses) == {"loss", "denoising"}
    losses["loss"].backward()
    assert model.feature_net.head.weight.grad.abs().sum() > 0 and model.denoiser.net[0].weight.grad.abs().sum() > 0
