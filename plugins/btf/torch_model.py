"""BTF ("Back to the Feature", Horwitz & Hoshen, CVPR-W 2023) as a plain PyTorch module.

Hand-crafted 3D features (raw coordinates or FPFH, optionally concatenated with frozen ImageNet
RGB features) in a PatchCore memory bank: greedy coreset, nearest-neighbour patch scores,
PatchCore's re-weighted object score and a Gaussian-smoothed score map.

Two input paths:

* **organized** clouds (``grid_index`` / ``grid_shape`` present: MVTec 3D-AD, Synthetic3D
  ``mvtec3d`` layout, anomalib's ``MVTec3D``): the reference pipeline — features on the image grid
  (downsampled to ``grid_size``), 3 x 3 average pooling, ``patch_grid`` x ``patch_grid`` patches,
  bilinear upsampling of the patch scores and a Gaussian blur; every valid point reads its pixel;
* **unorganized** clouds (Real3D-AD, Anomaly-ShapeNet, Synthetic3D ``real3d``): every point is a
  patch; its features are averaged over its ``pool_k`` nearest neighbours and its score is
  Gaussian-smoothed over ``smoothing_k`` neighbours. A cloud larger than ``max_points`` is first
  reduced to a farthest-point subsample of that size: features, bank rows and scores come from
  the subsample, and the scores are carried back to every point (inverse distance over the 3
  nearest sampled points), so the cost of a cloud beyond that size grows only with the final
  interpolation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from anomalib_3d.errors import PointCloudError
from anomalib_3d.nn.image_backbones import RGBBackbone, grid_patch_features
from anomalib_3d.ops import (
    MemoryBank,
    farthest_point_sample,
    interpolate_nearest,
    normalize_clouds,
    smooth_scores,
)

from .features import knn_pool, patch_scores_to_points, point_features
from .settings import BTFSettings

__all__ = ["BTFModel", "BTFPrediction"]


class BTFPrediction(NamedTuple):
    """``anomaly_map (ΣN,)`` per-point scores and ``pred_score (B,)`` object scores."""

    anomaly_map: torch.Tensor
    pred_score: torch.Tensor


class _Extracted(NamedTuple):
    features: torch.Tensor  # (F, D) one row per patch (organized) or scored point (unorganized)
    owner: torch.Tensor  # (F,) long cloud id of each row
    organized: bool


class BTFModel(nn.Module):
    """BTF feature extraction, memory bank and scoring.

    Args:
        settings: every switch (:class:`~anomalib_3d_plugins.btf.settings.BTFSettings`); ``None`` =
            the defaults.
        **changes: switches applied on top of ``settings`` (``BTFModel(feature_mode="raw")``).
    """

    def __init__(self, settings: BTFSettings | None = None, **changes: Any) -> None:  # noqa: ANN401
        super().__init__()
        settings = settings.replace(**changes) if settings is not None else BTFSettings(**changes)
        self.settings = settings
        self.memory_bank = MemoryBank(
            coreset_ratio=settings.coreset_ratio, projection_dim=settings.projection_dim, seed=settings.seed
        )
        self.rgb_backbone = (
            RGBBackbone(settings.backbone_weights or None, pretrained=settings.pretrained_backbone, seed=settings.seed)
            if settings.feature_mode == "rgb_fpfh"
            else None
        )

    # ----------------------------------------------------------------------------------------
    # features
    # ----------------------------------------------------------------------------------------
    @property
    def _geometric_mode(self) -> str:
        return "raw" if self.settings.feature_mode == "raw" else "fpfh"

    def _point_features(self, points: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        return point_features(
            points,
            batch,
            self._geometric_mode,  # type: ignore[arg-type]
            fpfh_radius=self.settings.fpfh_radius,
            fpfh_max_nn=self.settings.fpfh_max_nn,
            normal_k=self.settings.normal_k,
        )

    def _is_organized(self, point_batch) -> bool:  # noqa: ANN001
        return self.settings.use_grid and point_batch.grid_index is not None and point_batch.grid_shape is not None

    def _subgrid(self, grid_index: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """Nearest-pixel subsampling of an organized grid to ``grid_size``.

        Returns ``(rows of the kept points, their flat index in the small grid, h, w)``.
        """
        longest = max(height, width)
        if self.settings.grid_size is None or longest <= self.settings.grid_size:
            return torch.arange(grid_index.shape[0], device=grid_index.device), grid_index, height, width
        h = max(1, round(height * self.settings.grid_size / longest))
        w = max(1, round(width * self.settings.grid_size / longest))
        dense = torch.full((height * width,), -1, dtype=torch.long, device=grid_index.device)
        dense[grid_index] = torch.arange(grid_index.shape[0], device=grid_index.device)
        rows = ((torch.arange(h, device=grid_index.device) + 0.5) * height / h).long()
        cols = ((torch.arange(w, device=grid_index.device) + 0.5) * width / w).long()
        picked = dense.view(height, width)[rows][:, cols].reshape(-1)
        keep = picked >= 0
        return picked[keep], keep.nonzero().squeeze(1), h, w

    def _organized_features(self, point_batch, normalized: torch.Tensor) -> list[torch.Tensor]:  # noqa: ANN001
        """``(P * P, D)`` patch features of every cloud of an organized batch."""
        out = []
        ptr = point_batch.ptr.tolist()
        image = point_batch.image
        if self.rgb_backbone is not None and image is None:
            raise PointCloudError(
                "feature_mode='rgb_fpfh' needs RGB images, and this batch has none.",
                path=(point_batch.point_path or [None])[0],
                fix="use feature_mode='fpfh' for data without RGB (or a datamodule that loads rgb/)",
            )
        for b in range(point_batch.batch_size):
            lo, hi = ptr[b], ptr[b + 1]
            height, width = (int(v) for v in point_batch.grid_shape[b])
            rows, small_index, h, w = self._subgrid(point_batch.grid_index[lo:hi], height, width)
            points = normalized[lo:hi][rows]
            features = self._point_features(points, torch.zeros(points.shape[0], dtype=torch.long, device=points.device))
            patch_grid = self.settings.patch_grid
            patches = grid_patch_features(features, small_index, (h, w), patch_grid, self.settings.pool_kernel)
            if self.rgb_backbone is not None:
                rgb = self.rgb_backbone(image[b : b + 1].as_subclass(torch.Tensor).to(points.device), patch_grid)
                patches = torch.cat([rgb.to(patches.dtype), patches], dim=1)
            out.append(patches[0].flatten(1).T)
        return out

    def _unorganized_rows(self, normalized: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Indices of the points that carry features: all, or an FPS subsample of ``max_points``
        per larger cloud (FPS spreads the samples evenly over the surface, whatever the scan's
        own density)."""
        max_points = self.settings.max_points
        if max_points is None:
            return torch.arange(normalized.shape[0], device=normalized.device)
        counts = torch.bincount(batch)
        ptr = [0, *counts.cumsum(0).tolist()]
        rows = []
        for b in range(counts.shape[0]):
            lo, hi = ptr[b], ptr[b + 1]
            if hi - lo <= max_points:
                rows.append(torch.arange(lo, hi, device=normalized.device))
            else:
                rows.append(farthest_point_sample(normalized[lo:hi], max_points).to(normalized.device) + lo)
        return torch.cat(rows)

    def extract(self, point_batch) -> tuple[_Extracted, torch.Tensor, torch.Tensor]:  # noqa: ANN001
        """Features of a batch: ``(extracted, normalised points (ΣN, 3), scored rows)``."""
        if self.settings.feature_mode == "rgb_fpfh" and not self._is_organized(point_batch):
            raise PointCloudError(
                "feature_mode='rgb_fpfh' works on organized scans with RGB (MVTec 3D-AD layout); this batch "
                "is an unorganized cloud.",
                path=(point_batch.point_path or [None])[0],
                fix="use feature_mode='fpfh' or 'raw' for unorganized clouds",
            )
        batch = point_batch.batch_index
        normalized = normalize_clouds(point_batch.points, batch, self.settings.normalization)  # type: ignore[arg-type]
        if self._is_organized(point_batch):
            per_cloud = self._organized_features(point_batch, normalized)
            owner = torch.cat(
                [torch.full((f.shape[0],), b, dtype=torch.long, device=f.device) for b, f in enumerate(per_cloud)]
            )
            return _Extracted(torch.cat(per_cloud), owner, True), normalized, torch.empty(0, dtype=torch.long)
        rows = self._unorganized_rows(normalized, batch)
        sampled, sampled_batch = normalized[rows], batch[rows]
        features = knn_pool(sampled, self._point_features(sampled, sampled_batch), sampled_batch, self.settings.pool_k)
        return _Extracted(features, sampled_batch, False), normalized, rows

    @torch.no_grad()
    def collect(self, point_batch) -> torch.Tensor:  # noqa: ANN001
        """``(F, D)`` training features of a batch of normal clouds (for :meth:`fit`)."""
        return self.extract(point_batch)[0].features

    def fit(self, collected: list[torch.Tensor]) -> None:
        """Build the memory bank (gathered over ranks, coreset-subsampled) from collected features."""
        self.memory_bank.fit(torch.cat(collected))

    # ----------------------------------------------------------------------------------------
    # scoring
    # ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, point_batch) -> BTFPrediction:  # noqa: ANN001
        """Scores of a :class:`PointCloudBatch`: per point and per cloud."""
        extracted, normalized, rows = self.extract(point_batch)
        distances, nn_index = self.memory_bank.query(extracted.features, k=1)
        scores = distances[:, 0]
        pred_score = self.memory_bank.object_score(
            scores, extracted.features, nn_index[:, 0], extracted.owner, self.settings.num_neighbors
        )
        batch = point_batch.batch_index
        if extracted.organized:
            anomaly_map = self._organized_map(point_batch, scores)
        else:
            anomaly_map = self._unorganized_map(normalized, batch, rows, scores)
        return BTFPrediction(anomaly_map=anomaly_map, pred_score=pred_score)

    def _organized_map(self, point_batch, scores: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        settings = self.settings
        patches = settings.patch_grid * settings.patch_grid
        ptr = point_batch.ptr.tolist()
        out = []
        for b in range(point_batch.batch_size):
            height, width = (int(v) for v in point_batch.grid_shape[b])
            sigma = 0.0
            if settings.smoothing:
                sigma = (settings.smoothing_sigma if settings.smoothing_sigma is not None else 4.0) * max(height, width) / 224
            patch_scores = scores[b * patches : (b + 1) * patches].view(settings.patch_grid, settings.patch_grid)
            out.append(patch_scores_to_points(patch_scores, point_batch.grid_index[ptr[b] : ptr[b + 1]], (height, width), sigma))
        return torch.cat(out)

    def _unorganized_map(
        self, normalized: torch.Tensor, batch: torch.Tensor, rows: torch.Tensor, scores: torch.Tensor
    ) -> torch.Tensor:
        """Scores of the sampled ``rows`` smoothed over their neighbours, then carried to every point.

        Smoothing on the subsample keeps ``smoothing_k`` neighbours spanning the same surface
        area at every cloud size (on a dense scan they would cover almost nothing).
        """
        sampled, sampled_batch = normalized[rows], batch[rows]
        if self.settings.smoothing and self.settings.smoothing_k > 1:
            smallest = int(torch.bincount(sampled_batch).min())
            sigma = self.settings.smoothing_sigma if self.settings.smoothing_sigma is not None else 0.02
            scores = smooth_scores(sampled, scores, sampled_batch, k=min(self.settings.smoothing_k, smallest), sigma=sigma)
        if rows.shape[0] != normalized.shape[0]:
            scores = interpolate_nearest(sampled, scores, normalized, sampled_batch, batch, k=3)
        return scores
