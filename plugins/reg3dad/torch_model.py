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
A test cloud larger than ``feature_points`` takes its descriptors on an FPS subsample of that size
(the density the training templates had) and carries the feature distances back to every point.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from anomalib_3d.ops import (
    MemoryBank,
    default_voxel_size,
    farthest_point_sample,
    fpfh,
    interpolate_nearest,
    smooth_scores,
)
from anomalib_3d.ops.templates import TemplateBank

from .settings import Reg3DADSettings

__all__ = ["Reg3DADModel", "Reg3DADPrediction"]

# Checkpoint keys of templates stored as flat buffers of this module -> keys in its template bank.
_FLAT_TEMPLATE_KEYS = {"templates": "template_bank.points", "template_ptr": "template_bank.ptr"}


class Reg3DADPrediction(NamedTuple):
    """``anomaly_map (ΣN,)`` per-point scores and ``pred_score (B,)`` object scores."""

    anomaly_map: torch.Tensor
    pred_score: torch.Tensor


class Reg3DADModel(nn.Module):
    """Templates, registration and distance scoring.

    Args:
        settings: every switch (:class:`~anomalib_3d_plugins.reg3dad.settings.Reg3DADSettings`);
            ``None`` = the defaults.
        **changes: switches applied on top of ``settings`` (``Reg3DADModel(registration="icp")``).
    """

    def __init__(self, settings: Reg3DADSettings | None = None, **changes: Any) -> None:  # noqa: ANN401
        super().__init__()
        settings = settings.replace(**changes) if settings is not None else Reg3DADSettings(**changes)
        self.settings = settings
        # Every test cloud is refined against every template and scored against the best fit.
        self.template_bank = TemplateBank(
            normalization=settings.normalization,
            template_points=settings.template_points,
            num_templates=settings.num_templates,
            registration=settings.registration,
            registration_points=settings.registration_points,
            registration_templates=None,
            selection="first",
            distance_to="best",
            keep_coarse_if_better=False,
            max_iterations=settings.max_iterations,
            seed=settings.seed,
        )
        self.point_bank = MemoryBank(coreset_ratio=settings.coreset_ratio, projection_dim=None, seed=settings.seed)
        self.feature_bank = MemoryBank(coreset_ratio=settings.coreset_ratio, projection_dim=None, seed=settings.seed)
        self.register_buffer("score_scales", torch.ones(2))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        for flat, nested in _FLAT_TEMPLATE_KEYS.items():
            if prefix + flat in state_dict:
                state_dict[prefix + nested] = state_dict.pop(prefix + flat)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def template_list(self) -> list[torch.Tensor]:
        """The templates, each ``(M_i, 3)``."""
        return self.template_bank.templates

    # ----------------------------------------------------------------------------------------
    # fitting
    # ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def collect(self, point_batch) -> list[torch.Tensor]:  # noqa: ANN001
        """Every cloud of a normal batch, normalised and FPS-subsampled to ``template_points``."""
        return self.template_bank.prepare(point_batch.points, point_batch.batch_index)

    def fit(self, collected: list[list[torch.Tensor]]) -> None:
        """Keep the templates (gathered over ranks) and, in dual mode, fill both banks."""
        clouds = self.template_bank.fit([cloud for batch in collected for cloud in batch])
        if not self.settings.dual_memory_bank:
            return
        aligned = [self.template_bank.align(c)[0] for c in clouds]
        features = [self._features(c) for c in aligned]
        self.point_bank.fit(torch.cat(aligned))
        self.feature_bank.fit(torch.cat(features))
        point_mean = torch.cat([self.point_bank.query(c)[0][:, 0] for c in aligned]).mean()
        feature_mean = torch.cat([self.feature_bank.query(f)[0][:, 0] for f in features]).mean()
        # Coreset leaves most training points out of the bank, so these means are not zero.
        self.score_scales = torch.stack([point_mean, feature_mean]).clamp_min(1e-12).to(self.score_scales)

    def _reference_diagonal(self) -> float:
        """Bounding-box diagonal of the reference template (the unit of radii and widths)."""
        return default_voxel_size(self.template_list[0]) * 40

    def _features(self, cloud: torch.Tensor) -> torch.Tensor:
        return fpfh(cloud, radius=self.settings.feature_radius * self._reference_diagonal(), max_nn=100).float()

    # ----------------------------------------------------------------------------------------
    # scoring
    # ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, point_batch) -> Reg3DADPrediction:  # noqa: ANN001
        """Scores of a :class:`PointCloudBatch`: per point and per cloud."""
        bank = self.template_bank
        if not bank.is_fitted:
            msg = "Reg3DAD has no templates: fit it on normal training clouds first (or load a fitted checkpoint)."
            raise RuntimeError(msg)
        points = bank.normalize(point_batch.points, point_batch.batch_index)
        diagonal = self._reference_diagonal()
        settings = self.settings
        maps, objects = [], []
        for cloud in torch.split(points, torch.diff(point_batch.ptr).tolist()):
            candidates = bank.candidates(cloud)
            aligned, index = bank.align(cloud, candidates)
            if settings.dual_memory_bank:
                point_distance = self.point_bank.query(aligned)[0][:, 0] / self.score_scales[0]
                feature_distance = self._feature_distance(aligned) / self.score_scales[1]
                scores = settings.point_weight * point_distance + settings.feature_weight * feature_distance
            else:
                scores = bank.distance(aligned, index, candidates)
            if settings.smoothing_k > 1:
                scores = smooth_scores(
                    aligned, scores, k=min(settings.smoothing_k, aligned.shape[0]), sigma=settings.smoothing_sigma * diagonal
                )
            maps.append(scores)
            objects.append(self._object(scores))
        return Reg3DADPrediction(anomaly_map=torch.cat(maps), pred_score=torch.stack(objects))

    def _feature_distance(self, aligned: torch.Tensor) -> torch.Tensor:
        """``(N,)`` distance of every point's descriptor to the feature bank; clouds over
        ``feature_points`` are described on an FPS subsample and the distances interpolated."""
        if self.settings.feature_points is None or aligned.shape[0] <= self.settings.feature_points:
            return self.feature_bank.query(self._features(aligned))[0][:, 0]
        sampled = aligned[farthest_point_sample(aligned, self.settings.feature_points).to(aligned.device)]
        distance = self.feature_bank.query(self._features(sampled))[0][:, 0]
        return interpolate_nearest(sampled, distance, aligned, k=3)

    def _object(self, scores: torch.Tensor) -> torch.Tensor:
        if self.settings.object_score == "max":
            return scores.max()
        count = max(1, round(self.settings.object_topk * scores.shape[0]))
        return scores.topk(count).values.mean()
