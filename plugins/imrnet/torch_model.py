"""IMRNet in plain PyTorch: GPS patches, PMR mask reconstruction, iterative test-time
reconstruction and DFC scoring (Li et al., "Towards Scalable 3D Anomaly Detection and
Localization", CVPR 2024). Every reading of the paper made here is listed in the plugin README.

Data flow of one forward (inference)::

    input clouds (ΣN, 3) ──normalise per cloud (centre, unit sphere)──► subsample to num_points
        ──GPS centres + kNN──► patches P0 (B, G, K, 3) ──iterative mask reconstruction──► P_T
        ├─ point score:   Chamfer(P0_g, P_T_g) per patch ─► mean over the patches holding a point
        └─ feature score: F = fuse(dec_1..3(P0)); per patch |F - nearest template vector|
           (feature_reference="template", default) or |F - template_reg(fuse(dec_1..3(P_T)))|
           (feature_reference="reconstruction", the paper read literally) ─► points
        both ─► divided by their training-set scale, summed ─► every input point (inverse-distance
        from the nearest scored network points)
    + geometric residual (not in the paper; ``geometric_score_weight``): every input point, after
      bounding-box normalisation and registration to the training templates, scores its distance to
      the nearest template point / the templates' leave-one-out mean
    ─► object score = max (or top-k mean).

The point score is off by default and the test masks are random (see the plugin README,
"Diagnosis"); :data:`PAPER_LITERAL` restores the paper's reading.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from anomalib_3d.nn.point_mae import PreparedClouds
from anomalib_3d.ops import interpolate_nearest, smooth_scores

from .calibration import DFCCalibration
from .loss import patch_chamfer_scores, patch_point_distances
from .network import MaskReconstructionNetwork
from .scoring import nearest_template, object_scores, patch_to_point_scores, regularize
from .settings import ARCHITECTURE, FEATURE_REFERENCES, POINT_SCORE_MODES, IMRNetSettings
from .templates import GeometricResidual

#: Switches that give the paper's method read literally (DFC against the reconstruction, no
#: geometric residual, no registration, one pass of window masks); see the plugin README.
PAPER_LITERAL: dict[str, object] = {
    "use_point_score": True,
    "feature_reference": "reconstruction",
    "feature_normalization": "none",
    "score_scale": "mean",
    "test_num_groups": None,
    "geometric_score_weight": 0.0,
    "geometric_smoothing_k": 0,
    "registration": "none",
    "test_masks": "windows",
    "test_mask_passes": 1,
}

# Checkpoint keys of the geometric templates stored as flat buffers -> keys in the template bank.
_FLAT_TEMPLATE_KEYS = {"geometric_templates": "geometric_bank.points", "geometric_ptr": "geometric_bank.ptr"}


class IMRNetPrediction(NamedTuple):
    """Output of :meth:`IMRNetModel.forward`.

    Attributes:
        anomaly_map: ``(ΣN,)`` combined score of every input point.
        pred_score: ``(B,)`` object scores.
        point_map: ``(ΣN,)`` normalised point (Chamfer) score, or None when disabled.
        feature_map: ``(ΣN,)`` normalised feature score, or None when disabled.
        geometric_map: ``(ΣN,)`` normalised geometric residual (distance to the registered
            training templates), or None when ``geometric_score_weight`` is 0.
    """

    anomaly_map: torch.Tensor
    pred_score: torch.Tensor
    point_map: torch.Tensor | None
    feature_map: torch.Tensor | None
    geometric_map: torch.Tensor | None = None


class IMRNetModel(DFCCalibration, GeometricResidual, MaskReconstructionNetwork):
    """IMRNet: the PMR network (:class:`~.network.MaskReconstructionNetwork`), DFC scoring, the
    geometric residual (:class:`~.templates.GeometricResidual`) and the training-set statistics
    (:class:`~.calibration.DFCCalibration`).

    Args:
        settings: every switch (:class:`~anomalib_3d_plugins.imrnet.settings.IMRNetSettings`);
            ``None`` = the defaults.
        **changes: switches applied on top of ``settings`` by name (``IMRNetModel(embed_dim=128)``).

    The settings are read once (:meth:`apply_settings`) into the attributes the network, the DFC
    scoring, the calibration and the geometric residual use; :meth:`apply_settings` with a changed
    copy (``model.settings.replace(...)``) switches the scoring of a built model.
    """

    settings: IMRNetSettings

    def __init__(self, settings: IMRNetSettings | None = None, **changes: object) -> None:
        settings = settings or IMRNetSettings()
        if changes:
            settings = settings.replace(**changes)
        super().__init__(settings)
        # DFC statistics computed from the training set by calibrate(); persistent buffers, so they
        # travel with every checkpoint.
        feature_dim = settings.embed_dim * len(settings.feature_layers)
        self.register_buffer("template_bank", torch.zeros(settings.template_size, feature_dim))
        self.register_buffer("template_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("template_delta", torch.zeros(()))
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))
        self.register_buffer("point_score_scale", torch.ones(()))
        self.register_buffer("feature_score_scale", torch.ones(()))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        self.init_geometric_residual(settings)
        self.apply_settings(settings)

    def apply_settings(self, settings: IMRNetSettings) -> None:
        """Use ``settings`` from now on: the one place where the switches become attributes.

        Raises:
            ValueError: ``settings`` changes a switch that fixes parameters or buffers
                (:data:`~.settings.ARCHITECTURE`); build a new model for those.
        """
        current = getattr(self, "settings", None)
        if current is not None:
            fixed = [name for name in ARCHITECTURE if getattr(settings, name) != getattr(current, name)]
            if fixed:
                msg = f"{fixed} fix the network's parameters or buffers: build a new IMRNetModel to change them."
                raise ValueError(msg)
        self.settings = settings
        super().apply_settings(settings)  # the network's sampling, masks, iterations and seed
        self.use_point_score = settings.use_point_score
        self.use_feature_score = settings.use_feature_score
        self.feature_reference = settings.feature_reference
        self.template_regularization = settings.template_regularization
        self.template_threshold = settings.template_threshold
        self.template_quantile = settings.template_quantile
        self.feature_normalization = settings.feature_normalization
        self.score_scale = settings.score_scale
        self.point_score_weight = settings.point_score_weight
        self.feature_score_weight = settings.feature_score_weight
        self.point_aggregation = settings.point_aggregation
        self.point_score_mode = settings.point_score_mode
        self.object_score = settings.object_score
        self.object_topk = settings.object_topk
        self.interpolation_k = settings.interpolation_k
        self.smoothing_k = settings.smoothing_k
        self.smoothing_sigma = settings.smoothing_sigma
        self.test_mask_passes = settings.test_mask_passes
        self.geometric_score_weight = settings.geometric_score_weight
        self.geometric_smoothing_k = settings.geometric_smoothing_k
        # The template bank's own registration switches (see GeometricResidual).
        self.registration = settings.registration
        self.registration_templates = settings.registration_templates
        self.registration_points = settings.registration_points
        self.template_points = settings.template_points
        self.template_selection = settings.template_selection

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        # A template of another capacity (template_size) loads as is: it is data, not architecture.
        bank = state_dict.get(prefix + "template_bank")
        if isinstance(bank, torch.Tensor) and bank.shape[1:] == self.template_bank.shape[1:]:
            self.template_bank = torch.zeros_like(bank, device=self.template_bank.device)
        for flat, nested in _FLAT_TEMPLATE_KEYS.items():
            if prefix + flat in state_dict:
                state_dict[prefix + nested] = state_dict.pop(prefix + flat)
        # Checkpoints calibrated before features were normalised hold raw template features: the
        # identity frame scores them as they were scored then.
        if prefix + "template_bank" in state_dict and prefix + "feature_mean" not in state_dict:
            state_dict[prefix + "feature_mean"] = torch.zeros_like(self.feature_mean)
            state_dict[prefix + "feature_std"] = torch.ones_like(self.feature_std)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ----------------------------------------------------------------------------------------
    # DFC scores of patches
    # ----------------------------------------------------------------------------------------
    def _template(self) -> torch.Tensor:
        """``(count, F)`` the calibrated feature template."""
        return self.template_bank[: int(self.template_count)]

    def regularize(self, features: torch.Tensor) -> torch.Tensor:
        """Template regularisation (paper Eq. 19): rows farther than δ from the template become the
        nearest template vector. Features ``(B, G, F)`` are returned unchanged before calibration."""
        if not self.template_regularization or int(self.template_count) == 0:
            return features
        return regularize(features, self._template(), self.template_delta)

    def patch_scores(
        self, neighborhoods: torch.Tensor, centers: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Raw DFC patch scores (before training-set normalisation).

        Returns:
            ``(point_scores, feature_scores)``: ``(B, G)`` (or ``(B, G, K)`` per patch point with
            ``point_score_mode="point"``) and ``(B, G)``; None when disabled.
        """
        template_mode = (
            self.use_feature_score and self.feature_reference == "template" and int(self.template_count) > 0
        )
        original_features = (
            self.normalize_features(self.decoder_features(neighborhoods, centers)) if self.use_feature_score else None
        )
        point_scores = feature_scores = None
        if template_mode:
            _, distance = nearest_template(original_features.reshape(-1, original_features.shape[-1]), self._template())
            feature_scores = distance.view(original_features.shape[:2])
        if not (self.use_point_score or (self.use_feature_score and not template_mode)):
            return point_scores, feature_scores
        # Several independent reconstruction runs: every patch is judged from several contexts. A
        # patch's point score averages the runs that reconstructed it (0 if none did).
        point_sum = point_count = None
        feature_runs = []
        for run in range(self.test_mask_passes):
            reconstructed = self.iterative_reconstruct(neighborhoods, centers, run)
            if self.use_point_score:
                compare = patch_point_distances if self.point_score_mode == "point" else patch_chamfer_scores
                scores = compare(neighborhoods, reconstructed)
                masked = torch.zeros(centers.shape[1], device=scores.device)
                masked[torch.cat(self.test_masks(scores.device, run, centers.shape[1]))] = 1.0
                masked = masked.view(1, -1, *([1] * (scores.dim() - 2)))
                point_sum = scores * masked if point_sum is None else point_sum + scores * masked
                point_count = masked if point_count is None else point_count + masked
            if self.use_feature_score and not template_mode:
                reconstructed_features = self.regularize(
                    self.normalize_features(self.decoder_features(reconstructed, centers))
                )
                feature_runs.append((original_features - reconstructed_features).norm(dim=-1))
        if point_sum is not None:
            point_scores = point_sum / point_count.clamp_min(1.0)
        if feature_runs:
            feature_scores = torch.stack(feature_runs).mean(dim=0)
        return point_scores, feature_scores

    # ----------------------------------------------------------------------------------------
    # inference
    # ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def raw_scores(
        self, points: torch.Tensor, batch: torch.Tensor, *, paths: Sequence[str] | None = None
    ) -> tuple[PreparedClouds, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """Un-normalised per-network-point DFC scores.

        Returns:
            ``(prepared, point_scores (ΣM,) | None, feature_scores (ΣM,) | None, covered (ΣM,) bool)``.
        """
        prepared = self.prepare(points, batch, paths=paths)
        patches = self.make_patches(prepared)
        point_patch, feature_patch = self.patch_scores(patches.neighborhoods, patches.centers)
        num_net = prepared.points.shape[0]
        point_scores = feature_scores = None
        covered = None
        if point_patch is not None:
            point_scores, covered = patch_to_point_scores(
                point_patch, patches.group_index, num_net, self.point_aggregation
            )
        if feature_patch is not None:
            feature_scores, covered = patch_to_point_scores(
                feature_patch, patches.group_index, num_net, self.point_aggregation
            )
        return prepared, point_scores, feature_scores, covered

    @torch.no_grad()
    def forward(
        self, points: torch.Tensor, batch: torch.Tensor | None = None, *, paths: Sequence[str] | None = None
    ) -> IMRNetPrediction:
        """Score every input point and every cloud.

        Args:
            points: ``(ΣN, 3)`` input points (any scale / position; normalised internally).
            batch: ``(ΣN,) long`` sorted cloud ids (None: one cloud).
            paths: file of each cloud, for error messages.

        Returns:
            :class:`IMRNetPrediction` with one score per input point (none dropped).
        """
        if batch is None:
            batch = torch.zeros(points.shape[0], dtype=torch.long, device=points.device)
        num_clouds = int(batch[-1]) + 1 if batch.numel() else 0
        prepared, point_scores, feature_scores, covered = self.raw_scores(points, batch, paths=paths)
        src_points = points[prepared.source_index[covered]].float()
        src_batch = prepared.batch[covered]
        min_count = int(torch.bincount(src_batch, minlength=num_clouds).min())
        k = min(self.interpolation_k, min_count)
        smoothing_k = min(self.smoothing_k, min_count)

        def to_input(values: torch.Tensor) -> torch.Tensor:
            values = values[covered]
            if smoothing_k > 1:
                values = smooth_scores(
                    prepared.points[covered], values, src_batch, k=smoothing_k, sigma=self.smoothing_sigma
                )
            return interpolate_nearest(src_points, values, points.float(), src_batch, batch, k=k)

        point_map = feature_map = geometric_map = None
        anomaly_map = torch.zeros(points.shape[0], device=points.device)
        if self.geometric_score_weight > 0:
            geometric_map = self.geometric_scores(points, batch).to(anomaly_map)
            anomaly_map = anomaly_map + self.geometric_score_weight * geometric_map
        if point_scores is not None:
            point_map = to_input(point_scores / self.point_score_scale)
            anomaly_map = anomaly_map + self.point_score_weight * point_map
        if feature_scores is not None:
            feature_map = to_input(feature_scores / self.feature_score_scale)
            anomaly_map = anomaly_map + self.feature_score_weight * feature_map
        pred_score = object_scores(anomaly_map, batch, num_clouds, self.object_score, self.object_topk)
        return IMRNetPrediction(anomaly_map, pred_score, point_map, feature_map, geometric_map)


__all__ = [
    "FEATURE_REFERENCES",
    "PAPER_LITERAL",
    "POINT_SCORE_MODES",
    "IMRNetModel",
    "IMRNetPrediction",
    "IMRNetSettings",
    "PreparedClouds",
]
