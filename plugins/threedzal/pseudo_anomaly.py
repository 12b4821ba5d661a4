"""Pseudo-anomaly material and the paper's per-cell generator (3DzAL Sec. 3.2).

1. **Points of interest**: an *untrained*, He-initialised (seeded) ResNet-50 reads a task-irrelevant
   sample's organized xyz as a 3-channel image; the channel sums of its last three stages
   (layer4, layer3, layer2 — the paper's "reciprocal 2nd/3rd/4th" layers) are min-max normalised,
   resized to layer2's size, averaged and upsampled to the grid: the soft mask. Its top
   ``top_fraction`` valid pixels are the points of interest; the *interest region* is the
   ``region_size`` points nearest to the heart of their strongest cluster (the paper's "plus some
   surrounding points").
2. **Adding-point** pseudo-anomaly (:func:`add_points`): the region, centred and scaled to the target
   patch's size, is attached to a normal cloud at an anchor; the pseudo-anomalous patch is the
   anchor's kNN over the union (or a given set of cloud points, e.g. the anchor's grid cell, plus the
   added points).
3. **Removing-point** pseudo-anomaly (:func:`remove_points`): a random anchor on the normal surface,
   its patch, and a random fraction of that patch's points dropped.

:func:`paper_cell_negatives` makes them one cell at a time, as the paper does. That leaves cues no
real defect has (two surfaces on the rays of an attached region — :func:`camera_visible` keeps one
point per ray bin, but the uncovered rays keep the surface — and point counts that differ from normal
cells); the default generator is :mod:`.grid_defects`, with positives drawn by :func:`match_counts`.

Labels are exact: added points are anomalous; for removals, the patch points that remain around
the hole are anomalous; nothing else is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from anomalib_3d.data.errors import MissingWeightsError
from anomalib_3d.nn.weights import cached_checkpoint, hub_checkpoint_dir, load_state_dict_file
from anomalib_3d.ops import knn
from anomalib_3d.settings import check_choice

from .cells import CellPatches, fit_patch_size
from .grid_defects import interest_centre

GENERATORS = ("resnet50", "resnet18", "small")


class GeneratorCNN(nn.Module):
    """A CNN whose stages 2-4 give activation maps (torchvision ResNet or a small random CNN).

    Args:
        name: ``"resnet50"`` (paper), ``"resnet18"`` or ``"small"`` (3 random conv stages; fast).
        pretrained: ``False`` (He init, seeded: the paper), ``True`` (ImageNet weights from
            torchvision's cache) or a local weights path. Missing weights raise
            :class:`MissingWeightsError`.
        seed: seed of the random initialisation.
    """

    def __init__(self, name: str = "resnet50", pretrained: bool | str = False, seed: int = 0) -> None:
        super().__init__()
        check_choice("generator_backbone", name, GENERATORS)
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            if name == "small":
                if pretrained:
                    msg = "the 'small' generator CNN has no pretrained weights; use resnet50/resnet18."
                    raise ValueError(msg)
                self.stem = nn.Sequential(nn.Conv2d(3, 32, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
                self.stages = nn.ModuleList(
                    nn.Sequential(nn.Conv2d(c_in, c_out, 3, 2, 1), nn.ReLU(), nn.Conv2d(c_out, c_out, 3, 1, 1), nn.ReLU())
                    for c_in, c_out in ((32, 64), (64, 128), (128, 256))
                )
                for module in self.modules():
                    if isinstance(module, nn.Conv2d):
                        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                        nn.init.zeros_(module.bias)
            else:
                import torchvision

                net = getattr(torchvision.models, name)(weights=None)  # torchvision's init is He (kaiming) init
                if pretrained:
                    net.load_state_dict(_load_imagenet_weights(name, pretrained))
                self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
                self.stages = nn.ModuleList([net.layer2, net.layer3, net.layer4])
        finally:
            torch.random.set_rng_state(state)
        self.eval()
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Args: ``(B, 3, H, W)``. Returns the three stage outputs (stride 8, 16, 32)."""
        x = self.stem(image)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


def _load_imagenet_weights(name: str, pretrained: bool | str) -> dict[str, torch.Tensor]:
    """ImageNet weights from a local path or torchvision's cache; never downloads."""
    if isinstance(pretrained, str):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"no {name} weights at this path.", path=path,
                                      fix="give the path of a torchvision state dict, or pretrained=false")
        return load_state_dict_file(path, f"{name} weights", "give the path of a torchvision state dict")
    found = cached_checkpoint(f"{name}-*.pth")
    if found is None:
        raise MissingWeightsError(
            f"ImageNet {name} weights are not in torchvision's cache.", path=hub_checkpoint_dir(),
            fix=f"download them once (torchvision.models.{name}(weights='DEFAULT')) or pass a local path",
        )
    return load_state_dict_file(found, f"{name} weights", f"re-download torchvision's {name} weights")


