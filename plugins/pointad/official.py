"""The pictures the PointAD authors' released prompts were fitted on: their rendering, per dataset.

Their scripts (zqhang/PointAD ``multi_view/multiview_{mvtec,eyecandies,real3d}.py``, ``dataset.py``)
render with Open3D; :class:`~anomalib_3d_plugins.pointad.render_settings.RenderSettings` with
``style="official"`` makes the same pictures with our renderer (checked against Open3D itself in
``tests/integration/test_open3d_parity.py``). Per rig preset:

==================== ====== ============================================ ============ ==============
preset               window square points (window px)                  camera step  cloud
==================== ====== ============================================ ============ ==============
``pointad_mvtec``    1024   per category: bagel 7, cable_gland 12,       --           sensor frame
                            carrot 7, cookie 6, dowel 10, rope 5,                     flipped (pi
                            peach 7, foam 8, potato 8, tire 8                         about X)
``pointad_eyecandies`` 1036 10                                           0.05 m       camera frame
                                                                                      turned 3/4 pi
                                                                                      about X
``pointad_real3d``   1036   12                                           --           flipped;
                                                                                      resampled to
                                                                                      112,896 points
==================== ====== ============================================ ============ ==============

The Eyecandies camera step is their 0.005 in their coordinates, which are metres scaled by 0.1.
Everywhere: Open3D's default camera refitted per view, grey 0.7 points under Open3D's lighting
with normals from 50 neighbours, pictures resized to 336 px (antialiased bicubic), only the
nearest point of each 336-px pixel visible, and a point no view sees takes the visibility of the
nearest point (in point order) that some view sees (:func:`borrow_unseen_visibility`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from anomalib_3d.render import EYECANDIES_SENSOR_TO_OBJECT, SENSOR_TO_OBJECT

#: Grey of the authors' points (``colors = 0.7``) and the neighbours of their normal estimate
#: (``KDTreeSearchParamHybrid(radius=0.1, max_nn=50)``: the radius never binds on these scans).
OFFICIAL_GREY, OFFICIAL_NORMAL_K = 0.7, 50
#: Real3D-AD clouds are resampled to a 336 x 336 "grid" of points.
REAL3D_POINTS = 336 * 336


@dataclass(frozen=True)
class OfficialStyle:
    """How the authors render the clouds of one dataset.

    Attributes:
        window: side of their Open3D window (pixels; points are sized in them).
        point_size: square side of a point, for categories without their own.
        point_sizes: square side per category (``multiview_mvtec.py``).
        recede_step: their camera steps back by this many metres until the cloud is in frame.
        sensor_turn: ``(3, 3)`` rotation from the sensor frame to their object frame.
        turn_unorganized: also turn clouds without a sensor grid (their Real3D-AD script flips every cloud).
        num_points: clouds are resampled to this many points first (Real3D-AD), or ``None``.
    """

    window: int
    point_size: float
    point_sizes: Mapping[str, float] = field(default_factory=dict)
    recede_step: float = 0.0
    sensor_turn: Tensor = field(default_factory=lambda: SENSOR_TO_OBJECT.clone())
    turn_unorganized: bool = False
    num_points: int | None = None

    def size_for(self, category: str | None) -> float:
        """Square side (window pixels) of the points of a cloud of ``category``."""
        if category is None:
            return self.point_size
        return float(self.point_sizes.get(str(category).lower(), self.point_size))


OFFICIAL_STYLES: dict[str, OfficialStyle] = {
    "pointad_mvtec": OfficialStyle(
        window=1024,
        # 8 (their potato / foam / tire size) for categories they did not size.
        point_size=8.0,
        point_sizes={"bagel": 7.0, "cable_gland": 12.0, "carrot": 7.0, "cookie": 6.0, "dowel": 10.0, "rope": 5.0,
                     "peach": 7.0, "foam": 8.0, "potato": 8.0, "tire": 8.0},
    ),
    "pointad_eyecandies": OfficialStyle(
        window=1036, point_size=10.0, recede_step=0.05, sensor_turn=EYECANDIES_SENSOR_TO_OBJECT.clone(),
    ),
    "pointad_real3d": OfficialStyle(window=1036, point_size=12.0, turn_unorganized=True, num_points=REAL3D_POINTS),
}


def official_style(preset: str) -> OfficialStyle:
    """The :data:`OFFICIAL_STYLES` entry of a rig preset."""
    if preset not in OFFICIAL_STYLES:
        msg = f"the official rendering exists for the presets {sorted(OFFICIAL_STYLES)}, not {preset!r}."
        raise ValueError(msg)
    return OFFICIAL_STYLES[preset]


def borrow_unseen_visibility(
    visible: Tensor, batch: Tensor, num_clouds: int, position: Tensor | None = None
) -> Tensor:
    """``(N, V)`` visibility where every point no view sees takes the flags of the nearest point of
    its cloud, in point order, that some view sees (the authors' ``dataset.py``: the search wraps
    around the cloud's ends, and of two equally near points the later one wins).

    The borrowing point keeps its own pixel: the maps are read where *it* projects, in the views
    where its neighbour is visible. A cloud that no view sees at all keeps its flags.

    Args:
        visible: ``(N, V)`` bool.
        batch: ``(N,)`` sorted cloud index.
        num_clouds: ``B``.
        position: ``(N,)`` ascending place of each point in its cloud's order (organized clouds:
            the pixel index on the grid, as the authors count); ``None`` = the point index.
    """
    seen = visible.any(dim=1)
    if bool(seen.all()):
        return visible
    result = visible.clone()
    counts = torch.bincount(batch, minlength=num_clouds)
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).tolist()
    for cloud in range(num_clouds):
        lo, hi = ptr[cloud], ptr[cloud + 1]
        local_seen = seen[lo:hi].nonzero().squeeze(1)
        local_unseen = (~seen[lo:hi]).nonzero().squeeze(1)
        if local_seen.numel() == 0 or local_unseen.numel() == 0:
            continue
        place = torch.arange(hi - lo, device=visible.device) if position is None else position[lo:hi].long()
        span = int(place[-1] - place[0]) + 1
        seen_place, unseen_place = place[local_seen], place[local_unseen]
        # The next seen point after each unseen one (wrapping), and the previous one.
        after = torch.searchsorted(seen_place, unseen_place)
        up = after % local_seen.numel()
        down = (after - 1) % local_seen.numel()
        up_gap = (seen_place[up] - unseen_place) % span
        down_gap = (unseen_place - seen_place[down]) % span
        source = torch.where(up_gap <= down_gap, local_seen[up], local_seen[down])
        result[lo + local_unseen] = visible[lo + source]
    return result


def resample_cloud(points: Tensor, num_points: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """A cloud resampled to ``num_points`` as the authors' Real3D-AD script does, and how to map back.

    More points: farthest point sampling (from the first point; theirs starts at a random one).
    Fewer: the cloud plus new points at 1/4, 1/2 and 3/4 of the way to each point's three nearest
    neighbours, as many as needed drawn at random (``seed``); a new point carries the label of the
    nearer end, as theirs.

    Args:
        points: ``(N, 3)`` one cloud.
        num_points: ``M``.
        seed: seed of the draw of new points.

    Returns:
        ``(resampled (M, 3), origin (M,), nearest (N,))``: ``origin[j]`` is the input point whose
        label resampled point ``j`` carries, ``nearest[i]`` the resampled point standing for input
        point ``i`` (itself when it was kept).
    """
    from anomalib_3d.ops import farthest_point_sample, knn

    count = points.shape[0]
    every = torch.arange(count, device=points.device)
    if count == num_points:
        return points, every, every
    if count > num_points:
        chosen = farthest_point_sample(points, num_points)
        nearest, _ = knn(points[chosen], points, 1)
        return points[chosen], chosen, nearest[:, 0]
    if count == 1:  # nothing to interpolate between
        return points.expand(num_points, 3), every.expand(num_points), every
    neighbours, _ = knn(points, points, min(4, count))
    ends = neighbours[:, 1:]  # (N, 3): the three nearest other points
    ratios = points.new_tensor([0.25, 0.5, 0.75])
    start = points[:, None, None, :]
    candidates = (start + ratios[None, None, :, None] * (points[ends][:, :, None, :] - start)).reshape(-1, 3)
    # Ratios up to 1/2 keep the point's own label, 3/4 takes the neighbour's.
    labels_from = torch.stack([every[:, None].expand_as(ends)] * 2 + [ends], dim=2).reshape(-1)
    needed = num_points - count
    generator = torch.Generator().manual_seed(seed)
    draws = torch.cat([torch.randperm(candidates.shape[0], generator=generator)
                       for _ in range(math.ceil(needed / max(candidates.shape[0], 1)))])[:needed].to(points.device)
    return torch.cat([points, candidates[draws]]), torch.cat([every, labels_from[draws]]), every


def cloud_categories(categories: Sequence[str | None] | None, num_clouds: int) -> list[str | None]:
    """``B`` category names (``None`` where unknown)."""
    if categories is None:
        return [None] * num_clouds
    names = list(categories)
    if len(names) == 1 and num_clouds > 1:
        names = names * num_clouds
    if len(names) != num_clouds:
        msg = f"{len(names)} categories given for {num_clouds} clouds."
        raise ValueError(msg)
    return names


@dataclass
class Open3DParity:
    """Our official-style pictures of one cloud beside Open3D's (``V`` views, ``S`` px).

    Attributes:
        iou: ``(V,)`` silhouette IoU (pictures without lighting, pixels darker than halfway).
        extent_ratio: ``(V, 2)`` our silhouette's bounding-box width and height over Open3D's.
        grey_difference: ``(V,)`` mean absolute grey difference of the lit pictures on the pixels
            both silhouettes cover.
        correspondence_agreement: ``(V,)`` share of points given the same output pixel.
        visibility_agreement: ``(V,)`` share of points with the same visibility (before borrowing).
        ours, theirs: ``(V, S, S, 3)`` the lit pictures.
    """

    iou: Tensor
    extent_ratio: Tensor
    grey_difference: Tensor
    correspondence_agreement: Tensor
    visibility_agreement: Tensor
    ours: Tensor
    theirs: Tensor


def compare_with_open3d(
    model: object,
    points: Tensor,
    *,
    grid_index: Tensor | None = None,
    grid_shape: Sequence[int] | None = None,
    category: str | None = None,
) -> Open3DParity:
    """Render one cloud with a :class:`~anomalib_3d_plugins.pointad.torch_model.PointADModel` of the
    official style and with Open3D the authors' way
    (:func:`anomalib_3d.render.open3d_reference.render_like_pointad`), and compare the pictures.

    Needs an X display (:func:`anomalib_3d.render.open3d_reference.headless_display`).

    Args:
        model: the PointAD torch model (``render_settings.style == "official"``).
        points: ``(N, 3)`` the cloud, in the frame the model receives it.
        grid_index, grid_shape: its organized grid, if any.
        category: the category that sizes its points.
    """
    from anomalib_3d.render import render_points
    from anomalib_3d.render.open3d_reference import render_like_pointad

    settings = model.render_settings
    if not settings.official:
        msg = "compare_with_open3d needs a model with render_style 'official'."
        raise ValueError(msg)
    organized = grid_index is not None and grid_shape is not None
    grid = {"grid_index": grid_index, "grid_shape": grid_shape} if organized else {}
    batch = torch.zeros(points.shape[0], dtype=torch.long)
    lit = model.render(points, batch, 1, categories=[category], **grid)
    rig, radius = lit.rig, lit.point_radius_px
    flat = render_points(points, batch, rig, point_radius_px=radius, point_shape="square", visibility="nearest",
                         shading=False, base_color=(OFFICIAL_GREY,) * 3)
    style = settings.official_style(organized)
    theirs = render_like_pointad(points.double().numpy(), rig.rotations.double().numpy(), window=rig.raster_size[0],
                                 point_size=2 * float(radius if not isinstance(radius, list) else radius[0]),
                                 image_size=rig.image_size[0], recede_step=style.recede_step)
    ours_flat = flat.images[0].permute(0, 2, 3, 1).mean(-1) < (1.0 + OFFICIAL_GREY) / 2.0
    their_flat = torch.from_numpy(theirs.silhouettes)
    ours_lit = lit.images[0].permute(0, 2, 3, 1)
    their_lit = torch.from_numpy(theirs.images)
    iou = (ours_flat & their_flat).flatten(1).sum(1) / (ours_flat | their_flat).flatten(1).sum(1).clamp(min=1)
    both = ours_flat & their_flat
    grey_gap = (ours_lit.mean(-1) - their_lit.mean(-1)).abs() * both
    grey = grey_gap.flatten(1).sum(1) / both.flatten(1).sum(1).clamp(min=1)
    uv_same = (flat.point_uv.permute(1, 0, 2) == torch.from_numpy(theirs.correspondence)).all(-1).float().mean(1)
    seen_same = (flat.visible.T == torch.from_numpy(theirs.visible)).float().mean(1)
    return Open3DParity(iou, _extent(ours_flat) / _extent(their_flat).clamp(min=1), grey, uv_same, seen_same,
                        ours_lit, their_lit)


def _extent(silhouettes: Tensor) -> Tensor:
    """``(V, 2)`` width and height in pixels of each ``(V, S, S)`` silhouette's bounding box."""
    columns, rows = silhouettes.any(dim=1), silhouettes.any(dim=2)

    def span(hits: Tensor) -> Tensor:
        index = torch.arange(hits.shape[1]).expand_as(hits)
        first = torch.where(hits, index, hits.shape[1]).amin(1)
        last = torch.where(hits, index, -1).amax(1)
        return (last - first + 1).clamp(min=0).float()

    return torch.stack([span(columns), span(rows)], dim=1)


__all__ = [
    "OFFICIAL_GREY",
    "OFFICIAL_NORMAL_K",
    "OFFICIAL_STYLES",
    "REAL3D_POINTS",
    "OfficialStyle",
    "Open3DParity",
    "borrow_unseen_visibility",
    "cloud_categories",
    "compare_with_open3d",
    "official_style",
    "resample_cloud",
]
