"""Registration-based anomaly scoring (Real3D-AD's Reg3D-AD baseline) as a plain PyTorch module.

Every cloud is first normalised (centroid at 0, RMS radius 1/2: pose-invariant) so parts of
slightly different size compare. Training keeps up to ``num_templates`` normal clouds (FPS-subsampled to
``template_points``) as templates, all registered to the first one. A test cloud is registered to
that reference (FPFH + RANSAC global alignment, then ICP: :func:`anomalib_3d.ops.register`), then
refined by ICP against every template; the best fit is kept (highest fitness, then lowest RMSE:
:func:`anomalib_3d.ops.best_template`) and every point scores its distance to the nearest point of
that template.

With ``dual_memory_bank`` (Reg3D-AD proper, Liu et al., NeurIPS 2023): all training clouds are
registered to the first template; one memory bank holds their aligned coordinates, another their
local descriptors (FPFH here, Point-MAE features in the paper); a test point scores the sum of its
coordinate distance and its feature distance, each divided by its mean on the training clouds.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from anomalib_3d.distributed import all_gather_cat
from anomalib_3d.ops import (
    MemoryBank,
    apply_transform,
    best_template,
    default_voxel_size,
    farthest_point_sample,
    fpfh,
    knn,
    normalize_clouds,
    register,
    smooth_scores,
)
from anomalib_3d.ops.memory_bank import canonical_order

__all__ = ["Reg3DADModel", "Reg3DADPrediction"]

REGISTRATION_METHODS = ("global+icp", "icp", "none")
OBJECT_SCORES = ("max", "topk")


class Reg3DADPrediction(NamedTuple):
    """``anomaly_map (ΣN,)`` per-point scores and ``pred_score (B,)`` object scores."""

    anomaly_map: torch.Tensor
    pred_score: torch.Tensor


def _subsample(points: torch.Tensor, count: int | None) -> torch.Tensor:
    if count is None or points.shape[0] <= count:
        return points
    return points[farthest_point_sample(points, count).to(points.device)]


def _cloud_key(cloud: torch.Tensor) -> torch.Tensor:
    """A content descriptor of a cloud ``(N, 3)`` for ordering: size, mean, second moments, extent."""
    c = cloud.double()
    size = torch.tensor([float(c.shape[0])], dtype=torch.float64, device=c.device)
    return torch.cat([size, c.mean(0), (c * c).mean(0), c.amin(0), c.amax(0)])


class Reg3DADModel(nn.Module):
    """Templates, registration and distance scoring.

    Args:
        registration: ``"global+icp"`` (FPFH-RANSAC then ICP; any pose), ``"icp"`` (from the
            centroid shift; poses within ~30°), ``"none"`` (clouds already aligned).
        num_templates: training clouds kept as templates (the first ones, over all ranks); None
            keeps all. Registration time grows linearly with it.
        template_points: each template is FPS-subsampled to this many points (None: whole).
        registration_points: the test cloud is FPS-subsampled to this many points for registration
            (the transform is then applied to every point).
        max_iterations: ICP iterations.
        normalization: ``"rms"`` (every cloud on its centroid, RMS radius 1/2; scores in those units;
            pose-invariant, unlike ``"bbox"``) or ``"none"`` (original units).
        dual_memory_bank: Reg3D-AD's coordinate + feature banks instead of the plain distance to the
            best template.
        feature_radius: FPFH radius as a fraction of the reference template's bounding-box diagonal.
        coreset_ratio: coreset of both dual banks.
        point_weight, feature_weight: weights of the two normalised dual scores.
        object_score: ``"max"`` point score or ``"topk"`` mean of the top ``object_topk`` fraction.
        object_topk: see above.
        smoothing_k, smoothing_sigma: Gaussian smoothing of point scores (``smoothing_k`` neighbours,
            0 = off; sigma as a fraction of the reference template's bounding-box diagonal).
        seed: RANSAC and coreset seed.
    """

    def __init__(
        self,
        registration: str = "global+icp",
        num_templates: int | None = 4,
        template_points: int | None = 4096,
        registration_points: int | None = 2048,
        max_iterations: int = 50,
        normalization: str = "rms",
        dual_memory_bank: bool = False,
        feature_radius: float = 0.08,
        coreset_ratio: float = 0.25,
        point_weight: float = 1.0,
        feature_weight: float = 1.0,
        object_score: str = "max",
        object_topk: float = 0.01,
        smoothing_k: int = 0,
        smoothing_sigma: float = 0.02,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if registration not in REGISTRATION_METHODS:
            msg = f"registration must be one of {REGISTRATION_METHODS}, got {registration!r}."
            raise ValueError(msg)
        if object_score not in OBJECT_SCORES:
            msg = f"object_score must be one of {OBJECT_SCORES}, got {object_score!r}."
            raise ValueError(msg)
        if num_templates is not None and num_templates < 1:
            msg = f"num_templates must be >= 1 or None, got {num_templates}."
            raise ValueError(msg)
        self.registration = registration
        self.num_templates = num_templates
        self.template_points = template_points
        self.registration_points = registration_points
        self.max_iterations = max_iterations
        if normalization not in ("rms", "bbox", "none"):
            msg = f"normalization must be 'rms', 'bbox' or 'none', got {normalization!r}."
            raise ValueError(msg)
        self.normalization = normalization
        self.dual_memory_bank = dual_memory_bank
        self.feature_radius = feature_radius
        self.point_weight = point_weight
        self.feature_weight = feature_weight
        self.object_score = object_score
        self.object_topk = object_topk
        self.smoothing_k = smoothing_k
        self.smoothing_sigma = smoothing_sigma
        self.seed = seed
        # Templates concatenated; template i is templates[template_ptr[i]:template_ptr[i + 1]].
        self.register_buffer("templates", torch.empty(0, 3))
        self.register_buffer("template_ptr", torch.zeros(1, dtype=torch.long))
        self.point_bank = MemoryBank(coreset_ratio=coreset_ratio, projection_dim=None, seed=seed)
        self.feature_bank = MemoryBank(coreset_ratio=coreset_ratio, projection_dim=None, seed=seed)
        self.register_buffer("score_scales", torch.ones(2))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        # Template counts are data, known only after fitting: take the stored shapes.
        for name in ("templates", "template_ptr"):
            stored = state_dict.get(prefix + name)
            if stored is not None and stored.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(stored, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def template_list(self) -> list[torch.Tensor]:
        """The templates, each ``(M_i, 3)``."""
        ptr = self.template_ptr.tolist()
        return [self.templates[ptr[i] : ptr[i + 1]] for i in range(len(ptr) - 1)]

    # ----------------------------------------------------------------------------------------
    # fitting
    # ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def collect(self, point_batch) -> list[torch.Tensor]:  # noqa: ANN001
        """Every cloud of a normal batch, FPS-subsampled to ``template_points``."""
        ptr = point_batch.ptr.tolist()
        points = normalize_clouds(point_batch.points, point_batch.batch_index, self.normalization)  # type: ignore[arg-type]
        return [_subsample(points[ptr[b] : ptr[b + 1]], self.template_points) for b in range(point_batch.batch_size)]

    def fit(self, collected: list[list[torch.Tensor]]) -> None:
        """Keep the templates (gathered over ranks) and, in dual mode, fill both banks."""
        clouds = [cloud for batch in collected for cloud in batch]
        sizes = all_gather_cat(torch.tensor([c.shape[0] for c in clouds], dtype=torch.long, device=clouds[0].device))
        points = all_gather_cat(torch.cat(clouds))
        clouds = list(torch.split(points, sizes.tolist()))
        # Which clouds become templates, and which is the reference, must not depend on how the
        # loader shuffled or how DDP ranks split the training set: order the clouds by content.
        keys = torch.stack([_cloud_key(c) for c in clouds])
        clouds = [clouds[i] for i in canonical_order(keys).tolist()]
        kept = clouds if self.num_templates is None else clouds[: self.num_templates]
        reference = kept[0]
        # Templates share the reference frame, so one global registration per test cloud suffices.
        aligned_templates = [reference]
        for template in kept[1:]:
            result = register(
                template.double(), reference.double(), self.registration,  # type: ignore[arg-type]
                max_iterations=self.max_iterations, seed=self.seed,
            )
            aligned_templates.append(apply_transform(template, result.transform))
        self.templates = torch.cat(aligned_templates).to(self.templates.device)
        self.template_ptr = torch.tensor([0, *torch.tensor([c.shape[0] for c in kept]).cumsum(0).tolist()]).to(
            self.template_ptr.device
        )
        if not self.dual_memory_bank:
            return
        aligned = [self._align(c)[0] for c in clouds]
        features = [self._features(c) for c in aligned]
        self.point_bank.fit(torch.cat(aligned))
        self.feature_bank.fit(torch.cat(features))
        point_mean = torch.cat([self.point_bank.query(c)[0][:, 0] for c in aligned]).mean()
        feature_mean = torch.cat([self.feature_bank.query(f)[0][:, 0] for f in features]).mean()
        # Coreset leaves most training points out of the bank, so these means are not zero.
        self.score_scales = torch.stack([point_mean, feature_mean]).clamp_min(1e-12).to(self.score_scales)

    def _features(self, cloud: torch.Tensor) -> torch.Tensor:
        radius = self.feature_radius * default_voxel_size(self.template_list[0]) * 40
        return fpfh(cloud, radius=radius, max_nn=100).float()

    def _align(self, cloud: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``cloud (N, 3)`` moved onto its best-fitting template, and that template's index."""
        templates = [t.double() for t in self.template_list]
        probe = _subsample(cloud, self.registration_points).double()
        coarse = register(probe, templates[0], self.registration, max_iterations=self.max_iterations, seed=self.seed)  # type: ignore[arg-type]
        refine = "none" if self.registration == "none" else "icp"
        voxel = default_voxel_size(templates[0])
        index, result = best_template(
            probe, templates, method=refine, init=coarse.transform, voxel_size=voxel,
            max_correspondence_distance=2 * voxel, max_iterations=self.max_iterations,
        )
        return apply_transform(cloud, result.transform.to(cloud.device)), index

    # ----------------------------------------------------------------------------------------
    # scoring
    # ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, point_batch) -> Reg3DADPrediction:  # noqa: ANN001
        """Scores of a :class:`PointCloudBatch`: per point and per cloud."""
        if self.template_ptr.numel() < 2:
            msg = "Reg3DAD has no templates: fit it on normal training clouds first (or load a fitted checkpoint)."
            raise RuntimeError(msg)
        ptr = point_batch.ptr.tolist()
        points = normalize_clouds(point_batch.points, point_batch.batch_index, self.normalization)  # type: ignore[arg-type]
        templates = self.template_list
        diagonal = default_voxel_size(templates[0]) * 40
        maps, objects = [], []
        for b in range(point_batch.batch_size):
            aligned, index = self._align(points[ptr[b] : ptr[b + 1]])
            if self.dual_memory_bank:
                point_distance = self.point_bank.query(aligned)[0][:, 0] / self.score_scales[0]
                feature_distance = self.feature_bank.query(self._features(aligned))[0][:, 0] / self.score_scales[1]
                scores = self.point_weight * point_distance + self.feature_weight * feature_distance
            else:
                _, sq = knn(templates[index].to(aligned), aligned, 1)
                scores = sq[:, 0].sqrt()
            if self.smoothing_k > 1:
                scores = smooth_scores(
                    aligned, scores, k=min(self.smoothing_k, aligned.shape[0]), sigma=self.smoothing_sigma * diagonal
                )
            maps.append(scores)
            objects.append(self._object(scores))
        return Reg3DADPrediction(anomaly_map=torch.cat(maps), pred_score=torch.stack(objects))

    def _object(self, scores: torch.Tensor) -> torch.Tensor:
        if self.object_score == "max":
            return scores.max()
        count = max(1, round(self.object_topk * scores.shape[0]))
        return scores.topk(count).values.mean()
