"""PatchCore on point-cloud patch features (the "PatchCore + PointMAE" / "PatchCore + FPFH + Raw" rows
of M3DM and Real3D-AD) as a plain PyTorch module.

Each cloud is normalised and subsampled, cut into ``num_groups`` patches of ``group_size`` points
(FPS centres, kNN groups: Point-MAE's patching, :mod:`anomalib_3d.nn.point_mae`), and every patch
is described by any combination of

* ``"point_mae"``: the outputs of chosen blocks of a Point-MAE transformer encoder (randomly
  initialised with a fixed seed or loaded from a Point-MAE ``pretrain.pth``),
* ``"fpfh"``: the mean FPFH of the patch's points,
* ``"raw"``: the patch centre's coordinates.

Patch features go to a PatchCore memory bank (greedy coreset); a test patch scores its distance to
the nearest bank feature, points get the inverse-distance interpolation of the three nearest patch
centres' scores, the object score is PatchCore's re-weighted maximum.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from anomalib_3d.distributed import all_gather_cat
from anomalib_3d.nn.point_mae import PointMAE, PreparedClouds, group_into_patches, prepare_clouds
from anomalib_3d.ops import MemoryBank, Patches, fpfh, interpolate_nearest, smooth_scores

from .settings import FEATURE_SOURCES, PatchCore3DSettings

__all__ = ["FEATURE_SOURCES", "PatchCore3DModel", "PatchCore3DPrediction"]

# Checkpoints whose backbone is an IMRNet network carry its scoring buffers beside the Point-MAE
# weights; PatchCore3D reads none of them, so they are dropped on load.
_FOREIGN_BACKBONE_BUFFERS = (
    "template_bank", "template_count", "template_delta", "point_score_scale", "feature_score_scale",
    "calibrated", "geometric_templates", "geometric_ptr", "geometric_score_scale",
)


class PatchCore3DPrediction(NamedTuple):
    """``anomaly_map (ΣN,)`` per-point scores and ``pred_score (B,)`` object scores."""

    anomaly_map: torch.Tensor
    pred_score: torch.Tensor


class PatchCore3DModel(nn.Module):
    """Patch features, memory bank and scoring.

    Args:
        settings: every switch (:class:`~anomalib_3d_plugins.patchcore3d.settings.PatchCore3DSettings`);
            ``None`` = the defaults.
        **changes: switches applied on top of ``settings`` (``PatchCore3DModel(num_groups=64)``).
    """

    def __init__(self, settings: PatchCore3DSettings | None = None, **changes: Any) -> None:  # noqa: ANN401
        super().__init__()
        settings = settings.replace(**changes) if settings is not None else PatchCore3DSettings(**changes)
        self.settings = settings
        #: the chosen sources in concatenation order, and the encoder blocks read.
        self.feature_sources = tuple(s for s in FEATURE_SOURCES if s in settings.feature_sources)
        self.feature_layers = tuple(int(layer) for layer in settings.feature_layers)
        # Point-MAE's network as its checkpoints hold it (encoder, one decoder block, head): a seed
        # gives the encoder that network draws; only the encoder is used.
        with torch.random.fork_rng():
            torch.manual_seed(settings.seed)
            self.backbone = PointMAE(
                embed_dim=settings.embed_dim,
                tokenizer_width=settings.tokenizer_width,
                encoder_depth=settings.encoder_depth,
                decoder_depth=1,
                num_heads=settings.num_heads,
                drop_path_rate=0.0,
                group_size=settings.group_size,
            )
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        if settings.pretrained_path is not None:
            self.backbone.load_point_mae(settings.pretrained_path)
        self.memory_bank = MemoryBank(
            coreset_ratio=settings.coreset_ratio, projection_dim=settings.projection_dim, seed=settings.seed
        )
        self.register_buffer("source_scales", torch.ones(len(self.feature_sources)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        for name in _FOREIGN_BACKBONE_BUFFERS:
            state_dict.pop(f"{prefix}backbone.{name}", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def train(self, mode: bool = True) -> PatchCore3DModel:
        """The encoder is frozen: it stays in eval mode (deterministic patching and features)."""
        super().train(mode)
        self.backbone.eval()
        return self

    # ----------------------------------------------------------------------------------------
    # features
    # ----------------------------------------------------------------------------------------
    def _patches(self, point_batch) -> tuple[PreparedClouds, Patches, torch.Tensor]:  # noqa: ANN001
        """Patches of every cloud, and the input row of each patch centre.

        Clouds with fewer points than the patching needs (small organized scans after background
        removal) are cycled (every point repeated in turn) up to that size, rather than refused:
        duplicates only repeat neighbours, and every input point still gets a score.
        """
        points, batch = point_batch.points, point_batch.batch_index
        settings = self.settings
        need = max(settings.num_groups, settings.group_size)
        counts = torch.bincount(batch, minlength=point_batch.batch_size)
        rows = torch.arange(points.shape[0], device=points.device)
        if bool((counts < need).any()):
            ptr = [0, *counts.cumsum(0).tolist()]
            rows = torch.cat([
                torch.arange(max(n, need), device=points.device) % max(n, 1) + ptr[b]
                for b, n in enumerate(counts.tolist())
            ])
        prepared = prepare_clouds(points[rows], batch[rows], settings.num_points, seed=settings.seed)
        patches = group_into_patches(prepared, settings.num_groups, settings.group_size, sampler="fps", seed=settings.seed)
        center_rows = rows[prepared.source_index[patches.center_index.flatten()]]
        return prepared, patches, center_rows

    def _source_features(self, prepared: PreparedClouds, patches: Patches) -> list[torch.Tensor]:
        """One ``(B, G, C_s)`` tensor per feature source."""
        settings = self.settings
        out = []
        for source in self.feature_sources:
            if source == "point_mae":
                last = max(self.feature_layers)
                outputs = self.backbone.encoder_outputs(patches.neighborhoods, patches.centers, last)
                out.append(torch.cat([F.layer_norm(outputs[i], (settings.embed_dim,)) for i in self.feature_layers], -1))
            elif source == "fpfh":
                descriptors = fpfh(prepared.points, radius=settings.fpfh_radius, max_nn=settings.fpfh_max_nn, batch=prepared.batch)
                out.append(descriptors[patches.group_index].mean(dim=2))
            else:
                out.append(patches.centers)
        return out

    @torch.no_grad()
    def collect(self, point_batch) -> list[torch.Tensor]:  # noqa: ANN001
        """Per-source ``(B * G, C_s)`` patch features of a batch of normal clouds (unscaled)."""
        prepared, patches, _ = self._patches(point_batch)
        return [f.flatten(0, 1) for f in self._source_features(prepared, patches)]

    def fit(self, collected: list[list[torch.Tensor]]) -> None:
        """Fix the source scales and build the memory bank from the collected training features."""
        per_source = [torch.cat([batch[s] for batch in collected]) for s in range(len(self.feature_sources))]
        if self.settings.balance_sources and len(per_source) > 1:
            norms = [all_gather_cat(f.norm(dim=1)).mean().clamp_min(1e-12) for f in per_source]
            self.source_scales = torch.stack(norms).to(self.source_scales)
        self.memory_bank.fit(self._combine(per_source))

    def _combine(self, per_source: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([f / scale for f, scale in zip(per_source, self.source_scales, strict=True)], dim=-1)

    # ----------------------------------------------------------------------------------------
    # scoring
    # ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, point_batch) -> PatchCore3DPrediction:  # noqa: ANN001
        """Scores of a :class:`PointCloudBatch`: per point and per cloud."""
        prepared, patches, center_rows = self._patches(point_batch)
        features = self._combine([f.flatten(0, 1) for f in self._source_features(prepared, patches)])
        distances, nn_index = self.memory_bank.query(features, k=1)
        scores = distances[:, 0]
        num_clouds, num_groups = patches.centers.shape[:2]
        patch_batch = torch.arange(num_clouds, device=scores.device).repeat_interleave(num_groups)
        settings = self.settings
        pred_score = self.memory_bank.object_score(scores, features, nn_index[:, 0], patch_batch, settings.num_neighbors)
        # Interpolate in the input frame: the centres are input points (through the subsample).
        points = point_batch.points.float()
        batch = point_batch.batch_index
        k = min(settings.interpolation_k, num_groups)
        anomaly_map = interpolate_nearest(points[center_rows], scores, points, batch[center_rows], batch, k=k)
        if settings.smoothing_k > 1:
            # Smooth in the normalised frame so sigma means the same on every part.
            scale = self._cloud_radius(points, batch)
            smallest = int(torch.bincount(batch).min())
            anomaly_map = smooth_scores(
                points / scale[batch].unsqueeze(1), anomaly_map, batch,
                k=min(settings.smoothing_k, smallest), sigma=settings.smoothing_sigma,
            )
        return PatchCore3DPrediction(anomaly_map=anomaly_map, pred_score=pred_score)

    @staticmethod
    def _cloud_radius(points: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        num_clouds = int(batch.max()) + 1
        counts = torch.bincount(batch, minlength=num_clouds).unsqueeze(1).to(points.dtype)
        centroid = torch.zeros(num_clouds, 3, dtype=points.dtype, device=points.device).index_add_(0, batch, points) / counts
        radius = (points - centroid[batch]).norm(dim=1)
        return torch.zeros(num_clouds, dtype=points.dtype, device=points.device).scatter_reduce(
            0, batch, radius, "amax", include_self=False
        ).clamp_min(1e-12)