def xyz_image(xyz: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The organized xyz as a network input: centred on the valid pixels, unit std, background 0.

    Args:
        xyz: ``(H, W, 3)``; valid: ``(H, W)`` bool.

    Returns:
        ``(3, H, W)`` float.
    """
    points = xyz[valid]
    centred = (xyz - points.mean(dim=0)) / points.std().clamp_min(1e-8)
    return (centred * valid[..., None]).permute(2, 0, 1).float()


def soft_interest_map(generator: GeneratorCNN, xyz: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The soft mask ``M`` of Sec. 3.2.

    Args:
        generator: the (random) CNN.
        xyz: ``(H, W, 3)`` organized grid; valid: ``(H, W)`` bool.

    Returns:
        ``(H, W)`` in [0, 1].
    """
    stages = generator(xyz_image(xyz, valid)[None].to(next(generator.parameters()).device))
    size = stages[0].shape[-2:]
    maps = []
    for activation in stages:
        summed = activation.sum(dim=1, keepdim=True)
        lo, hi = summed.amin(), summed.amax()
        normalised = (summed - lo) / (hi - lo).clamp_min(1e-12)
        maps.append(F.interpolate(normalised, size=size, mode="bilinear", align_corners=False))
    fused = torch.stack(maps).mean(dim=0)
    return F.interpolate(fused, size=tuple(xyz.shape[:2]), mode="bilinear", align_corners=False)[0, 0].to(xyz.device)


def interest_region(
    xyz: torch.Tensor,
    valid: torch.Tensor,
    soft_map: torch.Tensor,
    top_fraction: float = 0.001,
    region_size: int = 32,
) -> torch.Tensor:
    """The points of interest of a task-irrelevant sample and their surroundings.

    The region is centred on the strongest *cluster* of points of interest
    (:func:`~.grid_defects.interest_centre`), not on the centroid of all of them: seeds spread over
    several edges have a centroid that can lie on nothing of interest.

    Args:
        xyz: ``(H, W, 3)``; valid: ``(H, W)`` bool; soft_map: ``(H, W)`` from :func:`soft_interest_map`.
        top_fraction: fraction of the *valid* pixels taken as points of interest (at least 1).
        region_size: points returned (the cluster centre's nearest valid points; capped by the
            number of valid points).

    Returns:
        ``(R, 3)`` region points (in the sample's own coordinates).
    """
    points = xyz[valid]
    row, col = interest_centre(valid, soft_map, top_fraction)
    index, _ = knn(points, xyz[row, col][None], min(region_size, points.shape[0]))
    return points[index[0]]


@dataclass
class PseudoAnomaly:
    """One generated pseudo-anomaly.

    Attributes:
        points: ``(N', 3)`` the modified cloud.
        labels: ``(N',) bool`` exact per-point labels (True = pseudo-anomalous).
        patch_index: ``(k,) long`` the pseudo-anomalous patch (indices into ``points``).
        kind: ``"adding"`` or ``"removing"``.
    """

    points: torch.Tensor
    labels: torch.Tensor
    patch_index: torch.Tensor
    kind: str


def _rms_radius(points: torch.Tensor) -> torch.Tensor:
    return (points - points.mean(dim=0)).square().sum(dim=1).mean().sqrt()


def add_points(
    cloud: torch.Tensor,
    region: torch.Tensor,
    anchor: int,
    patch_size: int,
    *,
    patch_index: torch.Tensor | None = None,
    scale: float = 1.0,
) -> PseudoAnomaly:
    """Adding-point pseudo-anomaly: attach ``region`` to ``cloud`` at point ``anchor``.

    The region is centred on the anchor and rescaled so its RMS radius is ``scale`` times that of
    the anchor's ``patch_size`` nearest cloud points (task-irrelevant samples may come in other
    units / sizes).

    Args:
        cloud: ``(N, 3)`` normal cloud.
        region: ``(R, 3)`` interest region of a task-irrelevant sample.
        anchor: index of the anchor point in ``cloud``.
        patch_size: k of the patch.
        patch_index: cloud points forming the patch instead of the anchor's kNN over the union
            (e.g. the anchor's grid cell); the added points are always part of the patch.
        scale: region size relative to the patch.

    Returns:
        :class:`PseudoAnomaly` whose points are ``cat(cloud, placed region)``.
    """
    anchor_point = cloud[anchor : anchor + 1]
    local, _ = knn(cloud, anchor_point, min(patch_size, cloud.shape[0]))
    target = _rms_radius(cloud[local[0]])
    centred = region - region.mean(dim=0, keepdim=True)
    placed = centred * (scale * target / _rms_radius(region).clamp_min(1e-12)) + anchor_point
    union = torch.cat([cloud, placed.to(cloud.dtype)])
    labels = torch.zeros(union.shape[0], dtype=torch.bool, device=cloud.device)
    labels[cloud.shape[0]:] = True
    added = torch.arange(cloud.shape[0], union.shape[0], device=cloud.device)
    if patch_index is None:
        patch, _ = knn(union, anchor_point, min(patch_size, union.shape[0]))
        patch = patch[0]
    else:
        patch = torch.cat([patch_index.to(cloud.device), added])
    return PseudoAnomaly(union, labels, patch, "adding")


def remove_points(
    cloud: torch.Tensor,
    anchor: int,
    patch_size: int,
    drop_fraction: float,
    *,
    patch_index: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    mode: str = "random",
) -> PseudoAnomaly:
    """Removing-point pseudo-anomaly: drop ``round(drop_fraction * k)`` points of the anchor's patch.

    Args:
        cloud: ``(N, 3)`` normal cloud.
        anchor: index of the anchor point.
        patch_size: k of the anchor's kNN patch.
        drop_fraction: share of the patch's points removed, in [0, 1).
        patch_index: the patch's cloud indices instead of the kNN (e.g. a grid cell).
        generator: random source of the dropped points.
        mode: ``"random"`` (points drawn at random over the patch: the paper's wording) or
            ``"hole"`` (the points nearest to a random patch point: a contiguous hole / cut).

    Returns:
        :class:`PseudoAnomaly` on the remaining points (original order kept); the patch is the
        patch's remaining points, labelled anomalous.
    """
    if mode not in {"random", "hole"}:
        msg = f"removal mode must be 'random' or 'hole', got {mode!r}."
        raise ValueError(msg)
    if not 0 <= drop_fraction < 1:
        msg = f"drop_fraction must be in [0, 1), got {drop_fraction}."
        raise ValueError(msg)
    if patch_index is None:
        patch_index = knn(cloud, cloud[anchor : anchor + 1], min(patch_size, cloud.shape[0]))[0][0]
    patch_index = patch_index.to(cloud.device)
    num_drop = round(drop_fraction * patch_index.numel())
    if mode == "hole":
        # a contiguous hole: the patch points nearest to a random point of the patch
        centre = cloud[patch_index[int(torch.randint(patch_index.numel(), (1,), generator=generator))]]
        order = (cloud[patch_index] - centre).norm(dim=1).argsort(stable=True)
    else:
        order = torch.randperm(patch_index.numel(), generator=generator).to(cloud.device)
    dropped = patch_index[order[:num_drop]]
    keep = torch.ones(cloud.shape[0], dtype=torch.bool, device=cloud.device)
    keep[dropped] = False
    in_patch = torch.zeros_like(keep)
    in_patch[patch_index] = True
    new_index = torch.cumsum(keep, 0) - 1  # old index -> index among the kept points
    labels = in_patch[keep]
    patch = new_index[patch_index[keep[patch_index]]]
    return PseudoAnomaly(cloud[keep], labels, patch, "removing")


def paper_cell_negatives(
    points: torch.Tensor,
    patches: CellPatches,
    count: int,
    regions: list[torch.Tensor],
    generator: torch.Generator,
    *,
    min_patch_points: int = 4,
    adding_ratio: float = 0.5,
    negative_patch: str = "cell",
    adding_scale: float = 1.0,
    depth_consistent: bool = False,
    drop_fraction: tuple[float, float] = (0.3, 0.7),
    removal: str = "hole",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's generator, one cell at a time: ``count`` pseudo-anomalous patches, the first
    ``round(adding_ratio * count)`` adding points (when ``regions`` exist), the rest removing them.

    Args:
        points: ``(N, 3)`` the cloud's valid points (row-major, as ``patches.point_index`` counts).
        patches: the cloud's cells; anchors are drawn in cells with ``>= min_patch_points`` points.
        count: patches to make; regions: ``(R, 3)`` interest regions (:func:`interest_region`).
        generator: random source.
        negative_patch: ``"cell"`` (the anchor's cell ∪ added points) or ``"knn"`` (the literal kNN).
        adding_scale: see :func:`add_points`; drop_fraction, removal: see :func:`remove_points`.
        depth_consistent: keep only the camera-visible points of an adding cell (:func:`camera_visible`).

    Returns:
        ``(patches (count, n, 3) centred on their distinct points' mean, counts (count,) long)``
        with ``n = patches.points.shape[1]`` and counts = distinct points (at most n).
    """
    n = patches.points.shape[1]
    candidates = (patches.counts >= min_patch_points).nonzero().squeeze(1)
    if candidates.numel() == 0:
        candidates = torch.arange(patches.counts.numel(), device=points.device)
    num_adding = round(adding_ratio * count) if regions else 0
    out, counts = [], []
    for i in range(count):
        cell = int(candidates[torch.randint(candidates.numel(), (1,), generator=generator)])
        members = patches.point_index[cell, : int(patches.counts[cell])].unique()
        anchor = int(members[torch.randint(members.numel(), (1,), generator=generator)])
        given = members if negative_patch == "cell" else None
        if i < num_adding:
            region = regions[int(torch.randint(len(regions), (1,), generator=generator))].to(points)
            made = add_points(points, region, anchor, n, patch_index=given, scale=adding_scale)
            if depth_consistent and given is not None:
                # Only the points nearest the camera on each pixel ray survive (no layer hidden
                # under the added points); the uncovered rays keep the surface.
                keep = camera_visible(made.points[made.patch_index], points[given])
                if int(keep.sum()) >= min_patch_points:
                    made = PseudoAnomaly(made.points, made.labels, made.patch_index[keep], made.kind)
        else:
            lo, hi = drop_fraction
            fraction = lo + (hi - lo) * float(torch.rand((), generator=generator))
            made = remove_points(points, anchor, n, fraction, patch_index=given, generator=generator, mode=removal)
        patch = made.points[made.patch_index]
        fitted = fit_patch_size(patch, n, generator)
        # Centre on the mean of the distinct points, exactly as normal and test cells are: the
        # mean of a cycled (padded) patch is shifted towards the repeated points, a cue that
        # would mark every padded pseudo-anomaly and exists in no real cell.
        centre = (patch if patch.shape[0] < n else fitted).mean(dim=0, keepdim=True)
        out.append(fitted - centre)
        counts.append(min(patch.shape[0], n))
    if not out:
        return points.new_zeros((0, n, 3)), torch.zeros(0, dtype=torch.long, device=points.device)
    return torch.stack(out), torch.tensor(counts, dtype=torch.long, device=points.device)


def match_counts(negative_counts: torch.Tensor, pool_counts: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Normal cells drawn with exactly the pseudo-anomalous cells' point-count distribution.

    A cell's point count is not a defect cue (silhouette cells are sparse, real bulges are full), so
    positives and negatives must not differ in it. Each negative gets a pool cell with the same
    count — without repetition while the pool's cells of that count last, then cycling; negatives
    whose count no pool cell has are dropped.

    Args:
        negative_counts: ``(Q,) long`` points per pseudo-anomalous cell.
        pool_counts: ``(M,) long`` points per normal cell available as a positive.
        generator: random source.

    Returns:
        ``(kept (Q,) bool, chosen (Q',) long)``: which negatives keep a partner, and the partners'
        pool indices in the order of the kept negatives (``Q' = kept.sum()``).
    """
    partner = torch.full_like(negative_counts, -1)
    for count in negative_counts.unique().tolist():
        wanted = (negative_counts == count).nonzero().squeeze(1)
        available = (pool_counts == count).nonzero().squeeze(1)
        if available.numel() == 0:
            continue
        shuffled = available[torch.randperm(available.numel(), generator=generator).to(available.device)]
        partner[wanted] = shuffled[torch.arange(wanted.numel(), device=wanted.device) % shuffled.numel()]
    kept = partner >= 0
    return kept, partner[kept]


def camera_visible(points: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Which of ``points`` a depth camera at the origin (looking along +z) would see inside the
    pixel footprint of ``reference`` — what an organized (depth-map) scan of the modified surface
    keeps: one point per pixel ray, the nearest.

    Rays are binned by ``(x/z, y/z)`` on the reference's own pixel lattice (pitch: the median
    nearest-neighbour ray distance of the reference points); points outside the footprint's box
    (half a pitch of margin) or not in front of the camera are dropped.

    Args:
        points: ``(M, 3)`` camera-frame points (e.g. a cell and the points added to it).
        reference: ``(K, 3)`` the unmodified cell's points (defines footprint and pitch).

    Returns:
        ``(M,) bool`` visible points (at least one per occupied ray bin).
    """
    def rays(xyz: torch.Tensor) -> torch.Tensor:
        return xyz[:, :2] / xyz[:, 2:3].clamp_min(1e-9)

    ref = rays(reference)
    lo, hi = ref.amin(dim=0), ref.amax(dim=0)
    if ref.shape[0] > 1:
        gaps = torch.cdist(ref, ref).fill_diagonal_(float("inf")).amin(dim=1)
        gaps = gaps[gaps > 0]  # resized grids may repeat a point
        pitch = float(gaps.median().clamp_min(1e-12)) if gaps.numel() else 1e-3 * float(reference[0, 2].abs())
    else:
        pitch = 1e-3 * float(reference[0, 2].abs().clamp_min(1e-9))
    uv = rays(points)
    inside = (points[:, 2] > 0) & ((uv >= lo - pitch / 2) & (uv <= hi + pitch / 2)).all(dim=1)
    visible = torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
    candidates = inside.nonzero().squeeze(1)
    if candidates.numel() == 0:
        return visible
    bins = torch.floor((uv[candidates] - lo) / pitch + 0.5).long().clamp_min(0)
    key = bins[:, 0] * (int(bins[:, 1].max()) + 1) + bins[:, 1]
    # nearest point per ray bin: sort by (bin, depth) and keep each bin's first
    order = torch.argsort(points[candidates, 2], stable=True)
    order = order[torch.argsort(key[order], stable=True)]
    sorted_keys = key[order]
    first = torch.ones_like(sorted_keys, dtype=torch.bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    visible[candidates[order[first]]] = True
    return visible


__all__ = [
    "GENERATORS",
    "GeneratorCNN",
    "PseudoAnomaly",
    "add_points",
    "camera_visible",
    "interest_region",
    "match_counts",
    "paper_cell_negatives",
    "remove_points",
    "soft_interest_map",
    "xyz_image",
]
