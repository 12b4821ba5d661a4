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

Training: negatives are pseudo-anomalous cells — by default cells of whole-grid pseudo-defects
(:mod:`.grid_defects`), else the paper's per-cell adding / removing (:mod:`.pseudo_anomaly`);
positives are normal cells, drawn with the negatives' point counts when ``count_matched``.
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

from .cells import CellPatches, OrganizedCloud, cell_sums, cut_cells, fit_patch_size
from .grid_defects import angular_pitch, interest_centre, synthesise_defect
from .loss import ThreeDzALLoss, patch_denoising_loss
from .pointnet2 import PatchDecoder, PatchPointNet2
from .pseudo_anomaly import GeneratorCNN, interest_region, match_counts, paper_cell_negatives, soft_interest_map
from .settings import ThreeDzALSettings

FPFH_DIM = 33


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


@dataclass
class CellScores:
    """Scores of one cloud's non-empty cells (:meth:`ThreeDzALModel.cell_scores`).

    Attributes:
        cells: ``(P,) long`` flat cell index; counts: ``(P,) long`` points per cell;
        distance: ``(P,)`` nearest-bank distance / training scale; object_distance: ``()`` the
        re-weighted object score; probability: ``(P,)`` g_phi's anomalous probability or None.
    """

    cells: torch.Tensor
    counts: torch.Tensor
    distance: torch.Tensor
    object_distance: torch.Tensor
    probability: torch.Tensor | None


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


