"""Pseudo-defects synthesised on a whole organized grid (depth map), then cut into cells.

A depth camera sees one surface per pixel ray. Every kind here edits the grid the way such a camera
would see the defect: a point only moves along its own pixel ray (``p -> p (1 - h / |p|)``, camera at
the origin, ``h`` the shift towards the camera) or disappears. So each pixel keeps at most one
point, every ray inside a defect's outline carries the defect's surface, and no point leaves the
pixel lattice — nothing a real scan lacks. Defect sizes are drawn in *cells*, so one defect spans
one to several cells, as real defects do.

Kinds (each a switch of the model, ``pseudo_kinds``):

* ``bulge`` / ``dent``: a smooth raised-cosine bump towards / away from the camera over an
  elliptical footprint; the peak height is a drawn fraction of the footprint's physical radius.
* ``hole``: every pixel of an elliptical footprint removed (the scan sees through the part).
* ``attach``: a task-irrelevant sample's interest region — the outline of the high-activation
  area around its top-seed cluster and that area's relief — pasted in front of the surface as a
  height field (a foreign body stuck on the part).

Every kind returns the per-pixel ``affected`` mask (moved, removed or covered pixels); a cell is a
pseudo-anomalous patch when enough of its pixels are affected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

KINDS = ("attach", "bulge", "dent", "hole")
#: Share of the attached relief's height that every outline pixel gets at least: a foreign body
#: has a thickness, so its outline is a step, not a feathered edge.
ATTACH_LIFT = 0.3
#: Pixels whose bump weight is below this share of the peak count as unaffected.
BUMP_TOLERANCE = 0.05


@dataclass
class GridDefect:
    """One pseudo-defect on an organized grid.

    Attributes:
        xyz: ``(H, W, 3)`` the edited grid (zeros where ``valid`` is False).
        valid: ``(H, W) bool`` pixels that hold a point.
        affected: ``(H, W) bool`` pixels the defect moved, removed or covered.
        kind: one of :data:`KINDS`.
    """

    xyz: torch.Tensor
    valid: torch.Tensor
    affected: torch.Tensor
    kind: str


@dataclass
class InterestPatch:
    """Material of an ``attach`` defect, cut from a task-irrelevant sample.

    Attributes:
        outline: ``(s, s) bool`` the region's pixels (a window of side ``s`` around its centre).
        relief: ``(s, s)`` in [0, 1] on the outline: height towards the camera above the region's
            own best-fit surface, min-max normalised (0 off the outline).
    """

    outline: torch.Tensor
    relief: torch.Tensor


def shift_along_rays(xyz: torch.Tensor, height: torch.Tensor) -> torch.Tensor:
    """Move points along their camera rays (camera at the origin) by ``height`` towards the camera.

    Args:
        xyz: ``(..., 3)`` camera-frame points; height: ``(...)`` (negative = away from the camera).

    Returns:
        ``(..., 3)``; zero points stay zero.
    """
    distance = xyz.norm(dim=-1, keepdim=True)
    factor = 1.0 - height[..., None] / distance.clamp_min(1e-12)
    return torch.where(distance > 0, xyz * factor, xyz)


def angular_pitch(xyz: torch.Tensor, valid: torch.Tensor) -> float:
    """The angle (radians) between the rays of neighbouring pixels: the median over horizontally and
    vertically adjacent valid pixel pairs. Rays do not depend on depth, so depth edges do not bias it.

    Args:
        xyz: ``(H, W, 3)``; valid: ``(H, W) bool``.
    """
    rays = xyz / xyz.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    angles = []
    for a, b, both in ((rays[:, 1:], rays[:, :-1], valid[:, 1:] & valid[:, :-1]),
                       (rays[1:], rays[:-1], valid[1:] & valid[:-1])):
        angles.append((a - b).norm(dim=-1)[both])
    values = torch.cat(angles)
    values = values[values > 0]  # nearest-resized grids repeat pixels
    return float(values.median()) if values.numel() else 1e-3


def ellipse_distance(shape: tuple[int, int], centre: tuple[int, int], radii: tuple[float, float],
                     angle: float) -> torch.Tensor:
    """Normalised elliptical distance of every pixel to ``centre`` (< 1 inside the ellipse).

    Args:
        shape: ``(H, W)``; centre: ``(row, col)``; radii: semi-axes in pixels; angle: of the first
            axis, radians.

    Returns:
        ``(H, W)`` float.
    """
    rows = torch.arange(shape[0], dtype=torch.float32)[:, None] - centre[0]
    cols = torch.arange(shape[1], dtype=torch.float32)[None, :] - centre[1]
    cos, sin = math.cos(angle), math.sin(angle)
    along = (cols * cos + rows * sin) / max(radii[0], 1e-6)
    across = (-cols * sin + rows * cos) / max(radii[1], 1e-6)
    return (along.square() + across.square()).sqrt()


def bump(xyz: torch.Tensor, valid: torch.Tensor, centre: tuple[int, int], radii: tuple[float, float], angle: float,
         height: float) -> GridDefect:
    """A smooth bulge (``height > 0``, towards the camera) or dent (``height < 0``).

    The profile is a raised cosine ``(1 + cos(pi d)) / 2`` of the elliptical distance ``d``: smooth
    in value and slope at the rim, peak ``height`` (scan units) at the centre.

    Args:
        xyz: ``(H, W, 3)``; valid: ``(H, W) bool``; centre, radii (pixels), angle: the footprint.
        height: peak shift along the ray.
    """
    distance = ellipse_distance(tuple(valid.shape), centre, radii, angle).to(xyz.device)
    weight = torch.where(distance < 1, 0.5 * (1 + torch.cos(math.pi * distance.clamp(max=1))), torch.zeros_like(distance))
    weight = weight * valid
    moved = shift_along_rays(xyz, height * weight)
    kind = "bulge" if height >= 0 else "dent"
    return GridDefect(moved, valid.clone(), valid & (weight > BUMP_TOLERANCE), kind)


def hole(xyz: torch.Tensor, valid: torch.Tensor, centre: tuple[int, int], radii: tuple[float, float],
         angle: float) -> GridDefect:
    """Every valid pixel inside the elliptical footprint removed.

    Args: see :func:`bump`.
    """
    inside = ellipse_distance(tuple(valid.shape), centre, radii, angle).to(xyz.device) < 1
    removed = valid & inside
    kept = valid & ~inside
    return GridDefect(xyz * kept[..., None], kept, removed, "hole")


def interest_centre(valid: torch.Tensor, soft_map: torch.Tensor, top_fraction: float) -> tuple[int, int]:
    """The pixel at the heart of the strongest cluster of points of interest.

    The top ``top_fraction`` valid pixels of ``soft_map`` are the seeds. Seeds at most two pixels
    apart form one cluster; the cluster with the largest summed activation wins and its seed nearest
    to the cluster's mean position is returned — always a seed, so the region sits *on* the
    cluster (the centroid of all seeds may fall between clusters, on nothing of interest).

    Args:
        valid: ``(H, W) bool``; soft_map: ``(H, W)``; top_fraction: share of valid pixels (>= 1 seed).

    Returns:
        ``(row, col)``.
    """
    scores = torch.where(valid, soft_map.float(), torch.full_like(soft_map.float(), -math.inf))
    num_seeds = max(1, round(top_fraction * int(valid.sum())))
    flat = scores.reshape(-1).topk(num_seeds).indices
    seeds = torch.zeros(valid.numel(), dtype=torch.bool)
    seeds[flat.cpu()] = True
    seeds = seeds.view(valid.shape).numpy()
    grown = ndimage.binary_dilation(seeds, structure=np.ones((3, 3), dtype=bool))
    labels, count = ndimage.label(grown, structure=np.ones((3, 3), dtype=bool))
    seed_labels = labels[seeds]
    seed_positions = np.argwhere(seeds)
    seed_scores = soft_map.detach().cpu().numpy()[seeds]
    if count > 1:
        totals = np.bincount(seed_labels, weights=seed_scores, minlength=count + 1)
        best = int(np.argmax(totals))
        members = seed_positions[seed_labels == best]
    else:
        members = seed_positions
    nearest = np.argmin(((members - members.mean(axis=0)) ** 2).sum(axis=1))
    return int(members[nearest, 0]), int(members[nearest, 1])


def _window(t: torch.Tensor, centre: tuple[int, int], side: int) -> torch.Tensor:
    """``(side, side, ...)`` crop of ``t`` centred on ``centre``, zero-padded past the border."""
    half = side // 2
    padded = torch.nn.functional.pad(t.movedim((0, 1), (-2, -1)).float(), (half, side, half, side))
    crop = padded[..., centre[0] : centre[0] + side, centre[1] : centre[1] + side]
    return crop.movedim((-2, -1), (0, 1)).to(t.dtype)


def interest_patch(xyz: torch.Tensor, valid: torch.Tensor, soft_map: torch.Tensor, centre: tuple[int, int],
                   side: int) -> InterestPatch | None:
    """The outline and relief of the interest region around ``centre`` in a ``side``-pixel window.

    Outline: the window's valid pixels activated at least as strongly as the window's median, the
    4-connected component that holds ``centre``. Relief: how far each outline point lies in front of
    the plane fitted (least squares, over pixel coordinates) to the outline's ray distances.

    Args:
        xyz: ``(H, W, 3)`` a task-irrelevant sample; valid, soft_map: ``(H, W)``; centre: from
            :func:`interest_centre`; side: window side in pixels.

    Returns:
        :class:`InterestPatch`, or None when the centre has no valid pixel.
    """
    crop_valid = _window(valid, centre, side).numpy()
    crop_soft = _window(soft_map, centre, side).numpy()
    crop_xyz = _window(xyz, centre, side)
    middle = (side // 2, side // 2)
    if not crop_valid[middle]:
        return None
    strong = crop_valid & (crop_soft >= np.median(crop_soft[crop_valid]))
    strong[middle] = True
    labels, _ = ndimage.label(strong)
    outline = labels == labels[middle]
    rows, cols = np.nonzero(outline)
    distance = crop_xyz.norm(dim=-1).numpy()[rows, cols]
    design = np.stack([rows, cols, np.ones_like(rows)], axis=1).astype(np.float64)
    plane, *_ = np.linalg.lstsq(design, distance, rcond=None)
    height = design @ plane - distance
    span = height.max() - height.min()
    relief = np.zeros((side, side))
    relief[rows, cols] = (height - height.min()) / span if span > 0 else 0.0
    return InterestPatch(torch.from_numpy(outline), torch.from_numpy(relief).float())


def attach(xyz: torch.Tensor, valid: torch.Tensor, centre: tuple[int, int], patch: InterestPatch,
           amplitude: float) -> GridDefect:
    """Paste an interest region in front of the surface around ``centre``.

    Each target pixel under the outline (and holding a point) moves towards the camera by
    ``amplitude * (ATTACH_LIFT + (1 - ATTACH_LIFT) * relief)``: the foreign body's front surface,
    one point per ray, every ray under the outline covered.

    Args:
        xyz: ``(H, W, 3)``; valid: ``(H, W) bool``; centre: target pixel of the patch's centre;
        patch: from :func:`interest_patch`; amplitude: peak height (scan units).
    """
    side = patch.outline.shape[0]
    height, width = valid.shape
    top, left = centre[0] - side // 2, centre[1] - side // 2
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + side, height), min(left + side, width)
    covered = torch.zeros_like(valid)
    lift = torch.zeros(valid.shape, dtype=xyz.dtype, device=xyz.device)
    outline = patch.outline[r0 - top : r1 - top, c0 - left : c1 - left].to(valid.device)
    relief = patch.relief[r0 - top : r1 - top, c0 - left : c1 - left].to(xyz)
    covered[r0:r1, c0:c1] = outline
    covered &= valid
    lift[r0:r1, c0:c1] = amplitude * (ATTACH_LIFT + (1 - ATTACH_LIFT) * relief)
    moved = shift_along_rays(xyz, lift * covered)
    return GridDefect(moved, valid.clone(), covered, "attach")


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def synthesise_defect(
    xyz: torch.Tensor,
    valid: torch.Tensor,
    kind: str,
    generator: torch.Generator,
    *,
    patch_size: int,
    diameter_cells: tuple[float, float] = (0.5, 2.0),
    height_fraction: tuple[float, float] = (0.1, 0.4),
    sources: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]] | None = None,
    pitch: float | None = None,
) -> GridDefect | None:
    """One random defect of ``kind`` at a random valid pixel of the grid.

    Args:
        xyz: ``(H, W, 3)``; valid: ``(H, W) bool``.
        kind: one of :data:`KINDS`.
        generator: random source (anchor, size, shape, height, source sample).
        patch_size: pixels per cell side (sizes are drawn in cells).
        diameter_cells: range of the footprint's long diameter, in cells.
        height_fraction: range of the peak height as a fraction of the footprint's physical radius.
        sources: ``attach`` material: ``(xyz, valid, soft_map, centre)`` of task-irrelevant samples.
        pitch: :func:`angular_pitch` of the grid (computed when None).

    Returns:
        :class:`GridDefect`, or None when nothing could be placed (no valid pixel, no source).
    """
    if kind not in KINDS:
        msg = f"pseudo-defect kind must be one of {KINDS}, got {kind!r}."
        raise ValueError(msg)
    pixels = valid.reshape(-1).nonzero().squeeze(1)
    if pixels.numel() == 0 or (kind == "attach" and not sources):
        return None
    anchor = int(pixels[torch.randint(pixels.numel(), (1,), generator=generator)])
    centre = divmod(anchor, valid.shape[1])
    diameter = _uniform(*diameter_cells, generator) * patch_size
    pitch = angular_pitch(xyz, valid) if pitch is None else pitch
    physical_radius = 0.5 * diameter * pitch * float(xyz[centre].norm())
    amplitude = _uniform(*height_fraction, generator) * physical_radius
    if kind == "attach":
        index = int(torch.randint(len(sources), (1,), generator=generator))
        source_xyz, source_valid, soft_map, source_centre = sources[index]
        patch = interest_patch(source_xyz, source_valid, soft_map, source_centre, max(2, round(diameter)))
        return None if patch is None else attach(xyz, valid, centre, patch, amplitude)
    radii = (diameter / 2, diameter / 2 * _uniform(0.5, 1.0, generator))
    angle = _uniform(0.0, math.pi, generator)
    if kind == "hole":
        return hole(xyz, valid, centre, radii, angle)
    return bump(xyz, valid, centre, radii, angle, amplitude if kind == "bulge" else -amplitude)


__all__ = [
    "ATTACH_LIFT",
    "KINDS",
    "GridDefect",
    "InterestPatch",
    "angular_pitch",
    "attach",
    "bump",
    "ellipse_distance",
    "hole",
    "interest_centre",
    "interest_patch",
    "shift_along_rays",
    "synthesise_defect",
]
