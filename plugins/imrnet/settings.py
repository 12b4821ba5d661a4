"""Every switch of the IMRNet network, DFC scoring, geometric residual and statistics, once.

:class:`~anomalib_3d_plugins.imrnet.lightning_model.IMRNet` takes these fields as its
constructor arguments (its signature, which anomalib's CLI reads, is written from them by
:func:`~anomalib_3d.settings.switches_from`) and builds an :class:`IMRNetSettings` from them; the torch model
(:class:`~anomalib_3d_plugins.imrnet.torch_model.IMRNetModel`) reads it once
(:meth:`~anomalib_3d_plugins.imrnet.torch_model.IMRNetModel.apply_settings`). Defaults are the
paper's sizes with the scoring departures measured in ``README.md`` ("Diagnosis").
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from anomalib_3d.ops import SAMPLERS
from anomalib_3d.ops.templates import TEMPLATE_REGISTRATIONS, TEMPLATE_SELECTIONS
# check_choice stays importable from here (it was public here before it moved to the core).
from anomalib_3d.settings import ModelSettings, check_at_least, check_choice

POINT_SCORE_MODES = ("patch", "point")
FEATURE_REFERENCES = ("template", "reconstruction")
SUBSAMPLERS = ("fps", "random")
TEST_MASKS = ("windows", "random")
POINT_AGGREGATIONS = ("mean", "max")
OBJECT_SCORES = ("max", "topk")
SCORE_SCALES = ("mean", "cloud_max")
FEATURE_NORMALIZATIONS = ("none", "center", "standardize")

#: Fields that fix the network's parameters or buffers: a built model cannot change them.
ARCHITECTURE = ("group_size", "embed_dim", "tokenizer_width", "encoder_depth", "decoder_depth", "num_heads",
                "mlp_ratio", "drop_path_rate", "feature_layers", "template_size")


@dataclass(frozen=True)
class IMRNetSettings(ModelSettings):
    """The switches of :class:`~anomalib_3d_plugins.imrnet.torch_model.IMRNetModel`."""

    # -- GPS patches (the PMR network's input)
    #: points per cloud fed to the network (clouds are subsampled to it; smaller clouds are used whole).
    num_points: int = 8192
    #: patch centres ``G`` per cloud (paper: 256).
    num_groups: int = 256
    #: points ``K`` per patch (paper: 64).
    group_size: int = 64
    #: centre sampler: ``"gps"`` (paper), ``"fps"``, ``"random"`` or ``"voxel"`` (Table 4).
    sampler: str = "gps"
    #: patch centres per cloud when scoring (the training-set statistics after training, and test);
    #: None: ``num_groups``. The network takes any number of patches, so scoring may use denser,
    #: overlapping patches than training did: every point is then judged by several patches and the
    #: feature map gets finer. Capped at ``num_points`` and, in a batch holding a smaller cloud, at
    #: that cloud's point count (never below ``num_groups``): small scans still score, with fewer
    #: patches; score them with batch size 1 for results independent of their batch-mates.
    test_num_groups: int | None = None
    #: GPS neighbourhood size, salient fraction ``t`` (paper 0.3) and density ratio of the salient
    #: region (paper 2).
    gps_k: int = 16
    gps_threshold: float = 0.3
    gps_salient_density: float = 2.0
    #: how clouds are reduced to ``num_points``: ``"fps"`` or ``"random"``.
    subsample: str = "fps"
    # -- Point-MAE sizes (see anomalib_3d.nn.point_mae.PointMAE)
    #: Point-MAE sizes (Point-MAE: 384, 256, 12, 4, 6, 4, 0.1).
    embed_dim: int = 384
    tokenizer_width: int = 256
    encoder_depth: int = 12
    decoder_depth: int = 4
    num_heads: int = 6
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    # -- masked and iterative reconstruction
    #: fraction of patches masked (paper 0.4), in training and at each test iteration.
    mask_ratio: float = 0.4
    #: test-time reconstruction iterations (paper 3).
    num_iterations: int = 3
    #: feed each iteration's output to the next (paper). ``False``: each of the ``num_iterations``
    #: masks is reconstructed from the original input instead.
    iterative_reconstruction: bool = True
    # -- DFC scores
    #: the two DFC scores (at least one). The point (Chamfer) score is off by default: it stays near
    #: chance on every split we measured and lowers the combined score (plugin README, "Diagnosis").
    use_point_score: bool = False
    use_feature_score: bool = True
    #: 1-based decoder blocks whose outputs are fused (paper: 1, 2, 3).
    feature_layers: tuple[int, ...] = (1, 2, 3)
    #: what the input's fused features are compared with (the feature score): ``"reconstruction"``:
    #: the fused features of the reconstructed cloud, template-regularised (paper Eq. 16-19,
    #: literally); ``"template"``: the nearest feature of the training template (the template
    #: regularisation with δ = 0, looked up from the input feature; robust when the reconstruction
    #: network is small or briefly trained - see README).
    feature_reference: str = "template"
    #: in ``"reconstruction"`` mode, replace reconstruction features farther than ``δ`` from the
    #: training template by the template feature (paper Eq. 19).
    template_regularization: bool = True
    #: ``δ``; None = the ``template_quantile`` quantile of the training features' distances to the
    #: template (computed when calibrating).
    template_threshold: float | None = None
    #: see ``template_threshold``.
    template_quantile: float = 0.95
    #: features kept in the template bank (farthest-point selection).
    template_size: int = 4096
    #: frame of the fused decoder features before any comparison: ``"none"`` (the paper),
    #: ``"center"`` (minus the training features' mean) or ``"standardize"`` (also divided by their
    #: spread per dimension). The features are layer-normalised per patch and vary little between
    #: patches, so un-centred float32 distances lose most of their digits to cancellation (see
    #: README, "Diagnosis").
    feature_normalization: str = "none"
    #: what each score map is divided by before the maps are summed: ``"mean"`` (the paper: its mean
    #: over the training clouds) or ``"cloud_max"`` (the mean over held-out training clouds of each
    #: cloud's maximum, so that on a normal cloud every map's maximum is about 1 and no map's tail
    #: dominates the object score).
    score_scale: str = "mean"
    #: weights of the two normalised scores in the sum.
    point_score_weight: float = 1.0
    feature_score_weight: float = 1.0
    #: how a point combines the scores of the patches holding it (``"mean"``: paper Eq. 15; ``"max"``).
    point_aggregation: str = "mean"
    #: ``"patch"``: a patch contributes its Chamfer distance to the reconstruction (paper Eq.
    #: 13-14); ``"point"``: each of its points contributes its own squared distance to the
    #: reconstructed patch.
    point_score_mode: str = "patch"
    #: ``"max"`` of the point scores or ``"topk"`` mean of the top ``object_topk`` fraction.
    object_score: str = "max"
    #: fraction of points averaged for ``object_score="topk"``.
    object_topk: float = 0.01
    #: neighbours used to carry scores from network points to every input point.
    interpolation_k: int = 3
    #: Gaussian smoothing of the network-point scores over their ``smoothing_k`` nearest neighbours
    #: before interpolation (0: off).
    smoothing_k: int = 0
    #: width of that Gaussian in normalised units (clouds have radius 1).
    smoothing_sigma: float = 0.05
    #: patch every training cloud once and reuse the patches in later epochs (only the masks change).
    cache_training_patches: bool = True
    #: seed of the test-time masks, of deterministic subsampling and of RANSAC (same seed ⇒ same
    #: predictions).
    seed: int = 0
    #: ``"windows"`` (consecutive windows of one seeded permutation: every patch masked once when
    #: ``num_iterations * M >= G``) or ``"random"`` (a fresh random mask per iteration).
    test_masks: str = "random"
    #: independent runs of the iterative reconstruction (each with its own masks); the DFC scores
    #: are averaged over them, so every patch is judged several times.
    test_mask_passes: int = 2
    # -- geometric residual (not in the paper)
    #: weight of the geometric residual added to the DFC scores (0: off, the paper). Every input point
    #: (full resolution, no subsampling) scores its distance to the nearest point of the training
    #: templates after bounding-box normalisation and registration, divided by the mean
    #: leave-one-out distance of the training clouds.
    geometric_score_weight: float = 0.5
    #: average the geometric residual of every point over its ``geometric_smoothing_k`` nearest input
    #: points (0 or 1: off). A single point's distance to the templates carries the scanner noise of
    #: both; a defect moves a whole region.
    geometric_smoothing_k: int = 0
    #: how a cloud is aligned to the templates for the geometric residual: ``"none"``, ``"icp"``
    #: (poses within ~30°) or ``"global+icp"`` (FPFH-RANSAC, any pose); all via
    #: :class:`anomalib_3d.ops.TemplateBank`.
    registration: str = "icp"
    #: templates tried as ICP targets per test cloud (best fit kept).
    registration_templates: int = 4
    #: the cloud is FPS-subsampled to this many points for registration only.
    registration_points: int = 1024
    #: each training cloud is FPS-subsampled to this many points in the geometric template bank
    #: (None: whole).
    template_points: int | None = 4096
    #: which templates are tried: ``"first"`` (the first in canonical order; all templates form the
    #: distance bank) or ``"nearest"`` (the ones closest to the cloud in the bounding-box frame, by
    #: mean nearest-point distance of a 256-point probe; only they form the distance bank - for one
    #: model trained on several categories).
    template_selection: str = "first"

    @property
    def num_masked(self) -> int:
        """Patches masked per iteration: ``round(mask_ratio * num_groups)``."""
        return round(self.mask_ratio * self.num_groups)

    def validate(self) -> None:
        """Refuse values the model cannot run with, naming the switch."""
        check_choice("template_selection", self.template_selection, TEMPLATE_SELECTIONS)
        check_choice("registration", self.registration, TEMPLATE_REGISTRATIONS)
        check_at_least("test_mask_passes", self.test_mask_passes, 1)
        check_at_least("geometric_score_weight", self.geometric_score_weight, 0)
        check_at_least("geometric_smoothing_k", self.geometric_smoothing_k, 0)
        check_at_least("registration_templates", self.registration_templates, 1)
        check_choice("point_aggregation", self.point_aggregation, POINT_AGGREGATIONS)
        check_choice("feature_reference", self.feature_reference, FEATURE_REFERENCES)
        check_choice("point_score_mode", self.point_score_mode, POINT_SCORE_MODES)
        check_choice("object_score", self.object_score, OBJECT_SCORES)
        check_choice("feature_normalization", self.feature_normalization, FEATURE_NORMALIZATIONS)
        check_choice("score_scale", self.score_scale, SCORE_SCALES)
        if not (self.use_point_score or self.use_feature_score):  # the geometric residual alone is not IMRNet
            msg = "at least one of use_point_score / use_feature_score must be True."
            raise ValueError(msg)
        if not 0.0 < self.object_topk <= 1.0:
            msg = f"object_topk must be in (0, 1], got {self.object_topk}."
            raise ValueError(msg)
        self._validate_network()

    def _validate_network(self) -> None:
        check_choice("test_masks", self.test_masks, TEST_MASKS)
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("subsample", self.subsample, SUBSAMPLERS)
        if not 0.0 < self.mask_ratio < 1.0:
            msg = f"mask_ratio must be in (0, 1), got {self.mask_ratio}."
            raise ValueError(msg)
        num_masked, num_groups = self.num_masked, self.num_groups
        if not 1 <= num_masked <= num_groups - 1:
            msg = f"mask_ratio={self.mask_ratio} masks {num_masked} of {num_groups} patches; need 1 .. {num_groups - 1}."
            raise ValueError(msg)
        check_at_least("num_iterations", self.num_iterations, 1)
        if self.num_points < max(num_groups, self.group_size):
            msg = f"num_points={self.num_points} must be >= max(num_groups, group_size)={max(num_groups, self.group_size)}."
            raise ValueError(msg)
        if self.test_num_groups is not None and self.test_num_groups < 2:
            msg = f"test_num_groups must be >= 2 (or None), got {self.test_num_groups}."
            raise ValueError(msg)
        layers = self.feature_layers
        if not layers or min(layers) < 1 or max(layers) > self.decoder_depth:
            msg = f"feature_layers {layers} must be 1-based decoder blocks in 1 .. {self.decoder_depth}."
            raise ValueError(msg)

    def coverage_warning(self, stacklevel: int = 2) -> None:
        """Warn when ``test_masks="windows"`` leaves patches that are never masked (point score 0)."""
        if self.test_masks == "windows" and self.num_iterations * self.num_masked < self.num_groups:
            warnings.warn(
                f"{self.num_iterations} iterations x {self.num_masked} masked patches do not cover all "
                f"{self.num_groups} patches; patches never masked get a point score of 0.",
                UserWarning,
                stacklevel=stacklevel + 1,
            )


__all__ = [
    "ARCHITECTURE",
    "FEATURE_NORMALIZATIONS",
    "FEATURE_REFERENCES",
    "OBJECT_SCORES",
    "POINT_AGGREGATIONS",
    "POINT_SCORE_MODES",
    "SCORE_SCALES",
    "SUBSAMPLERS",
    "TEST_MASKS",
    "IMRNetSettings",
    "check_choice",
]