class ThreeDzALModel(nn.Module):
    """The 3DzAL network, memory bank and scoring (see the module docstring and the README).

    Args:
        settings: every switch (:class:`~anomalib_3d_plugins.threedzal.settings.ThreeDzALSettings`);
            ``None`` = the defaults.
    """

    def __init__(self, settings: ThreeDzALSettings | None = None) -> None:
        super().__init__()
        self.settings = settings = settings or ThreeDzALSettings()
        self.cells_per_side = settings.grid_size // settings.patch_size
        self.points_per_patch = settings.patch_size**2
        self.rgb = None
        if settings.rgb_backbone is not None:
            # BTF's RGB branch (one implementation); imported here, not at module import, because
            # the BTF package imports its anomalib model.
            from anomalib_3d.nn.image_backbones import RGBBackbone

            self.rgb = RGBBackbone(weights=settings.rgb_weights, pretrained=True)
        network = (settings.pointnet_centroids, settings.pointnet_group_size, settings.pointnet_widths)
        self.feature_net = PatchPointNet2(settings.feature_dim, *network) if settings.learned_branch else None
        self.denoiser = PatchDecoder(settings.feature_dim, self.points_per_patch) if settings.denoising_loss else None
        self.classifier = PatchPointNet2(2, *network) if settings.classifier else None
        self.loss = ThreeDzALLoss(
            contrastive=settings.contrastive_loss and settings.learned_branch,
            disentanglement=settings.disentanglement_loss and settings.learned_branch and settings.use_fpfh,
            classification=settings.classifier,
            lambda_contrastive=settings.lambda_contrastive,
            lambda_disentanglement=settings.lambda_disentanglement,
            temperature=settings.temperature,
            feature_dim=settings.feature_dim,
            disentanglement_mode=settings.disentanglement_mode,
            denoising=settings.denoising_loss,
            lambda_denoising=settings.lambda_denoising,
        )
        self.memory_bank = MemoryBank(coreset_ratio=settings.coreset_ratio,
                                      projection_dim=settings.coreset_projection_dim, seed=settings.seed)
        # Fitted statistics (buffers: checkpoints carry them).
        self.register_buffer("patch_scale", torch.zeros(()))
        self.register_buffer("branch_norms", torch.ones(3))  # rgb, fpfh, learned
        self.register_buffer("distance_scale", torch.ones(()))
        # Task-irrelevant interest regions: fitting-time data, never saved.
        self.regions: list[torch.Tensor] = []
        self.interest_sources: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]] = []
        self.irrelevant_clouds: list[OrganizedCloud] = []
        self._fpfh_cache: dict[str, torch.Tensor] = {}
        self._generator: torch.Generator = torch.Generator().manual_seed(settings.seed)

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

    @property
    def uses_task_irrelevant(self) -> bool:
        """Whether training reads task-irrelevant samples (adding / attach pseudo-anomalies)."""
        if not self.needs_pseudo_anomalies:
            return False
        if self.settings.pseudo_anomalies == "grid":
            return "attach" in self.settings.pseudo_kinds
        return self.settings.adding_ratio > 0

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
        size = (self.settings.grid_size, self.settings.grid_size)
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
        """The cloud's non-empty ``patch_size`` cells as ``(P, n, 3)`` patches (:func:`~.cells.cut_cells`)."""
        return cut_cells(cloud.xyz, cloud.valid, self.settings.patch_size)

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
            settings = self.settings
            points = cloud.xyz[cloud.valid]
            k = max(3, min(settings.fpfh_normal_k, points.shape[0]))
            from anomalib_3d.nn.image_backbones import grid_patch_features

            values = fpfh(points.double(), radius=settings.fpfh_radius, max_nn=settings.fpfh_max_nn, normal_k=k).float()
            pixels = cloud.valid.reshape(-1).nonzero().squeeze(1)
            pooled = grid_patch_features(values, pixels, (settings.grid_size, settings.grid_size), self.cells_per_side, 3)
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
        if self.settings.use_fpfh:
            fp = self.fpfh_cells(cloud, patches.cells)
        if self.feature_net is not None:
            learned = self.feature_net(self.normalise_patches(patches.points, patches.centers))
            if self.settings.normalize_learned:
                # Eq. 1 shapes f_theta only through cosine similarities; its norm is untrained and
                # would add unshaped variation to the bank's Euclidean distances.
                learned = F.normalize(learned, dim=1)
        return [rgb, fp, learned]

    def combine(self, branches: list[torch.Tensor | None]) -> torch.Tensor:
        """Concatenate the active branches, each divided by its mean training norm (the learned one
        then multiplied by ``learned_weight``)."""
        weights = (1.0, 1.0, self.settings.learned_weight)
        parts = [b * (weights[i] / self.branch_norms[i]) for i, b in enumerate(branches) if b is not None]
        return torch.cat(parts, dim=1)

    # ------------------------------------------------------------------------------------------
    # pseudo-anomalies
    def set_task_irrelevant(self, samples: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
        """Compute the interest maps and regions of the task-irrelevant samples.

        Args:
            samples: ``(xyz (G', G', 3), valid (G', G') bool)`` organized grids.

        Returns:
            number of usable samples.
        """
        settings = self.settings
        generator = None
        if settings.interest_source == "cnn":
            generator = GeneratorCNN(settings.generator_backbone, settings.generator_pretrained, seed=settings.seed)
        rng = torch.Generator().manual_seed(settings.seed + 1)
        self.regions, self.interest_sources, self.irrelevant_clouds = [], [], []
        for i, (xyz, valid) in enumerate(samples):
            if int(valid.sum()) < 4:
                continue
            if generator is not None:
                soft = soft_interest_map(generator, xyz, valid)
            else:
                soft = torch.zeros(xyz.shape[:2])
                soft[valid] = torch.rand(int(valid.sum()), generator=rng)
            soft = soft.cpu()
            self.interest_sources.append((xyz.cpu(), valid.cpu(), soft, interest_centre(valid.cpu(), soft, settings.top_fraction)))
            self.regions.append(interest_region(xyz, valid, soft.to(xyz.device), settings.top_fraction, settings.region_size).cpu())
            self.irrelevant_clouds.append(
                OrganizedCloud(xyz, valid, None, tuple(xyz.shape[:2]), torch.empty(0, dtype=torch.long), f"task-irrelevant:{i}"))
        return len(self.regions)

    def grid_negatives(self, cloud: OrganizedCloud, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """About ``count`` pseudo-anomalous cells of a normal cloud from whole-grid pseudo-defects.

        Each defect (:func:`~.grid_defects.synthesise_defect`, kinds drawn uniformly from
        ``pseudo_kinds``) is made on a copy of the grid, which is then cut into cells exactly as a
        test scan is; the cells with at least ``min_affected`` affected pixels (and a point left) are
        the negatives.

        Returns:
            ``(patches (Q, n, 3) normalised, counts (Q,) long)``.
        """
        settings = self.settings
        kinds = [k for k in settings.pseudo_kinds if k != "attach" or self.interest_sources]
        g = self._generator
        pitch = angular_pitch(cloud.xyz, cloud.valid)
        made, counts, total = [], [], 0
        for _ in range(4 * count):
            if total >= count or not kinds:
                break
            kind = kinds[int(torch.randint(len(kinds), (1,), generator=g))]
            defect = synthesise_defect(cloud.xyz, cloud.valid, kind, g, patch_size=settings.patch_size,
                                       diameter_cells=settings.defect_cells, height_fraction=settings.defect_height,
                                       sources=self.interest_sources, pitch=pitch)
            if defect is None:
                continue
            edited = OrganizedCloud(defect.xyz, defect.valid, None, cloud.source_shape, cloud.grid_index)
            patches = self.cell_patches(edited)
            affected = cell_sums(defect.affected.to(torch.long), settings.patch_size)[patches.cells]
            hit = (affected >= settings.min_affected).nonzero().squeeze(1)
            made.append(self.normalise_patches(patches.points[hit], patches.centers[hit]))
            counts.append(patches.counts[hit])
            total += hit.numel()
        n = self.points_per_patch
        if not made:
            return cloud.xyz.new_zeros((0, n, 3)), torch.zeros(0, dtype=torch.long, device=cloud.xyz.device)
        return torch.cat(made)[:count], torch.cat(counts)[:count]

    def pseudo_anomalous_patches(self, cloud: OrganizedCloud, patches: CellPatches, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The paper's per-cell generator (:func:`~.pseudo_anomaly.paper_cell_negatives`).

        Returns:
            ``(patches (count, n, 3) normalised, counts (count,) long)``.
        """
        settings = self.settings
        made, counts = paper_cell_negatives(
            cloud.xyz[cloud.valid], patches, count, self.regions, self._generator, min_patch_points=settings.min_patch_points,
            adding_ratio=settings.adding_ratio, negative_patch=settings.negative_patch, adding_scale=settings.adding_scale,
            depth_consistent=settings.depth_consistent, drop_fraction=settings.drop_fraction, removal=settings.removal)
        scale = self.patch_scale if float(self.patch_scale) > 0 else made.new_ones(())
        return made / scale, counts

    # ------------------------------------------------------------------------------------------
    # training
    def training_patches(self, per_cloud: list[tuple[OrganizedCloud, CellPatches]]) -> tuple[
            torch.Tensor, torch.Tensor | None, list[tuple[int, torch.Tensor]]]:
        """Positive (normal) and negative (pseudo-anomalous) training patches of one step.

        Returns:
            ``(positives (P, n, 3), negatives (Q, n, 3) or None, sources)``, all normalised;
            ``sources`` lists ``(cloud position, cells)`` of the positives in order (for their FPFH).
        """
        settings, g = self.settings, self._generator
        negatives, negative_counts = [], []
        if self.needs_pseudo_anomalies:
            wanted = max(1, round(settings.negative_ratio * settings.positives_per_sample))
            for cloud, patches in per_cloud:
                made = (self.grid_negatives(cloud, wanted) if settings.pseudo_anomalies == "grid"
                        else self.pseudo_anomalous_patches(cloud, patches, wanted))
                negatives.append(made[0])
                negative_counts.append(made[1])
        if settings.count_matched and negatives:
            # Positives drawn to the negatives' point counts (one per negative, from every cell of
            # the step's clouds): how many points a cell holds must not tell the label.
            neg, counts = torch.cat(negatives), torch.cat(negative_counts)
            pool_counts = torch.cat([patches.counts for _, patches in per_cloud])
            owner = torch.cat([torch.full_like(patches.counts, i) for i, (_, patches) in enumerate(per_cloud)])
            kept, chosen = match_counts(counts, pool_counts, g)
            neg = neg[kept]
            offsets = [0]
            for _, patches in per_cloud:
                offsets.append(offsets[-1] + patches.counts.numel())
            positives, sources = [], []
            for i, (_, patches) in enumerate(per_cloud):
                local = chosen[owner[chosen] == i] - offsets[i]
                positives.append(self.normalise_patches(patches.points[local], patches.centers[local]))
                sources.append((i, patches.cells[local]))
            return torch.cat(positives), neg, sources
        positives, sources = [], []
        for i, (_, patches) in enumerate(per_cloud):
            usable = (patches.counts >= settings.min_patch_points).nonzero().squeeze(1)
            chosen = usable[torch.randperm(usable.numel(), generator=g)[: settings.positives_per_sample].to(usable.device)]
            positives.append(self.normalise_patches(patches.points[chosen], patches.centers[chosen]))
            sources.append((i, patches.cells[chosen]))
        if not negatives:
            return torch.cat(positives), None, sources
        return torch.cat(positives), torch.cat(negatives), sources

    def training_losses(self, clouds: list[OrganizedCloud]) -> dict[str, torch.Tensor]:
        """Contrastive + disentanglement (+ denoising) for f_theta and classification for g_phi, on
        normal clouds and their pseudo-anomalies."""
        per_cloud = [(cloud, self.cell_patches(cloud)) for cloud in clouds]
        if float(self.patch_scale) == 0:
            radii = torch.cat([self._cell_rms(p) for _, p in per_cloud])
            self.patch_scale.fill_(float(radii.median().clamp_min(1e-8)))
        extra_count = self.settings.irrelevant_positives
        if extra_count and self.irrelevant_clouds:
            # Extension (off in the paper): normal patches of task-irrelevant categories as extra
            # positives, so "normal" is not learned from one category's surfaces only.
            picks = torch.randperm(len(self.irrelevant_clouds), generator=self._generator)[:extra_count]
            extra = [self.irrelevant_clouds[int(i)] for i in picks]
            per_cloud += [(cloud, self.cell_patches(cloud)) for cloud in extra]
        pos, neg, sources = self.training_patches(per_cloud)
        if pos.shape[0] < 2:
            msg = "no training cloud has enough usable patches; lower min_patch_points or check the data."
            raise ValueError(msg)
        pos_fpfh = None
        if self.loss.use_disentanglement:
            pos_fpfh = torch.cat([self.fpfh_cells(per_cloud[i][0], cells) for i, cells in sources])
        if self.settings.rotation_augment:
            pos = self._rotate_about_view_axis(pos)
            neg = None if neg is None or neg.shape[0] == 0 else self._rotate_about_view_axis(neg)
        if neg is not None and neg.shape[0] == 0:
            neg = None
        pos_feat = neg_feat = logits = labels = denoising = None
        if self.feature_net is not None:
            both = pos if neg is None else torch.cat([pos, neg])
            feats = self.feature_net(both)
            pos_feat, neg_feat = feats[: pos.shape[0]], (None if neg is None else feats[pos.shape[0]:])
        if self.denoiser is not None:
            noise = torch.randn(pos.shape, generator=self._generator).to(pos)
            denoising = patch_denoising_loss(self.denoiser(self.feature_net(pos + self.settings.denoising_noise * noise)), pos)
        if self.classifier is not None and neg is not None:
            logits = self.classifier(torch.cat([pos, neg]))
            labels = torch.cat([torch.zeros(pos.shape[0]), torch.ones(neg.shape[0])]).long().to(pos.device)
        return self.loss(pos_feat, neg_feat, pos_fpfh, logits, labels, denoising)

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
            # every rank must agree on the scale: the median over all ranks' clouds
            radii = all_gather_cat(torch.cat([self._cell_rms(self.cell_patches(c)) for c in clouds]))
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
        size = (self.settings.grid_size, self.settings.grid_size)
        full = F.interpolate(grid.view(1, 1, h, h), size=size, mode="bilinear", align_corners=False)
        if self.settings.blur_sigma > 0:
            from anomalib.models.components import GaussianBlur2d

            radius = math.ceil(4 * self.settings.blur_sigma)
            full = GaussianBlur2d(sigma=self.settings.blur_sigma, channels=1, kernel_size=2 * radius + 1).to(full.device)(full)
        return full[0, 0]

    def cell_scores(self, cloud: OrganizedCloud) -> CellScores:
        """Per-cell scores of one organized cloud: bank distance and g_phi's anomalous probability."""
        patches = self.cell_patches(cloud)
        features = self.combine(self.branch_features(cloud, patches))
        distances, index = self.memory_bank.query(features, k=1)
        object_distance = self.memory_bank.object_score(
            distances[:, 0], features, index[:, 0], num_neighbors=self.settings.num_neighbors,
        )[0] / self.distance_scale
        probability = None
        if self.classifier is not None:
            inputs = self.normalise_patches(patches.points, patches.centers)
            if self.settings.perturbation:
                inputs = perturb_patches(self.classifier, inputs, self.settings.epsilon, self.settings.perturbation_direction)
            probability = torch.softmax(self.classifier(inputs), dim=-1)[:, 1]
        return CellScores(patches.cells, patches.counts, distances[:, 0] / self.distance_scale, object_distance, probability)

    def predict_clouds(self, clouds: list[OrganizedCloud]) -> ThreeDzALPrediction:
        """Scores of organized clouds (see the module docstring)."""
        if not self.memory_bank.is_fitted:
            msg = "the memory bank is empty: fit the model (or load a checkpoint) before predicting."
            raise RuntimeError(msg)
        maps, scores, dist_maps, cls_maps, valids = [], [], [], [], []
        for cloud in clouds:
            cell = self.cell_scores(cloud)
            patch_distance = cell.distance
            if self.settings.map_centering:
                patch_distance = (patch_distance - patch_distance.median()).clamp_min(0)
            distance_map = self._to_map(patch_distance, cell.cells)
            score_map = self.settings.alpha * distance_map
            object_score = self.settings.alpha * cell.object_distance
            cls_map = torch.zeros_like(distance_map)
            if cell.probability is not None:
                patch_map = cell.probability
                if self.settings.map_centering:
                    # Anomalies are rare within one object: what the classifier finds anomalous
                    # everywhere on an unseen category is category shift, not a defect.
                    patch_map = (patch_map - patch_map.median()).clamp_min(0)
                cls_map = self._to_map(patch_map, cell.cells)
                score_map = score_map + self.settings.beta * cls_map
                object_score = object_score + self.settings.beta * cell.probability.max()
            source = F.interpolate(score_map[None, None], size=cloud.source_shape, mode="bilinear", align_corners=False)
            maps.append(source.reshape(-1)[cloud.grid_index])
            scores.append(object_score)
            dist_maps.append(distance_map)
            cls_maps.append(cls_map)
            valids.append(cloud.valid)
        return ThreeDzALPrediction(torch.cat(maps), torch.stack(scores), torch.stack(dist_maps), torch.stack(cls_maps),
                                   torch.stack(valids))

    def extra_repr(self) -> str:
        settings = self.settings
        return f"grid={settings.grid_size}, patch={settings.patch_size}, alpha={settings.alpha}, beta={settings.beta}"


def describe_switches(model: ThreeDzALModel) -> dict[str, Any]:
    """The active components, for logs and the benchmark table."""
    return {
        "rgb": model.rgb is not None,
        "fpfh": model.settings.use_fpfh,
        "learned": model.feature_net is not None,
        "classifier": model.classifier is not None,
        "perturbation": model.settings.perturbation and model.classifier is not None,
        "interest": model.settings.interest_source,
    }


__all__ = [
    "CellPatches",
    "CellScores",
    "OrganizedCloud",
    "ThreeDzALModel",
    "ThreeDzALPrediction",
    "describe_switches",
    "fit_patch_size",
    "perturb_patches",
]
