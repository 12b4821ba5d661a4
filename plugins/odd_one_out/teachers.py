"""Distillation teachers that need no downloaded weights: one trained here, one privileged upper bound.

The paper distils DINOv2, whose part-level features make Eq. 5's correspondences land on the same
part of another instance. Without those weights, a teacher must learn something comparable from
the training scenes themselves, or be given it:

* :class:`ContrastiveTeacher` (``teacher: contrastive``): a small CNN trained **self-supervised on
  the training renders only**, by dense multi-view contrast. Two views of a training scene see the
  same surface point at pixels that the known depth and camera poses relate; the teacher learns to
  give those two pixels the same feature and other points of the same object different ones
  (InfoNCE, negatives from the same object, so the features describe *where on the object* a pixel
  is, which carries over to the other instances of the scene). Object poses, labels and other
  scenes are never used. :meth:`ContrastiveTeacher.fit` trains it once, before the distillation;
  afterwards it is frozen like any teacher.
* :class:`CanonicalTeacher` (``teacher: canonical``): a **privileged** target, not a network. Each
  object pixel gets a random-Fourier encoding of its position in its object's own frame (box-
  normalised coordinates from the depth and the ground-truth object pose) and of its surface normal
  in that frame. Identical parts of two instances get identical targets, so it is an upper bound of
  what distillation can bring to Eq. 5 (it needs depth and object poses, which only synthetic or
  released training scenes have).

Both return ``(N, C, h, w)`` maps like the image teachers of :mod:`.backbones`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from anomalib_3d.data.scenes import SceneBatch
from anomalib_3d.render.volume import camera_rays

__all__ = [
    "CanonicalTeacher",
    "ContrastiveTeacher",
    "backproject_pixels",
    "canonical_coordinates",
    "view_correspondences",
]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def backproject_pixels(depth: Tensor, intrinsics: Tensor, world_to_camera: Tensor) -> Tensor:
    """World position of every pixel centre from its depth.

    Args:
        depth: ``(..., H, W)`` camera depth in metres (0 = no surface).
        intrinsics: ``(..., 3, 3)``; world_to_camera: ``(..., 4, 4)`` (OpenCV, as in the scene data).

    Returns:
        ``(..., H, W, 3)`` world points (meaningless where ``depth == 0``).
    """
    height, width = depth.shape[-2:]
    lead = depth.shape[:-2]
    dtype = depth.dtype
    origins, directions, z_per_metre = camera_rays(intrinsics.reshape(1, -1, 3, 3).to(dtype),
                                                   world_to_camera.reshape(1, -1, 4, 4).to(dtype), (height, width))
    # The ray of a pixel reaches camera depth d after d / z_per_metre metres.
    distance = depth.reshape(1, -1, height, width) / z_per_metre
    world = origins[:, :, None, None, :] + directions * distance.unsqueeze(-1)
    return world.reshape(*lead, height, width, 3)


def canonical_coordinates(batch: SceneBatch, views: Tensor | slice) -> tuple[Tensor, Tensor, Tensor]:
    """Object-frame coordinates and normals of every object pixel of the chosen views.

    Args:
        batch: scenes with ``depth``, ``object_index``, ``object_poses`` and ``object_sizes``.
        views: which views (index or boolean mask over ``V``).

    Returns:
        ``coords (B, v, H, W, 3)`` in box units (the object's box spans ``[-0.5, 0.5]^3``),
        ``normals (B, v, H, W, 3)`` unit normals in the object's frame (from depth differences; 0
        where a neighbouring pixel is not on the same object),
        ``valid (B, v, H, W)`` bool: an object pixel with depth.

    Raises:
        ValueError: a field is missing.
    """
    missing = [n for n in ("depth", "object_index", "object_poses", "object_sizes") if getattr(batch, n) is None]
    if missing:
        msg = (f"the canonical teacher needs {missing} in the batch: load depth (MultiViewScenes(load_depth=True)) "
               "of scenes whose metadata has rotation_matrix.")
        raise ValueError(msg)
    depth = batch.depth[:, views].float()
    index = batch.object_index[:, views]
    world = backproject_pixels(depth, batch.intrinsics[:, views].float(), batch.world_to_camera[:, views].float())
    ptr = batch.object_ptr[:-1].view(-1, 1, 1, 1)
    valid = (index >= 0) & (depth > 0)
    flat = (index + ptr).clamp(min=0, max=max(batch.object_poses.shape[0] - 1, 0))
    pose = batch.object_poses.float()[flat]  # (B, v, H, W, 4, 4)
    sizes = batch.object_sizes.float()[flat]
    local = torch.einsum("...ji,...j->...i", pose[..., :3, :3], world - pose[..., :3, 3])
    coords = local / sizes
    # Normals from the cross product of the back-projected neighbours (central differences); 0 where a
    # neighbour is off the object (silhouette edges, image border), whose difference would be meaningless.
    du = F.pad(world[..., :, 2:, :] - world[..., :, :-2, :], (0, 0, 1, 1))
    dv = F.pad(world[..., 2:, :, :] - world[..., :-2, :, :], (0, 0, 0, 0, 1, 1))
    same = valid.unsqueeze(-1) & (index.unsqueeze(-1) >= 0)
    horizontal = F.pad((index[..., :, 2:] == index[..., :, :-2]) & valid[..., :, 2:] & valid[..., :, :-2], (1, 1))
    vertical = F.pad((index[..., 2:, :] == index[..., :-2, :]) & valid[..., 2:, :] & valid[..., :-2, :], (0, 0, 1, 1))
    known = same[..., 0] & horizontal & vertical
    normal_world = F.normalize(torch.cross(du, dv, dim=-1), dim=-1, eps=1e-9) * known.unsqueeze(-1)
    normals = torch.einsum("...ji,...j->...i", pose[..., :3, :3], normal_world)
    return coords, normals, valid


class CanonicalTeacher(nn.Module):
    """Privileged targets: random Fourier features of (object-frame position, normal) per pixel.

    ``target = sqrt(2 / C) cos(W u + b)`` with ``u = [coords, normal_weight * normal]`` and a fixed,
    seeded ``W ~ N(0, frequency^2)``: the dot product of two targets approximates a Gaussian kernel
    of the distance between their canonical positions, which is what Eq. 5's top-k dot products
    should measure. Pixels of no object get 0.

    Args:
        out_dim: channels (the width of β).
        frequency: bandwidth, radians per box length.
        normal_weight: weight of the normal against the position.
        seed: seed of ``W`` and ``b``.
    """

    uses_scene_geometry = True

    def __init__(self, out_dim: int, frequency: float = 6.0, normal_weight: float = 0.3, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(int(seed))
        self.register_buffer("weight", torch.randn(out_dim, 6, generator=generator) * float(frequency))
        self.register_buffer("phase", torch.rand(out_dim, generator=generator) * 2 * math.pi)
        self.normal_weight = float(normal_weight)
        self.out_dim = int(out_dim)

    @torch.no_grad()
    def scene_targets(self, batch: SceneBatch, views: Tensor | slice) -> Tensor:
        """``(B, v, C, H, W)`` targets of the chosen views at the image resolution."""
        coords, normals, valid = canonical_coordinates(batch, views)
        encoded = torch.cat([coords, self.normal_weight * normals], dim=-1) @ self.weight.T + self.phase
        targets = math.sqrt(2.0 / self.out_dim) * torch.cos(encoded) * valid.unsqueeze(-1)
        return targets.permute(0, 1, 4, 2, 3)


# ----------------------------------------------------------------------------------------------
# self-supervised teacher


def view_correspondences(
    batch: SceneBatch,
    scene: int,
    view_a: int,
    view_b: int,
    per_object: int = 64,
    depth_tolerance: float = 0.02,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Pixels of view ``a`` and the pixels of view ``b`` that see the same surface point.

    Up to ``per_object`` random object pixels of view ``a`` per object are lifted with their depth
    and projected into view ``b``; a pair is kept when the point lands inside view ``b`` on a pixel
    whose depth agrees within ``depth_tolerance`` metres (not occluded) and whose segmentation is the
    same object. Uses only depth, camera poses and the segmentations.

    Returns:
        ``xy_a (P, 2)``, ``xy_b (P, 2)`` continuous pixel positions (column, row) and ``owner (P,)``
        long scene-local object of each pair.
    """
    depth, index = batch.depth[scene].float(), batch.object_index[scene]
    intrinsics, poses = batch.intrinsics[scene].float(), batch.world_to_camera[scene].float()
    height, width = depth.shape[-2:]
    chosen = []
    for obj in torch.unique(index[view_a][index[view_a] >= 0]).tolist():
        pixels = torch.nonzero((index[view_a] == obj) & (depth[view_a] > 0))
        if len(pixels) > per_object:
            pixels = pixels[torch.randperm(len(pixels), generator=generator)[:per_object]]
        chosen.append(pixels)
    empty = torch.zeros(0, 2)
    if not chosen:
        return empty, empty, torch.zeros(0, dtype=torch.long)
    pixels = torch.cat(chosen)
    rows, cols = pixels[:, 0], pixels[:, 1]
    world = backproject_pixels(depth[view_a], intrinsics[view_a], poses[view_a])[rows, cols]  # (P, 3)
    camera = world @ poses[view_b, :3, :3].T + poses[view_b, :3, 3]
    z = camera[:, 2]
    projected = camera @ intrinsics[view_b].T
    xy_b = projected[:, :2] / z.clamp(min=1e-6).unsqueeze(1)
    col_b, row_b = torch.floor(xy_b[:, 0]).long(), torch.floor(xy_b[:, 1]).long()
    inside = (z > 1e-3) & (col_b >= 0) & (col_b < width) & (row_b >= 0) & (row_b < height)
    col_b, row_b = col_b.clamp(0, width - 1), row_b.clamp(0, height - 1)
    owner = index[view_a][rows, cols]
    keep = inside & ((depth[view_b][row_b, col_b] - z).abs() < depth_tolerance) & (index[view_b][row_b, col_b] == owner)
    xy_a = torch.stack([cols.float() + 0.5, rows.float() + 0.5], dim=1)
    return xy_a[keep], xy_b[keep], owner[keep]


