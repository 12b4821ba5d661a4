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
from anomalib_3d.ops.templates import TEMPLATE_REGISTRATIONS, TEMPLATE_SELECTIONS

from .calibration import FEATURE_NORMALIZATIONS, SCORE_SCALES, DFCCalibration
from .loss import patch_chamfer_scores, patch_point_distances
from .network import MaskReconstructionNetwork, check_choice
from .scoring import (
    OBJECT_SCORES,
    POINT_AGGREGATIONS,
    nearest_template,
    object_scores,
    patch_to_point_scores,
    regularize,
)
from .templates import GeometricResidual

POINT_SCORE_MODES = ("patch", "point")
FEATURE_REFERENCES = ("template", "reconstruction")

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
        num_points, num_groups, test_num_groups, group_size, sampler, gps_k, gps_threshold, gps_salient_density,
            subsample, mask_ratio, num_iterations, iterative_reconstruction, feature_layers,
            test_masks, cache_training_patches: the network, see
            :class:`~.network.MaskReconstructionNetwork`.
        embed_dim, tokenizer_width, encoder_depth, decoder_depth, num_heads, mlp_ratio,
            drop_path_rate: Point-MAE sizes (384, 256, 12, 4, 6, 4, 0.1 in Point-MAE), see
            :class:`~anomalib_3d.nn.point_mae.PointMAE`.
        use_point_score, use_feature_score: the two DFC scores (at least one). The point
            (Chamfer) score is off by default: it stays near chance on every split we measured and
            lowers the combined score (plugin README, "Diagnosis").
        feature_reference: what the input's fused features are compared with (the feature score):
            ``"reconstruction"``: the fused features of the reconstructed cloud, template-regularised
            (paper Eq. 16-19, literally); ``"template"``: the nearest feature of the training
            template (the template regularisation with δ = 0, looked up from the input feature;
            robust when the reconstruction network is small or briefly trained - see README).
        template_regularization: in ``"reconstruction"`` mode, replace reconstruction features
            farther than ``δ`` from the training template by the template feature (paper Eq. 19).
        template_threshold: ``δ``; None = the ``template_quantile`` quantile of the training
            features' distances to the template (computed in :meth:`calibrate`).
        template_quantile: see above.
        template_size: features kept in the template bank (farthest-point selection).
        feature_normalization: frame of the fused decoder features before any comparison:
            ``"none"`` (the paper), ``"center"`` (minus the training features' mean) or
            ``"standardize"`` (also divided by their spread per dimension). The features are
            layer-normalised per patch and vary little between patches, so un-centred float32
            distances lose most of their digits to cancellation (see README, "Diagnosis").
        score_scale: what each score map is divided by before the maps are summed: ``"mean"``
            (the paper: its mean over the training clouds) or ``"cloud_max"`` (the mean over
            held-out training clouds of each cloud's maximum, so that on a normal cloud every
            map's maximum is about 1 and no map's tail dominates the object score).
        point_score_weight, feature_score_weight: weights of the two normalised scores in the sum.
        point_aggregation: how a point combines the scores of the patches holding it (``"mean"``:
            paper Eq. 15; ``"max"``).
        point_score_mode: ``"patch"``: a patch contributes its Chamfer distance to the
            reconstruction (paper Eq. 13-14); ``"point"``: each of its points contributes its own
            squared distance to the reconstructed patch.
        object_score: ``"max"`` of the point scores or ``"topk"`` mean of the top ``object_topk``
            fraction.
        object_topk: fraction of points averaged for ``object_score="topk"``.
        interpolation_k: neighbours used to carry scores from network points to every input point.
        smoothing_k: Gaussian smoothing of the network-point scores over their ``smoothing_k``
            nearest neighbours before interpolation (0: off).
        smoothing_sigma: width of that Gaussian in normalised units (clouds have radius 1).
        seed: seed of the test-time masks, of deterministic subsampling and of RANSAC (same seed ⇒
            same predictions).
        test_mask_passes: independent runs of the iterative reconstruction (each with its own
            masks); the DFC scores are averaged over them, so every patch is judged several times.
        geometric_score_weight: weight of the geometric residual added to the DFC scores (0: off,
            the paper). Every input point (full resolution, no subsampling) scores its distance to
            the nearest point of the training templates after bounding-box normalisation and
            registration, divided by the mean leave-one-out distance of the training clouds.
        geometric_smoothing_k: average the geometric residual of every point over its
            ``geometric_smoothing_k`` nearest input points (0 or 1: off). A single point's distance
            to the templates carries the scanner noise of both; a defect moves a whole region.
        registration: how a cloud is aligned to the templates for the geometric residual:
            ``"none"``, ``"icp"`` (poses within ~30°) or ``"global+icp"`` (FPFH-RANSAC, any pose);
            all via :class:`anomalib_3d.ops.TemplateBank`.
        registration_templates: templates tried as ICP targets per test cloud (best fit kept).
        template_selection: which templates those are: ``"first"`` (the first in canonical order;
            all templates form the distance bank) or ``"nearest"`` (the ones closest to the cloud in
            the bounding-box frame, by mean nearest-point distance of a 256-point probe; only they form
            the distance bank - for one model trained on several categories).
        registration_points: the cloud is FPS-subsampled to this many points for registration only.
        template_points: each training cloud is FPS-subsampled to this many points in the
            geometric template bank (None: whole).
    """

    def __init__(
        self,
        num_points: int = 8192,
        num_groups: int = 256,
        group_size: int = 64,
        sampler: str = "gps",
        test_num_groups: int | None = None,
        gps_k: int = 16,
        gps_threshold: float = 0.3,
        gps_salient_density: float = 2.0,
        subsample: str = "fps",
        embed_dim: int = 384,
        tokenizer_width: int = 256,
        encoder_depth: int = 12,
        decoder_depth: int = 4,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        mask_ratio: float = 0.4,
        num_iterations: int = 3,
        iterative_reconstruction: bool = True,
        use_point_score: bool = False,
        use_feature_score: bool = True,
        feature_layers: Sequence[int] = (1, 2, 3),
        feature_reference: str = "template",
        template_regularization: bool = True,
        template_threshold: float | None = None,
        template_quantile: float = 0.95,
        template_size: int = 4096,
        feature_normalization: str = "none",
        score_scale: str = "mean",
        point_score_weight: float = 1.0,
        feature_score_weight: float = 1.0,
        point_aggregation: str = "mean",
        point_score_mode: str = "patch",
        object_score: str = "max",
        object_topk: float = 0.01,
        interpolation_k: int = 3,
        smoothing_k: int = 0,
        smoothing_sigma: float = 0.05,
        cache_training_patches: bool = True,
        seed: int = 0,
        test_masks: str = "random",
        test_mask_passes: int = 2,
        geometric_score_weight: float = 0.5,
        geometric_smoothing_k: int = 0,
        registration: str = "icp",
        registration_templates: int = 4,
        registration_points: int = 1024,
        template_points: int | None = 4096,
        template_selection: str = "first",
    ) -> None:
        check_choice("template_selection", template_selection, TEMPLATE_SELECTIONS)
        check_choice("registration", registration, TEMPLATE_REGISTRATIONS)
        if test_mask_passes < 1:
            msg = f"test_mask_passes must be >= 1, got {test_mask_passes}."
            raise ValueError(msg)
        if geometric_score_weight < 0:
            msg = f"geometric_score_weight must be >= 0, got {geometric_score_weight}."
            raise ValueError(msg)
        if geometric_smoothing_k < 0:
            msg = f"geometric_smoothing_k must be >= 0, got {geometric_smoothing_k}."
            raise ValueError(msg)
        if registration_templates < 1:
            msg = f"registration_templates must be >= 1, got {registration_templates}."
            raise ValueError(msg)
        check_choice("point_aggregation", point_aggregation, POINT_AGGREGATIONS)
        check_choice("feature_reference", feature_reference, FEATURE_REFERENCES)
        check_choice("point_score_mode", point_score_mode, POINT_SCORE_MODES)
        check_choice("object_score", object_score, OBJECT_SCORES)
        check_choice("feature_normalization", feature_normalization, FEATURE_NORMALIZATIONS)
        check_choice("score_scale", score_scale, SCORE_SCALES)
        if not (use_point_score or use_feature_score):  # the geometric residual alone is not IMRNet
            msg = "at least one of use_point_score / use_feature_score must be True."
            raise ValueError(msg)
        if not 0.0 < object_topk <= 1.0:
            msg = f"object_topk must be in (0, 1], got {object_topk}."
            raise ValueError(msg)
        super().__init__(
            num_points=num_points,
            num_groups=num_groups,
            group_size=group_size,
            sampler=sampler,
            test_num_groups=test_num_groups,
            gps_k=gps_k,
            gps_threshold=gps_threshold,
            gps_salient_density=gps_salient_density,
            subsample=subsample,
            mask_ratio=mask_ratio,
            num_iterations=num_iterations,
            iterative_reconstruction=iterative_reconstruction,
            feature_layers=feature_layers,
            test_masks=test_masks,
            cache_training_patches=cache_training_patches,
            seed=seed,
            embed_dim=embed_dim,
            tokenizer_width=tokenizer_width,
            encoder_depth=encoder_depth,
            decoder_depth=decoder_depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate,
        )
        self.use_point_score = use_point_score
        self.use_feature_score = use_feature_score
        self.feature_reference = feature_reference
        self.template_regularization = template_regularization
        self.template_threshold = template_threshold
        self.template_quantile = template_quantile
        self.feature_normalization = feature_normalization
        self.score_scale = score_scale
        self.point_score_weight = point_score_weight
        self.feature_score_weight = feature_score_weight
        self.point_aggregation = point_aggregation
        self.point_score_mode = point_score_mode
        self.object_score = object_score
        self.object_topk = object_topk
        self.interpolation_k = interpolation_k
        self.smoothing_k = smoothing_k
        self.smoothing_sigma = smoothing_sigma
        self.test_mask_passes = test_mask_passes
        self.geometric_score_weight = geometric_score_weight
        self.geometric_smoothing_k = geometric_smoothing_k

        # DFC statistics computed from the training set by calibrate(); persistent buffers, so they
        # travel with every checkpoint.
        feature_dim = embed_dim * len(self.feature_layers)
        self.register_buffer("template_bank", torch.zeros(template_size, feature_dim))
        self.register_buffer("template_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("template_delta", torch.zeros(()))
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))
        self.register_buffer("point_score_scale", torch.ones(()))
        self.register_buffer("feature_score_scale", torch.ones(()))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        self.init_geometric_residual(
            registration, registration_templates, registration_points, template_points, template_selection
        )

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


__all__ = ["PAPER_LITERAL", "IMRNetModel", "IMRNetPrediction", "PreparedClouds"]
