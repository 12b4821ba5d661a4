"""3DzAL as a plain PyTorch model: features, pseudo-anomaly training losses, memory bank, scores.

Data walk of one organized cloud (points + ``grid_index`` into an (H, W) grid):

1. scattered back to its grid and nearest-resized to ``grid_size`` (224 in the paper);
2. cut into ``patch_size``-pixel cells (8 x 8 → 28 x 28 patches); a cell with at least one point is
   a patch;
3. patch features = concatenation of the active branches: RGB (BTF's frozen WideResNet-50 layers
   2+3 and pooling), FPFH (33-d from ``anomalib_3d.ops.fpfh``, BTF's ``grid_patch_features``) and f_theta (PointNet++ on the
   patch's points); each branch is divided by its mean training norm so no branch drowns the others;
4. distance score: nearest memory-bank distance per patch (divided by a training scale), object
   score by PatchCore's re-weighting over ``num_neighbors`` (3) bank entries;
5. classification score: g_phi's anomalous probability per patch after the input perturbation;
6. final map ``alpha * distance + beta * classification`` per patch → bilinear to the grid →
   Gaussian blur (sigma in model-grid pixels) → bilinear to the input grid → read at every point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from anomalib_3d.data.adapters import resize_organized
from anomalib_3d.ops import fpfh
from anomalib_3d.ops.memory_bank import MemoryBank

from .loss import ThreeDzALLoss
from .pointnet2 import PatchPointNet2
from .pseudo_anomaly import (
    GeneratorCNN,
    add_points,
    camera_visible,
    interest_region,
    remove_points,
    soft_interest_map,
)

FPFH_DIM = 33


@dataclass
class OrganizedCloud:
    """One cloud on the model grid.

    Attributes:
        xyz: ``(G, G, 3)``; valid: ``(G, G)`` bool (points used by the model);
        rgb: ``(3, G, G)`` in [0, 1] or None; source_shape: (H, W) of the input grid;
        grid_index: ``(N,) long`` input points' pixels in the input grid; key: cache key (path).
    """

    xyz: torch.Tensor
    valid: torch.Tensor
    rgb: torch.Tensor | None
    source_shape: tuple[int, int]
    grid_index: torch.Tensor
    key: str | None = None


@dataclass
class CellPatches:
    """The non-empty cells of one cloud as fixed-size point patches.

    Attributes:
        points: ``(P, n, 3)`` raw coordinates (padded by cycling through the cell's points).
        centers: ``(P, 3)`` mean of each cell's points.
        counts: ``(P,) long`` points per cell; cells: ``(P,) long`` flat cell index (row * w + col);
        point_index: ``(P, n) long`` index of each slot into the cloud ``xyz[valid]`` (row-major).
    """

    points: torch.Tensor
    centers: torch.Tensor
    counts: torch.Tensor
    cells: torch.Tensor
    point_index: torch.Tensor


@dataclass
class ThreeDzALPrediction:
    """Outputs of :meth:`ThreeDzALModel.predict`.

    Attributes:
        anomaly_map: ``(ΣN,)`` per input point; pred_score: ``(B,)``;
        distance_maps, classification_maps: ``(B, G, G)`` (zeros when the part is off);
        valid: ``(B, G, G)`` bool model-grid pixels with a point.
    """

    anomaly_map: torch.Tensor
    pred_score: torch.Tensor
    distance_maps: torch.Tensor
    classification_maps: torch.Tensor
    valid: torch.Tensor


def perturb_patches(classifier: nn.Module, patches: torch.Tensor, epsilon: float, direction: str = "paper") -> torch.Tensor:
    """Eq. 8: move each patch's coordinates by ``epsilon`` along the sign of the gradient of
    ``-log softmax_yhat(g(x))`` (yhat = the predicted class).

    ``direction="paper"`` adds the step (lowers the predicted class's probability, as the paper's
    text says); ``"odin"`` subtracts it (ODIN's sharpening).

    Args:
        classifier: ``(P, n, 3) -> (P, 2)`` logits.
        patches: ``(P, n, 3)``.
        epsilon: step size (0 returns the input).

    Returns:
        ``(P, n, 3)`` perturbed patches (detached).
    """
    if direction not in {"paper", "odin"}:
        msg = f"perturbation_direction must be 'paper' or 'odin', got {direction!r}."
        raise ValueError(msg)
    if epsilon == 0 or patches.shape[0] == 0:
        return patches.detach()
    # Evaluation loops run in inference mode; the input gradient needs a normal autograd graph.
    with torch.inference_mode(False), torch.enable_grad():
        x = patches.detach().clone().requires_grad_(True)
        logits = classifier(x)
        predicted = logits.argmax(dim=-1)
        loss = F.cross_entropy(logits, predicted, reduction="sum")  # sum of -log softmax_yhat per patch
        (gradient,) = torch.autograd.grad(loss, x)
    sign = 1.0 if direction == "paper" else -1.0
    return (patches.detach() + sign * epsilon * gradient.sign()).detach()


def fit_patch_size(points: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(k, 3)`` → ``(size, 3)``: a random subset when ``k > size``, cycled repetition when ``k < size``."""
    k = points.shape[0]
    if k >= size:
        if k == size:
            return points
        return points[torch.randperm(k, generator=generator)[:size].to(points.device)]
    return points[torch.arange(size, device=points.device) % k]


class ThreeDzALModel(nn.Module):
    """The 3DzAL network, memory bank and scoring (see the module docstring and the README).

    Args: see :class:`~anomalib_3d_plugins.threedzal.lightning_model.ThreeDzAL`.
    """

    def __init__(
        self,
        grid_size: int = 224,
        patch_size: int = 8,
        rgb_backbone: str | None = None,
        rgb_weights: str | None = None,
        use_fpfh: bool = True,
        fpfh_radius: float = 0.25,
        fpfh_normal_k: int = 30,
        fpfh_max_nn: int = 100,
        learned_branch: bool = True,
        feature_dim: int = 32,
        pointnet_centroids: int = 16,
        pointnet_group_size: int = 8,
        pointnet_widths: tuple[int, int] = (32, 64),
        classifier: bool = True,
        interest_source: str = "cnn",
        generator_backbone: str = "resnet50",
        generator_pretrained: bool | str = False,
        top_fraction: float = 0.001,
        region_size: int = 32,
        adding_ratio: float = 0.5,
        negative_ratio: float = 1.0,
        drop_fraction: tuple[float, float] = (0.3, 0.7),
        adding_scale: float = 1.0,
        removal: str = "hole",
        negative_patch: str = "cell",
        positives_per_sample: int = 64,
        min_patch_points: int = 4,
        rotation_augment: bool = True,
        irrelevant_positives: int = 0,
        contrastive_loss: bool = True,
        disentanglement_loss: bool = True,
        lambda_contrastive: float = 1.0,
        lambda_disentanglement: float = 100.0,
        temperature: float = 0.07,
        disentanglement_mode: str = "squared",
        perturbation: bool = True,
        epsilon: float = 0.1,
        perturbation_direction: str = "paper",
        coreset_ratio: float = 0.1,
        coreset_projection_dim: int | None = 128,
        num_neighbors: int = 3,
        blur_sigma: float = 4.0,
        alpha: float = 1.0,
        beta: float = 1.0,
        learned_weight: float = 1.0,
        map_centering: bool = False,
        normalize_learned: bool = False,
        depth_consistent: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if grid_size % patch_size:
            msg = f"grid_size ({grid_size}) must be a multiple of patch_size ({patch_size})."
            raise ValueError(msg)
        if rgb_backbone not in {None, "wide_resnet50_2"}:
            msg = f"rgb_backbone must be 'wide_resnet50_2' or null, got {rgb_backbone!r}."
            raise ValueError(msg)
        if interest_source not in {"cnn", "random"}:
            msg = f"interest_source must be 'cnn' (random-CNN points of interest) or 'random', got {interest_source!r}."
            raise ValueError(msg)
        if negative_patch not in {"cell", "knn"}:
            msg = f"negative_patch must be 'cell' or 'knn', got {negative_patch!r}."
            raise ValueError(msg)
        if not 0 <= adding_ratio <= 1:
            msg = f"adding_ratio must be in [0, 1], got {adding_ratio}."
            raise ValueError(msg)
        if not (use_fpfh or learned_branch or rgb_backbone):
            msg = "at least one feature branch (rgb_backbone, use_fpfh, learned_branch) must be on."
            raise ValueError(msg)
        self.grid_size, self.patch_size = int(grid_size), int(patch_size)
        self.cells_per_side = self.grid_size // self.patch_size
        self.points_per_patch = self.patch_size**2
        self.use_fpfh = use_fpfh
        self.fpfh_radius, self.fpfh_normal_k, self.fpfh_max_nn = float(fpfh_radius), int(fpfh_normal_k), int(fpfh_max_nn)
        self.rgb = None
        if rgb_backbone is not None:
            # BTF's RGB branch (one implementation); imported here, not at module import, because
            # the BTF package imports its anomalib model.
            from anomalib_3d.features import RGBBackbone

            self.rgb = RGBBackbone(weights=rgb_weights, pretrained=True)
        self.feature_net = PatchPointNet2(feature_dim, pointnet_centroids, pointnet_group_size, pointnet_widths) if learned_branch else None
        self.classifier = PatchPointNet2(2, pointnet_centroids, pointnet_group_size, pointnet_widths) if classifier else None
        self.interest_source = interest_source
        self.generator_backbone = generator_backbone
        self.generator_pretrained = generator_pretrained
        self.top_fraction, self.region_size = float(top_fraction), int(region_size)
        self.adding_ratio, self.negative_ratio = float(adding_ratio), float(negative_ratio)
        self.drop_fraction = (float(drop_fraction[0]), float(drop_fraction[1]))
        self.adding_scale = float(adding_scale)
        self.removal = removal
        self.negative_patch = negative_patch
        self.positives_per_sample = int(positives_per_sample)
        self.min_patch_points = int(min_patch_points)
        self.rotation_augment = rotation_augment
        self.irrelevant_positives = int(irrelevant_positives)
        self.loss = ThreeDzALLoss(
            contrastive=contrastive_loss and learned_branch,
            disentanglement=disentanglement_loss and learned_branch and use_fpfh,
            classification=classifier,
            lambda_contrastive=lambda_contrastive,
            lambda_disentanglement=lambda_disentanglement,
            temperature=temperature,
            feature_dim=feature_dim,
            disentanglement_mode=disentanglement_mode,
        )
        self.perturbation = perturbation
        self.epsilon = float(epsilon)
        self.perturbation_direction = perturbation_direction
        self.memory_bank = MemoryBank(coreset_ratio=coreset_ratio, projection_dim=coreset_projection_dim, seed=seed)
        self.num_neighbors = int(num_neighbors)
        self.blur_sigma = float(blur_sigma)
        self.alpha, self.beta = float(alpha), float(beta)
        self.learned_weight = float(learned_weight)
        self.map_centering = map_centering
        self.normalize_learned = normalize_learned
        self.depth_consistent = depth_consistent
        self.seed = int(seed)
        # Fitted statistics (buffers: checkpoints carry them).
        self.register_buffer("patch_scale", torch.zeros(()))
        self.register_buffer("branch_norms", torch.ones(3))  # rgb, fpfh, learned
        self.register_buffer("distance_scale", torch.ones(()))
        # Task-irrelevant interest regions: fitting-time data, never saved.
        self.regions: list[torch.Tensor] = []
        self.irrelevant_clouds: list[OrganizedCloud] = []
        self._fpfh_cache: dict[str, torch.Tensor] = {}
        self._generator: torch.Generator = torch.Generator().manual_seed(seed)

    # ------------------------------------------------------------------------------------------
    # switches
    @property
    def trainable(self) -> bool:
        """Whether anything is learned (f_theta or g_phi); else 3DzAL reduces to the BTF-style bank."""
        return self.feature_net is not None or self.classifier is not None

    @property
    def needs_pseudo_anomalies(self) -> bool:
        """Whether training needs negatives (contrastive loss or classifier)."""
        return self.loss.use_contrastive or self.loss.use_classification

    # ------------------------------------------------------------------------------------------
    # organized input
    def organize(
        self,
        points: torch.Tensor,
        batch_index: torch.Tensor,
        grid_index: torch.Tensor,
        grid_shape: torch.Tensor,
        num_clouds: int,
        image: torch.Tensor | None = None,
        foreground: torch.Tensor | None = None,
        keys: list[str] | None = None,
    ) -> list[OrganizedCloud]:
        """Scatter clouds back to their grids and nearest-resize them to ``grid_size``.

        Args:
            points: ``(ΣN, 3)``; batch_index, grid_index: ``(ΣN,) long``; grid_shape: ``(B, 2)`` or ``(2,)``;
            image: ``(B, 3, H', W')`` or None; foreground: ``(ΣN,) bool`` points the model uses
            (others are scored but never become features); keys: per-cloud cache keys.
        """
        shapes = torch.as_tensor(grid_shape).reshape(-1, 2)
        size = (self.grid_size, self.grid_size)
        clouds = []
        for b in range(num_clouds):
            mask = batch_index == b
            height, width = (int(s) for s in shapes[min(b, shapes.shape[0] - 1)])
            use = mask if foreground is None else mask & foreground
            grid = points.new_zeros((height * width, 3))
            grid[grid_index[use]] = points[use].float()
            xyz = resize_organized(grid.view(height, width, 3), size)
            valid = torch.isfinite(xyz).all(-1) & (xyz != 0).any(-1)
            rgb = None
            if image is not None and self.rgb is not None:
                rgb = F.interpolate(image[b : b + 1].float(), size=size, mode="bilinear", align_corners=False)[0]
            clouds.append(OrganizedCloud(xyz, valid, rgb, (height, width), grid_index[mask],
                                         None if keys is None else keys[b]))
        return clouds

    def cell_patches(self, cloud: OrganizedCloud) -> CellPatches:
        """The cloud's non-empty ``patch_size`` cells as ``(P, n, 3)`` patches."""
        p, h = self.patch_size, self.cells_per_side
        n = self.points_per_patch
        point_id = torch.cumsum(cloud.valid.reshape(-1).long(), 0) - 1
        def by_cell(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(h, p, h, p, *t.shape[2:]).transpose(1, 2).reshape(h * h, n, *t.shape[2:])
        xyz = by_cell(cloud.xyz)
        valid = by_cell(cloud.valid)
        ids = by_cell(point_id.view(self.grid_size, self.grid_size))
        counts = valid.sum(dim=1)
        cells = (counts > 0).nonzero().squeeze(1)
        xyz, valid, ids, counts = xyz[cells], valid[cells], ids[cells], counts[cells]
        # valid slots first (stable), then cycle through them to fill the patch.
        order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices
        slots = order.gather(1, torch.arange(n, device=xyz.device)[None] % counts[:, None])
        patches = xyz.gather(1, slots[..., None].expand(-1, -1, 3))
        centers = (xyz * valid[..., None]).sum(1) / counts[:, None].clamp_min(1)
        return CellPatches(patches, centers, counts, cells, ids.gather(1, slots))

    def normalise_patches(self, patches: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """Centre each patch on its points' mean and divide by the fitted ``patch_scale``."""
        scale = self.patch_scale if float(self.patch_scale) > 0 else patches.new_ones(())
        return (patches - centers[:, None, :]) / scale

    # ------------------------------------------------------------------------------------------
    # feature branches
    def fpfh_cells(self, cloud: OrganizedCloud, cells: torch.Tensor) -> torch.Tensor:
        """BTF-pooled FPFH of the given cells: ``(P, 33)``."""
        # FPFH does not depend on learned weights: the training clouds' values are cached by key
        # (path) across epochs and for the bank; test clouds come without a key.
        cached = self._fpfh_cache.get(cloud.key) if cloud.key is not None else None
        if cached is None:
            points = cloud.xyz[cloud.valid]
            k = max(3, min(self.fpfh_normal_k, points.shape[0]))
            from anomalib_3d.features import grid_patch_features

            values = fpfh(points.double(), radius=self.fpfh_radius, max_nn=self.fpfh_max_nn, normal_k=k).float()
            pixels = cloud.valid.reshape(-1).nonzero().squeeze(1)
            pooled = grid_patch_features(values, pixels, (self.grid_size, self.grid_size), self.cells_per_side, 3)
            cached = pooled[0].reshape(FPFH_DIM, -1).T  # (h*w, 33)
            if cloud.key is not None:
                self._fpfh_cache[cloud.key] = cached.detach()
        return cached[cells]

    def branch_features(self, cloud: OrganizedCloud, patches: CellPatches) -> list[torch.Tensor | None]:
        """Raw (unscaled) ``[rgb (P, 1536), fpfh (P, 33), learned (P, d)]`` of the cloud's patches (None = off)."""
        rgb = fp = learned = None
        if self.rgb is not None and cloud.rgb is not None:
            maps = self.rgb(cloud.rgb[None], self.cells_per_side, 3, image_size=224)[0]
            rgb = maps.reshape(maps.shape[0], -1).T[patches.cells]
        if self.use_fpfh:
            fp = self.fpfh_cells(cloud, patches.cells)
        if self.feature_net is not None:
            learned = self.feature_net(self.normalise_patches(patches.points, patches.centers))
            if self.normalize_learned:
                # Eq. 1 shapes f_theta only through cosine similarities; its norm is untrained and
                # would add unshaped variation to the bank's Euclidean distances.
                learned = F.normalize(learned, dim=1)
        return [rgb, fp, learned]

    def combine(self, branches: list[torch.Tensor | None]) -> torch.Tensor:
        """Concatenate the active branches, each divided by its mean training norm (the learned one
        then multiplied by ``learned_weight``)."""
        weights = (1.0, 1.0, self.learned_weight)
        parts = [b * (weights[i] / self.branch_norms[i]) for i, b in enumerate(branches) if b is not None]
        return torch.cat(parts, dim=1)

    # ------------------------------------------------------------------------------------------
    # pseudo-anomalies
    def set_task_irrelevant(self, samples: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
        """Compute the interest regions of the task-irrelevant samples.

        Args:
            samples: ``(xyz (G', G', 3), valid (G', G') bool)`` organized grids.

        Returns:
            number of regions.
        """
        generator = None
        if self.interest_source == "cnn":
            generator = GeneratorCNN(self.generator_backbone, self.generator_pretrained, seed=self.seed)
        rng = torch.Generator().manual_seed(self.seed + 1)
        regions = []
        for xyz, valid in samples:
            if int(valid.sum()) < 4:
                continue
            if generator is not None:
                soft = soft_interest_map(generator, xyz, valid)
            else:
                soft = torch.zeros(xyz.shape[:2])
                soft[valid] = torch.rand(int(valid.sum()), generator=rng)
            regions.append(interest_region(xyz, valid, soft, self.top_fraction, self.region_size).cpu())
        self.regions = regions
        self.irrelevant_clouds = [
            OrganizedCloud(xyz, valid, None, tuple(xyz.shape[:2]), torch.empty(0, dtype=torch.long), f"task-irrelevant:{i}")
            for i, (xyz, valid) in enumerate(samples) if int(valid.sum()) >= 4
        ]
        return len(regions)

    def pseudo_anomalous_patches(self, cloud: OrganizedCloud, patches: CellPatches, count: int) -> torch.Tensor:
        """``count`` pseudo-anomalous patches (adding then removing) of a normal cloud: ``(count, n, 3)`` normalised."""
        n = self.points_per_patch
        points = cloud.xyz[cloud.valid]
        candidates = (patches.counts >= self.min_patch_points).nonzero().squeeze(1)
        if candidates.numel() == 0:
            candidates = torch.arange(patches.counts.numel(), device=points.device)
        num_adding = round(self.adding_ratio * count) if self.regions else 0
        out = []
        g = self._generator
        for i in range(count):
            cell = int(candidates[torch.randint(candidates.numel(), (1,), generator=g)])
            members = patches.point_index[cell, : int(patches.counts[cell])].unique()
            anchor = int(members[torch.randint(members.numel(), (1,), generator=g)])
            given = members if self.negative_patch == "cell" else None
            if i < num_adding:
                region = self.regions[int(torch.randint(len(self.regions), (1,), generator=g))].to(points)
                made = add_points(points, region, anchor, n, patch_index=given, scale=self.adding_scale)
                if self.depth_consistent and given is not None:
                    # An organized scan of a surface with something attached keeps one point per
                    # pixel ray (the nearest): no second layer under the added points.
                    union = made.points[made.patch_index]
                    keep = camera_visible(union, points[given])
                    if int(keep.sum()) >= self.min_patch_points:
                        made = type(made)(made.points, made.labels, made.patch_index[keep], made.kind)
            else:
                lo, hi = self.drop_fraction
                fraction = lo + (hi - lo) * float(torch.rand((), generator=g))
                made = remove_points(points, anchor, n, fraction, patch_index=given, generator=g, mode=self.removal)
            patch = made.points[made.patch_index]
            fitted = fit_patch_size(patch, n, g)
            # Centre on the mean of the distinct points, exactly as normal and test cells are: the
            # mean of a cycled (padded) patch is shifted towards the repeated points, a cue that
            # would mark every padded pseudo-anomaly and exists in no real cell.
            centre = (patch if patch.shape[0] < n else fitted).mean(dim=0, keepdim=True)
            out.append(fitted - centre)
        scale = self.patch_scale if float(self.patch_scale) > 0 else points.new_ones(())
        return torch.stack(out) / scale if out else points.new_zeros((0, n, 3))

    # ------------------------------------------------------------------------------------------
    # training
    def training_losses(self, clouds: list[OrganizedCloud]) -> dict[str, torch.Tensor]:
        """Contrastive + disentanglement (f_theta) and classification (g_phi) losses of normal clouds."""
        per_cloud = [(cloud, self.cell_patches(cloud)) for cloud in clouds]
        if float(self.patch_scale) == 0:
            radii = torch.cat([self._cell_rms(p) for _, p in per_cloud])
            self.patch_scale.fill_(float(radii.median().clamp_min(1e-8)))
        if self.irrelevant_positives and self.irrelevant_clouds:
            # Extension (off in the paper): normal patches of task-irrelevant categories as extra
            # positives, so "normal" is not learned from one category's surfaces only.
            picks = torch.randperm(len(self.irrelevant_clouds), generator=self._generator)[: self.irrelevant_positives]
            extra = [self.irrelevant_clouds[int(i)] for i in picks]
            per_cloud += [(cloud, self.cell_patches(cloud)) for cloud in extra]
        positives, negatives, pos_fpfh = [], [], []
        g = self._generator
        for cloud, patches in per_cloud:
            usable = (patches.counts >= self.min_patch_points).nonzero().squeeze(1)
            if usable.numel() == 0:
                continue
            chosen = usable[torch.randperm(usable.numel(), generator=g)[: self.positives_per_sample].to(usable.device)]
            positives.append(self.normalise_patches(patches.points[chosen], patches.centers[chosen]))
            if self.loss.use_disentanglement:
                pos_fpfh.append(self.fpfh_cells(cloud, patches.cells[chosen]))
            if self.needs_pseudo_anomalies:
                negatives.append(self.pseudo_anomalous_patches(cloud, patches, max(1, round(self.negative_ratio * chosen.numel()))))
        if not positives:
            msg = "no training cloud has a patch with enough points; lower min_patch_points or check the data."
            raise ValueError(msg)
        pos = torch.cat(positives)
        neg = torch.cat(negatives) if negatives else None
        if self.rotation_augment:
            pos = self._rotate_about_view_axis(pos)
            neg = None if neg is None else self._rotate_about_view_axis(neg)
        pos_feat = neg_feat = logits = labels = None
        if self.feature_net is not None:
            both = pos if neg is None else torch.cat([pos, neg])
            feats = self.feature_net(both)
            pos_feat, neg_feat = feats[: pos.shape[0]], (None if neg is None else feats[pos.shape[0]:])
        if self.classifier is not None and neg is not None:
            logits = self.classifier(torch.cat([pos, neg]))
            labels = torch.cat([torch.zeros(pos.shape[0]), torch.ones(neg.shape[0])]).long().to(pos.device)
        return self.loss(pos_feat, neg_feat, torch.cat(pos_fpfh) if pos_fpfh else None, logits, labels)

    def _rotate_about_view_axis(self, patches: torch.Tensor) -> torch.Tensor:
        """Random in-plane rotations (about z, the camera axis) of training patches: local shape
        should not depend on how the training category happens to be oriented."""
        angle = torch.rand(patches.shape[0], generator=self._generator).to(patches) * 2 * math.pi
        cos, sin = angle.cos(), angle.sin()
        x, y, z = patches.unbind(-1)
        return torch.stack([cos[:, None] * x - sin[:, None] * y, sin[:, None] * x + cos[:, None] * y, z], dim=-1)

    @staticmethod
    def _cell_rms(patches: CellPatches) -> torch.Tensor:
        offsets = patches.points - patches.centers[:, None, :]
        return offsets.square().sum(-1).mean(-1).sqrt()

    # ------------------------------------------------------------------------------------------
    # memory bank
    @torch.no_grad()
    def fit_memory_bank(self, clouds: list[OrganizedCloud]) -> int:
        """Features of every patch of the normal training clouds → branch norms, coreset bank, distance scale.

        Returns:
            number of training patch features.
        """
        from anomalib_3d.distributed import all_gather_cat

        if float(self.patch_scale) == 0:
            radii = torch.cat([self._cell_rms(self.cell_patches(c)) for c in clouds])
            self.patch_scale.fill_(float(radii.median().clamp_min(1e-8)))
        collected: list[list[torch.Tensor]] = [[], [], []]
        for cloud in clouds:
            for i, branch in enumerate(self.branch_features(cloud, self.cell_patches(cloud))):
                if branch is not None:
                    collected[i].append(branch)
        branches = [torch.cat(c) if c else None for c in collected]
        norms = torch.ones(3, device=self.branch_norms.device)
        for i, branch in enumerate(branches):
            if branch is not None:
                norms[i] = all_gather_cat(branch.norm(dim=1)).mean().clamp_min(1e-8)
        self.branch_norms.copy_(norms)
        features = self.combine(branches)
        self.memory_bank.fit(features)
        distances, _ = self.memory_bank.query(features, k=1)
        distances = all_gather_cat(distances[:, 0])
        positive = distances[distances > 0]
        self.distance_scale.fill_(float(positive.quantile(0.99)) if positive.numel() else 1.0)
        return int(features.shape[0])

    # ------------------------------------------------------------------------------------------
    # inference
    def _to_map(self, values: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Per-patch values → ``(G, G)``: empty cells take the cloud's lowest value; bilinear; blur."""
        h = self.cells_per_side
        grid = values.new_full((h * h,), float(values.min()) if values.numel() else 0.0)
        grid[cells] = values
        full = F.interpolate(grid.view(1, 1, h, h), size=(self.grid_size, self.grid_size), mode="bilinear",
                             align_corners=False)
        if self.blur_sigma > 0:
            from anomalib.models.components import GaussianBlur2d

            radius = math.ceil(4 * self.blur_sigma)
            full = GaussianBlur2d(sigma=self.blur_sigma, channels=1, kernel_size=2 * radius + 1).to(full.device)(full)
        return full[0, 0]

    def predict_clouds(self, clouds: list[OrganizedCloud]) -> ThreeDzALPrediction:
        """Scores of organized clouds (see the module docstring)."""
        if not self.memory_bank.is_fitted:
            msg = "the memory bank is empty: fit the model (or load a checkpoint) before predicting."
            raise RuntimeError(msg)
        maps, scores, dist_maps, cls_maps, valids = [], [], [], [], []
        for cloud in clouds:
            patches = self.cell_patches(cloud)
            features = self.combine(self.branch_features(cloud, patches))
            distances, index = self.memory_bank.query(features, k=1)
            patch_distance = distances[:, 0] / self.distance_scale
            object_distance = self.memory_bank.object_score(
                distances[:, 0], features, index[:, 0], num_neighbors=self.num_neighbors,
            )[0] / self.distance_scale
            if self.map_centering:
                patch_distance = (patch_distance - patch_distance.median()).clamp_min(0)
            distance_map = self._to_map(patch_distance, patches.cells)
            score_map = self.alpha * distance_map
            object_score = self.alpha * object_distance
            cls_map = torch.zeros_like(distance_map)
            if self.classifier is not None:
                inputs = self.normalise_patches(patches.points, patches.centers)
                if self.perturbation:
                    inputs = perturb_patches(self.classifier, inputs, self.epsilon, self.perturbation_direction)
                probability = torch.softmax(self.classifier(inputs), dim=-1)[:, 1]
                patch_map = probability
                if self.map_centering:
                    # Anomalies are rare within one object: what the classifier finds anomalous
                    # everywhere on an unseen category is category shift, not a defect.
                    patch_map = (probability - probability.median()).clamp_min(0)
                cls_map = self._to_map(patch_map, patches.cells)
                score_map = score_map + self.beta * cls_map
                object_score = object_score + self.beta * probability.max()
            source = F.interpolate(score_map[None, None], size=cloud.source_shape, mode="bilinear", align_corners=False)
            maps.append(source.reshape(-1)[cloud.grid_index])
            scores.append(object_score)
            dist_maps.append(distance_map)
            cls_maps.append(cls_map)
            valids.append(cloud.valid)
        return ThreeDzALPrediction(torch.cat(maps), torch.stack(scores), torch.stack(dist_maps), torch.stack(cls_maps),
                                   torch.stack(valids))

    def extra_repr(self) -> str:
        return f"grid={self.grid_size}, patch={self.patch_size}, alpha={self.alpha}, beta={self.beta}"


def describe_switches(model: ThreeDzALModel) -> dict[str, Any]:
    """The active components, for logs and the benchmark table."""
    return {
        "rgb": model.rgb is not None,
        "fpfh": model.use_fpfh,
        "learned": model.feature_net is not None,
        "classifier": model.classifier is not None,
        "perturbation": model.perturbation and model.classifier is not None,
        "interest": model.interest_source,
    }


__all__ = [
    "CellPatches",
    "OrganizedCloud",
    "ThreeDzALModel",
    "ThreeDzALPrediction",
    "describe_switches",
    "fit_patch_size",
    "perturb_patches",
]