def _sample(maps: Tensor, xy: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """Bilinear features ``(P, C)`` of a map ``(C, h, w)`` at continuous image pixels ``xy (P, 2)``."""
    height, width = image_hw
    grid = torch.stack([xy[:, 0] / width * 2 - 1, xy[:, 1] / height * 2 - 1], dim=1).view(1, 1, -1, 2)
    return F.grid_sample(maps.unsqueeze(0), grid.to(maps.dtype), mode="bilinear", align_corners=False)[0, :, 0].T


class ContrastiveTeacher(nn.Module):
    """A small CNN trained by dense multi-view contrast on the training renders (then frozen).

    Stride 4 (like the small encoder) with two dilated layers for a wider view of the object
    (receptive field ~60 px). ``(N, 3, H, W) in [0, 1] -> (N, out_dim, H/4, W/4)``.

    Args:
        out_dim: channels (the width of β).
        width: hidden channels.
    """

    def __init__(self, out_dim: int, width: int = 48) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation),
                    nn.GroupNorm(4, cout), nn.ReLU(inplace=True)]

        self.net = nn.Sequential(
            *block(3, width, stride=2), *block(width, width, stride=2), *block(width, width),
            *block(width, width, dilation=2), *block(width, width, dilation=4), nn.Conv2d(width, out_dim, 1),
        )
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.out_dim = int(out_dim)
        self.requires_grad_(False)
        self.eval()

    @property
    def needs_fit(self) -> bool:
        """True until :meth:`fit` has run or fitted weights were loaded."""
        return not bool(self.fitted)

    def train(self, mode: bool = True) -> ContrastiveTeacher:
        """Frozen outside :meth:`fit`: always in eval mode."""
        del mode
        return super().train(False)

    def features(self, images: Tensor) -> Tensor:
        """``(N, 3, H, W)`` -> ``(N, out_dim, H/4, W/4)`` (with gradients, for :meth:`fit`)."""
        return self.net((images - self.mean) / self.std)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return self.features(images)

    def fit(
        self,
        batches: Iterable[SceneBatch],
        epochs: int = 4,
        learning_rate: float = 1e-3,
        temperature: float = 0.1,
        per_object: int = 64,
        seed: int = 0,
    ) -> list[float]:
        """Train on multi-view correspondences (InfoNCE per object, both directions), then freeze.

        Args:
            batches: a re-iterable of training :class:`SceneBatch` with ``depth`` and ``object_index``
                (e.g. the training DataLoader); only their images, depth, segmentations and cameras
                are read.
            epochs: passes over ``batches``.
            learning_rate: Adam's rate.
            temperature: InfoNCE temperature.
            per_object: sampled pixels per object and view pair.
            seed: seed of the pixel sampling.

        Returns:
            The mean loss of every epoch.

        Raises:
            ValueError: the batches carry no depth or segmentation.
        """
        generator = torch.Generator().manual_seed(int(seed))
        self.requires_grad_(True)
        nn.Module.train(self, True)
        optimizer = torch.optim.Adam(self.parameters(), lr=learning_rate)
        history = []
        try:
            for _ in range(int(epochs)):
                losses = []
                for batch in batches:
                    if batch.depth is None or batch.object_index is None:
                        msg = ("the contrastive teacher learns from depth and segmentations: load the training scenes "
                               "with depth (MultiViewScenes(load_depth=True)).")
                        raise ValueError(msg)
                    loss = self._batch_loss(batch, temperature, per_object, generator)
                    if loss is None:
                        continue
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    losses.append(float(loss.detach()))
                history.append(sum(losses) / max(len(losses), 1))
        finally:
            self.requires_grad_(False)
            nn.Module.train(self, False)
        self.fitted.fill_(True)
        return history

    def _batch_loss(self, batch: SceneBatch, temperature: float, per_object: int,
                    generator: torch.Generator) -> Tensor | None:
        device = self.mean.device
        images = batch.image.to(device)
        maps = self.features(images.flatten(0, 1))
        maps = maps.view(*images.shape[:2], *maps.shape[1:])
        image_hw = tuple(images.shape[-2:])
        views = images.shape[1]
        terms = []
        for scene in range(images.shape[0]):
            # Each view against a random other view of the same scene.
            partners = (torch.arange(views) + torch.randint(1, views, (views,), generator=generator)) % views
            for view_a, view_b in zip(range(views), partners.tolist(), strict=True):
                xy_a, xy_b, owner = view_correspondences(batch, scene, view_a, view_b, per_object, generator=generator)
                for obj in torch.unique(owner).tolist():
                    pick = owner == obj
                    if int(pick.sum()) < 2:
                        continue
                    f_a = F.normalize(_sample(maps[scene, view_a], xy_a[pick].to(device), image_hw), dim=1)
                    f_b = F.normalize(_sample(maps[scene, view_b], xy_b[pick].to(device), image_hw), dim=1)
                    logits = f_a @ f_b.T / temperature
                    target = torch.arange(len(logits), device=device)
                    terms.append(0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)))
        return torch.stack(terms).mean() if terms else None
