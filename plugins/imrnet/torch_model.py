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

import logging
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from anomalib_3d.data.errors import (
    CorruptFileError,
    InvalidPointsError,
    MissingWeightsError,
)
from anomalib_3d.distributed import all_gather_cat
from anomalib_3d.ops import (
    SAMPLERS,
    apply_transform,
    best_template,
    default_voxel_size,
    farthest_point_sample,
    group_patches,
    interpolate_nearest,
    knn,
    normalize_clouds,
    random_sample,
    register,
    smooth_scores,
)

from .components import (
    PatchTokenizer,
    TransformerStack,
    map_point_mae_state_dict,
    position_embedding,
)
from .loss import masked_patch_chamfer_loss, patch_chamfer_scores, patch_point_distances

logger = logging.getLogger(__name__)

POINT_AGGREGATIONS = ("mean", "max")
POINT_SCORE_MODES = ("patch", "point")
FEATURE_REFERENCES = ("template", "reconstruction")
OBJECT_SCORES = ("max", "topk")
SUBSAMPLERS = ("fps", "random")
REGISTRATIONS = ("none", "icp", "global+icp")
TEMPLATE_SELECTIONS = ("first", "nearest")
TEST_MASKS = ("windows", "random")

#: Switches that give the paper's method read literally (DFC against the reconstruction, no
#: geometric residual, no registration, one pass of window masks); see the plugin README.
PAPER_LITERAL: dict[str, object] = {
    "use_point_score": True,
    "feature_reference": "reconstruction",
    "geometric_score_weight": 0.0,
    "registration": "none",
    "test_masks": "windows",
    "test_mask_passes": 1,
}

POINT_MAE_URL = "https://github.com/Pang-Yatian/Point-MAE/releases (file pretrain.pth)"



def _cloud_keys(points: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """``(B,) float64`` a content key per cloud (point count and coordinate moments), for ordering."""
    num_clouds = int(batch[-1]) + 1
    p = points.detach().double()
    first = torch.zeros(num_clouds, dtype=torch.float64, device=p.device).index_add_(0, batch, p.sum(dim=1))
    second = torch.zeros(num_clouds, dtype=torch.float64, device=p.device).index_add_(0, batch, p.pow(2).sum(dim=1))
    counts = torch.bincount(batch, minlength=num_clouds).double()
    return counts * 1e6 + first + 1e-3 * second


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        msg = f"{name} must be one of {choices}, got {value!r}."
        raise ValueError(msg)

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


class PreparedClouds(NamedTuple):
    """Network view of a batch: normalised, subsampled clouds.

    Attributes:
        points: ``(ΣM, 3)`` normalised network points.
        batch: ``(ΣM,) long`` cloud of each network point.
        source_index: ``(ΣM,) long`` index of each network point into the input points.
    """

    points: torch.Tensor
    batch: torch.Tensor
    source_index: torch.Tensor


class IMRNetModel(nn.Module):
    """IMRNet network and scoring.

    Args:
        num_points: points per cloud fed to the network (clouds are subsampled to it; smaller
            clouds are used whole).
        num_groups: patch centres ``G`` per cloud (paper: 256).
        group_size: points ``K`` per patch (paper: 64).
        sampler: centre sampler: ``"gps"`` (paper), ``"fps"``, ``"random"`` or ``"voxel"`` (Table 4).
        gps_k, gps_threshold, gps_salient_density: GPS neighbourhood size, salient fraction ``t``
            (paper 0.3) and density ratio of the salient region (paper 2).
        subsample: how clouds are reduced to ``num_points``: ``"fps"`` or ``"random"``.
        embed_dim, encoder_depth, decoder_depth, num_heads, mlp_ratio, drop_path_rate: transformer
            sizes (Point-MAE: 384, 12, 4, 6, 4, 0.1).
        tokenizer_width: per-point feature width of the mini-PointNet (Point-MAE: 256).
        mask_ratio: fraction of patches masked (paper 0.4), in training and at each test iteration.
        num_iterations: test-time reconstruction iterations (paper 3).
        iterative_reconstruction: feed each iteration's output to the next (paper). ``False``: each
            of the ``num_iterations`` masks is reconstructed from the original input instead.
        use_point_score, use_feature_score: the two DFC scores (at least one). The point
            (Chamfer) score is off by default: it stays near chance on every split we measured and
            lowers the combined score (plugin README, "Diagnosis").
        feature_layers: 1-based decoder blocks whose outputs are fused (paper: 1, 2, 3).
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
        cache_training_patches: patch every training cloud once (see :meth:`training_patches`).
        seed: seed of the test-time masks and of RANSAC (same seed ⇒ same predictions).
        test_masks: ``"windows"`` (consecutive windows of one seeded permutation: every patch
            masked once when ``num_iterations * M >= G``) or ``"random"`` (a fresh random mask per
            iteration).
        test_mask_passes: independent runs of the iterative reconstruction (each with its own
            masks); the DFC scores are averaged over them, so every patch is judged several times.
        geometric_score_weight: weight of the geometric residual added to the DFC scores (0: off,
            the paper). Every input point (full resolution, no subsampling) scores its distance to
            the nearest point of the training templates after bounding-box normalisation and
            registration, divided by the mean leave-one-out distance of the training clouds.
        registration: how a cloud is aligned to the templates for the geometric residual:
            ``"none"``, ``"icp"`` (poses within ~30°) or ``"global+icp"`` (FPFH-RANSAC, any pose);
            all via :func:`anomalib_3d.ops.register`.
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
        registration: str = "icp",
        registration_templates: int = 4,
        registration_points: int = 1024,
        template_points: int | None = 4096,
        template_selection: str = "first",
    ) -> None:
        super().__init__()
        _check_choice("template_selection", template_selection, TEMPLATE_SELECTIONS)
        _check_choice("test_masks", test_masks, TEST_MASKS)
        _check_choice("registration", registration, REGISTRATIONS)
        if test_mask_passes < 1:
            msg = f"test_mask_passes must be >= 1, got {test_mask_passes}."
            raise ValueError(msg)
        if geometric_score_weight < 0:
            msg = f"geometric_score_weight must be >= 0, got {geometric_score_weight}."
            raise ValueError(msg)
        if registration_templates < 1:
            msg = f"registration_templates must be >= 1, got {registration_templates}."
            raise ValueError(msg)
        _check_choice("sampler", sampler, SAMPLERS)
        _check_choice("subsample", subsample, SUBSAMPLERS)
        _check_choice("point_aggregation", point_aggregation, POINT_AGGREGATIONS)
        _check_choice("feature_reference", feature_reference, FEATURE_REFERENCES)
        _check_choice("point_score_mode", point_score_mode, POINT_SCORE_MODES)
        _check_choice("object_score", object_score, OBJECT_SCORES)
        if not (use_point_score or use_feature_score):  # the geometric residual alone is not IMRNet
            msg = "at least one of use_point_score / use_feature_score must be True."
            raise ValueError(msg)
        if not 0.0 < mask_ratio < 1.0:
            msg = f"mask_ratio must be in (0, 1), got {mask_ratio}."
            raise ValueError(msg)
        num_masked = round(mask_ratio * num_groups)
        if not 1 <= num_masked <= num_groups - 1:
            msg = f"mask_ratio={mask_ratio} masks {num_masked} of {num_groups} patches; need 1 .. {num_groups - 1}."
            raise ValueError(msg)
        if num_iterations < 1:
            msg = f"num_iterations must be >= 1, got {num_iterations}."
            raise ValueError(msg)
        feature_layers = tuple(int(layer) for layer in feature_layers)
        if not feature_layers or min(feature_layers) < 1 or max(feature_layers) > decoder_depth:
            msg = f"feature_layers {feature_layers} must be 1-based decoder blocks in 1 .. {decoder_depth}."
            raise ValueError(msg)
        if not 0.0 < object_topk <= 1.0:
            msg = f"object_topk must be in (0, 1], got {object_topk}."
            raise ValueError(msg)
        if num_points < max(num_groups, group_size):
            msg = f"num_points={num_points} must be >= max(num_groups, group_size)={max(num_groups, group_size)}."
            raise ValueError(msg)
        if test_masks == "windows" and num_iterations * num_masked < num_groups:
            warnings.warn(
                f"{num_iterations} iterations x {num_masked} masked patches do not cover all {num_groups} patches; "
                "patches never masked get a point score of 0.",
                UserWarning,
                stacklevel=2,
            )

        self.num_points = num_points
        self.num_groups = num_groups
        self.group_size = group_size
        self.sampler = sampler
        self.gps_kwargs = {"k": gps_k, "threshold": gps_threshold, "salient_density": gps_salient_density}
        self.subsample = subsample
        self.embed_dim = embed_dim
        self.mask_ratio = mask_ratio
        self.num_masked = num_masked
        self.num_iterations = num_iterations
        self.iterative_reconstruction = iterative_reconstruction
        self.use_point_score = use_point_score
        self.use_feature_score = use_feature_score
        self.feature_layers = feature_layers
        self.feature_reference = feature_reference
        self.template_regularization = template_regularization
        self.point_score_weight = point_score_weight
        self.feature_score_weight = feature_score_weight
        self.cache_training_patches = cache_training_patches
        self._patch_cache: dict[tuple[str, int, float], tuple[torch.Tensor, torch.Tensor]] = {}
        self.template_threshold = template_threshold
        self.template_quantile = template_quantile
        self.point_aggregation = point_aggregation
        self.point_score_mode = point_score_mode
        self.object_score = object_score
        self.object_topk = object_topk
        self.interpolation_k = interpolation_k
        self.smoothing_k = smoothing_k
        self.smoothing_sigma = smoothing_sigma
        self.seed = seed
        self.test_masks_mode = test_masks
        self.test_mask_passes = test_mask_passes
        self.geometric_score_weight = geometric_score_weight
        self.registration = registration
        self.registration_templates = registration_templates
        self.registration_points = registration_points
        self.template_points = template_points
        self.template_selection = template_selection

        # PMR (Point-MAE backbone; names mirror Point-MAE's roles, see components.POINT_MAE_PREFIXES)
        self.tokenizer = PatchTokenizer(embed_dim, tokenizer_width)
        self.encoder_pos_embed = position_embedding(embed_dim)
        self.encoder = TransformerStack(embed_dim, encoder_depth, num_heads, mlp_ratio, drop_path_rate)
        self.encoder_norm = nn.LayerNorm(embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.decoder_pos_embed = position_embedding(embed_dim)
        self.decoder = TransformerStack(embed_dim, decoder_depth, num_heads, mlp_ratio, drop_path_rate)
        self.decoder_norm = nn.LayerNorm(embed_dim)
        self.reconstruction_head = nn.Linear(embed_dim, 3 * group_size)
        self._init_weights()

        # DFC statistics computed from the training set by calibrate(); persistent buffers, so they
        # travel with every checkpoint.
        feature_dim = embed_dim * len(feature_layers)
        self.register_buffer("template_bank", torch.zeros(template_size, feature_dim))
        self.register_buffer("template_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("template_delta", torch.zeros(()))
        self.register_buffer("point_score_scale", torch.ones(()))
        self.register_buffer("feature_score_scale", torch.ones(()))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        # Geometric residual: training clouds (bounding-box normalised, registered to the first),
        # concatenated; template i is geometric_templates[geometric_ptr[i]:geometric_ptr[i + 1]].
        self.register_buffer("geometric_templates", torch.zeros(0, 3))
        self.register_buffer("geometric_ptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("geometric_score_scale", torch.ones(()))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        # A template of another capacity (template_size) loads as is: it is data, not architecture.
        bank = state_dict.get(prefix + "template_bank")
        if isinstance(bank, torch.Tensor) and bank.shape[1:] == self.template_bank.shape[1:]:
            self.template_bank = torch.zeros_like(bank, device=self.template_bank.device)
        for name in ("geometric_templates", "geometric_ptr"):
            stored = state_dict.get(prefix + name)
            if isinstance(stored, torch.Tensor) and stored.shape != getattr(self, name).shape:
                setattr(self, name, torch.zeros_like(stored, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    # ----------------------------------------------------------------------------------------
    # pretrained weights
    # ----------------------------------------------------------------------------------------
    def load_point_mae(self, path: str | Path) -> tuple[list[str], list[str]]:
        """Load Point-MAE pretrained weights (its released ``pretrain.pth``) by name and shape.

        Args:
            path: local file; a dict with ``base_model`` (or ``model`` / ``state_dict``) holding
                Point-MAE keys, or that state dict itself.

        Returns:
            ``(loaded, skipped)``: IMRNet keys that received weights; Point-MAE keys not used, with
            the reason.

        Raises:
            MissingWeightsError: the file does not exist.
            CorruptFileError: the file is not a readable checkpoint or holds no Point-MAE weights.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise MissingWeightsError(
                "the Point-MAE pretrained checkpoint is not there.",
                path=path,
                fix=f"download Point-MAE's pretrain.pth from {POINT_MAE_URL} and save it at this path, "
                "or set pretrained_path: null to train from scratch",
            )
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling problem means the same to the user
            raise CorruptFileError(
                f"cannot read the checkpoint ({type(exc).__name__}: {exc}).",
                path=path,
                fix="re-download pretrain.pth, or re-save it as torch.save({'base_model': state_dict}, path)",
            ) from exc
        state = checkpoint
        if isinstance(checkpoint, dict):
            for key in ("base_model", "model", "state_dict"):
                if isinstance(checkpoint.get(key), dict):
                    state = checkpoint[key]
                    break
        if not isinstance(state, dict):
            raise CorruptFileError("the checkpoint holds no state dict.", path=path, fix="use Point-MAE's pretrain.pth")
        mapped, loaded, skipped = map_point_mae_state_dict(state, self.state_dict())
        if not loaded:
            raise CorruptFileError(
                "no tensor of the checkpoint matches IMRNet's Point-MAE backbone (names or shapes).",
                path=path,
                fix="use Point-MAE's pretrain.pth and an embed_dim equal to its trans_dim (384)",
            )
        self.load_state_dict(mapped, strict=False)
        logger.info("Loaded %d Point-MAE tensors from %s; skipped %d: %s", len(loaded), path, len(skipped), skipped)
        return loaded, skipped

    # ----------------------------------------------------------------------------------------
    # input preparation
    # ----------------------------------------------------------------------------------------
    def _check_sizes(self, counts: torch.Tensor, paths: Sequence[str] | None) -> None:
        need = max(self.num_groups, self.group_size)
        small = (counts < need).nonzero().flatten().tolist()
        if small:
            b = small[0]
            path = paths[b] if paths is not None and b < len(paths) else None
            raise InvalidPointsError(
                f"cloud {b} has {int(counts[b])} points; IMRNet's patch setup ({self.num_groups} patches of "
                f"{self.group_size} points) needs at least {need}"
                + (f" ({len(small)} clouds of this batch are too small)." if len(small) > 1 else "."),
                path=path,
                fix="use a denser scan, or lower num_groups / group_size (e.g. the imrnet_small preset)",
            )

    def prepare(
        self,
        points: torch.Tensor,
        batch: torch.Tensor,
        *,
        paths: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
        stochastic: bool | None = None,
    ) -> PreparedClouds:
        """Normalise every cloud (centroid at 0, farthest point at radius 1) and subsample it.

        Args:
            points: ``(ΣN, 3)`` input points.
            batch: ``(ΣN,) long`` sorted cloud ids.
            paths: file of each cloud, for error messages.
            generator: random source for training-time subsampling (random FPS start / random
                draw).
            stochastic: random subsampling (default: in training mode); otherwise deterministic.

        Returns:
            :class:`PreparedClouds`.

        Raises:
            InvalidPointsError: a cloud smaller than the patch setup needs.
        """
        num_clouds = int(batch[-1]) + 1 if batch.numel() else 0
        counts = torch.bincount(batch, minlength=num_clouds)
        self._check_sizes(counts, paths)
        points = points.float()
        centroid = torch.zeros(num_clouds, 3, dtype=points.dtype, device=points.device).index_add_(0, batch, points)
        centroid = centroid / counts.unsqueeze(1).to(points.dtype)
        centred = points - centroid[batch]
        radius = torch.zeros(num_clouds, dtype=points.dtype, device=points.device).scatter_reduce_(
            0, batch, centred.norm(dim=1), reduce="amax", include_self=True
        )
        normalised = centred / radius.clamp_min(1e-12)[batch].unsqueeze(1)

        training = self.training if stochastic is None else stochastic
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).tolist()
        keep = []
        for b in range(num_clouds):
            lo, hi = ptr[b], ptr[b + 1]
            n = hi - lo
            if n <= self.num_points:
                keep.append(torch.arange(lo, hi, device=points.device))
                continue
            cloud = normalised[lo:hi]
            if self.subsample == "random":
                local = random_sample(cloud, self.num_points, generator=self._cpu_generator(generator, training))
            else:
                local = farthest_point_sample(
                    cloud, self.num_points, random_start=training, generator=generator if training else None
                )
            keep.append(local.to(points.device) + lo)
        source_index = torch.cat(keep)
        return PreparedClouds(normalised[source_index], batch[source_index], source_index)

    def _cpu_generator(self, generator: torch.Generator | None, training: bool) -> torch.Generator | None:
        if training:
            return generator
        # Deterministic evaluation: the same seed for every cloud, whatever the batch.
        return torch.Generator().manual_seed(self.seed)

    def make_patches(  # noqa: ANN201
        self, prepared: PreparedClouds, generator: torch.Generator | None = None, stochastic: bool | None = None
    ):
        """Split the network points into ``G`` patches of ``K`` points (:func:`group_patches`).

        Returns:
            :class:`anomalib_3d.ops.Patches`; centres are drawn at random only when ``stochastic``
            (default: in training mode) and the sampler is ``fps`` / ``random``.
        """
        training = self.training if stochastic is None else stochastic
        kwargs: dict[str, object] = {}
        if self.sampler == "gps":
            kwargs.update(self.gps_kwargs)
        elif self.sampler == "fps":
            kwargs["random_start"] = training
        return group_patches(
            prepared.points,
            self.num_groups,
            self.group_size,
            prepared.batch,
            sampler=self.sampler,
            generator=self._cpu_generator(generator, training) if self.sampler in ("fps", "random") else None,
            **kwargs,
        )

    def training_patches(
        self,
        points: torch.Tensor,
        batch: torch.Tensor,
        *,
        paths: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches ``(B, G, K, 3)`` and centres ``(B, G, 3)`` of a training batch.

        With ``cache_training_patches`` and a file path for every cloud, each cloud is patched once
        (deterministically, as at test time) and reused in later epochs: sampling and grouping
        cost as much as the network on a CPU, and only the masks need to change between epochs.
        Otherwise every call subsamples / samples centres afresh (random FPS start).
        """
        if not self.cache_training_patches or paths is None or any(p is None for p in paths):
            prepared = self.prepare(points, batch, paths=paths, generator=generator)
            patches = self.make_patches(prepared, generator)
            return patches.neighborhoods, patches.centers
        num_clouds = int(batch[-1]) + 1
        counts = torch.bincount(batch, minlength=num_clouds)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).tolist()
        keys = [
            (paths[b], int(counts[b]), float(points[ptr[b] : ptr[b + 1]].detach().double().sum()))
            for b in range(num_clouds)
        ]
        missing = [b for b in range(num_clouds) if keys[b] not in self._patch_cache]
        if missing:
            rows = torch.cat([torch.arange(ptr[b], ptr[b + 1], device=points.device) for b in missing])
            sub_batch = torch.repeat_interleave(
                torch.arange(len(missing), device=points.device), counts[missing].to(points.device)
            )
            with torch.no_grad():
                prepared = self.prepare(points[rows], sub_batch, paths=[paths[b] for b in missing], stochastic=False)
                patches = self.make_patches(prepared, stochastic=False)
            for i, b in enumerate(missing):
                self._patch_cache[keys[b]] = (patches.neighborhoods[i], patches.centers[i])
        neighborhoods = torch.stack([self._patch_cache[k][0] for k in keys]).to(points.device)
        centers = torch.stack([self._patch_cache[k][1] for k in keys]).to(points.device)
        return neighborhoods, centers

    # ----------------------------------------------------------------------------------------
    # PMR network
    # ----------------------------------------------------------------------------------------
    @staticmethod
    def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``x[b, index[b]]`` for ``x (B, G, ...)`` and ``index (B, M)``."""
        rows = torch.arange(x.shape[0], device=x.device).unsqueeze(1)
        return x[rows, index]

    def encode(self, neighborhoods: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """Encoder output ``(B, T, C)`` (normalised) of the given (visible) patches."""
        tokens = self.tokenizer(neighborhoods)
        return self.encoder_norm(self.encoder(tokens, self.encoder_pos_embed(centers))[-1])

    def reconstruct(
        self, neighborhoods: torch.Tensor, centers: torch.Tensor, masked_index: torch.Tensor
    ) -> torch.Tensor:
        """Predict the masked patches from the visible ones (paper Eq. 9-11).

        Args:
            neighborhoods: ``(B, G, K, 3)`` patches (local coordinates).
            centers: ``(B, G, 3)`` patch centres.
            masked_index: ``(B, M) long`` masked patches of each cloud.

        Returns:
            ``(B, M, K, 3)`` predicted points of the masked patches (local coordinates).
        """
        batch, groups = centers.shape[:2]
        visible = torch.ones(batch, groups, dtype=torch.bool, device=centers.device)
        visible[torch.arange(batch, device=centers.device).unsqueeze(1), masked_index] = False
        visible_index = visible.nonzero()[:, 1].view(batch, groups - masked_index.shape[1])
        encoded = self.encode(self._take(neighborhoods, visible_index), self._take(centers, visible_index))
        num_masked = masked_index.shape[1]
        tokens = torch.cat([encoded, self.mask_token.expand(batch, num_masked, -1)], dim=1)
        centers_all = torch.cat([self._take(centers, visible_index), self._take(centers, masked_index)], dim=1)
        decoded = self.decoder(tokens, self.decoder_pos_embed(centers_all))[-1]
        masked_tokens = self.decoder_norm(decoded[:, -num_masked:])  # (B, M, C)
        predicted = self.reconstruction_head(masked_tokens)  # (B, M, 3K), point-major as Point-MAE
        return predicted.reshape(batch, num_masked, self.group_size, 3)

    def random_mask(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(B, M) long`` a fresh random set of ``M = round(mask_ratio * G)`` patches per cloud."""
        noise = torch.rand(batch, self.num_groups, generator=generator)
        return noise.argsort(dim=1)[:, : self.num_masked].to(device)

    def training_loss(
        self,
        points: torch.Tensor,
        batch: torch.Tensor,
        *,
        paths: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Self-supervised PMR loss of a batch of normal clouds (masked-patch Chamfer-L2, Eq. 12)."""
        neighborhoods, centers = self.training_patches(points, batch, paths=paths, generator=generator)
        masked_index = self.random_mask(centers.shape[0], points.device, generator)
        predicted = self.reconstruct(neighborhoods, centers, masked_index)
        return masked_patch_chamfer_loss(predicted, self._take(neighborhoods, masked_index))

    # ----------------------------------------------------------------------------------------
    # iterative reconstruction and DFC
    # ----------------------------------------------------------------------------------------
    def test_masks(self, device: torch.device, run: int = 0) -> list[torch.Tensor]:
        """The ``num_iterations`` test masks of reconstruction run ``run``.

        ``test_masks="windows"``: consecutive windows of one seeded permutation (positions
        ``t*M .. t*M + M - 1``, wrapping), so successive iterations mask different patches and,
        when ``num_iterations * M >= G``, every patch is reconstructed at least once.
        ``"random"``: a fresh random set of ``M`` patches per iteration. Both are drawn from
        ``seed`` and ``run``, hence reproducible and independent of the batch.

        Returns:
            ``num_iterations`` tensors ``(M,) long``.
        """
        generator = torch.Generator().manual_seed(self.seed + 7919 * run)
        if self.test_masks_mode == "random":
            return [
                torch.randperm(self.num_groups, generator=generator)[: self.num_masked].to(device)
                for _ in range(self.num_iterations)
            ]
        permutation = torch.randperm(self.num_groups, generator=generator)
        positions = torch.arange(self.num_masked)
        return [
            permutation[(t * self.num_masked + positions) % self.num_groups].to(device)
            for t in range(self.num_iterations)
        ]

    def iterative_reconstruct(self, neighborhoods: torch.Tensor, centers: torch.Tensor, run: int = 0) -> torch.Tensor:
        """Test-time reconstruction (paper Alg. 1): mask → reconstruct → merge, repeated.

        Args:
            neighborhoods: ``(B, G, K, 3)`` input patches.
            centers: ``(B, G, 3)``.
            run: which set of test masks (see :meth:`test_masks`).

        Returns:
            ``(B, G, K, 3)`` the patches after the last iteration (never-masked patches unchanged).
        """
        batch = centers.shape[0]
        current = neighborhoods.clone()
        for mask in self.test_masks(centers.device, run):
            masked_index = mask.unsqueeze(0).expand(batch, -1)
            source = current if self.iterative_reconstruction else neighborhoods
            predicted = self.reconstruct(source, centers, masked_index)
            rows = torch.arange(batch, device=centers.device).unsqueeze(1)
            current = current.clone()
            current[rows, masked_index] = predicted.to(current.dtype)
        return current

    def decoder_features(self, neighborhoods: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """Fused decoder features (paper Eq. 16-17) of fully visible patches.

        Each selected decoder block's output is layer-normalised (no affine) so that no block
        dominates the concatenation by scale.

        Returns:
            ``(B, G, C * len(feature_layers))``.
        """
        encoded = self.encode(neighborhoods, centers)
        outputs = self.decoder(encoded, self.decoder_pos_embed(centers))
        return torch.cat([F.layer_norm(outputs[i - 1], (self.embed_dim,)) for i in self.feature_layers], dim=-1)

    def _nearest_template(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest template vector and its distance for every row of ``features (T, F)``."""
        bank = self.template_bank[: int(self.template_count)]
        nearest_index = torch.empty(features.shape[0], dtype=torch.long, device=features.device)
        nearest_dist = torch.empty(features.shape[0], dtype=features.dtype, device=features.device)
        step = max(1, 2**22 // max(bank.shape[0], 1))
        for lo in range(0, features.shape[0], step):
            dist = torch.cdist(features[lo : lo + step], bank)
            nearest_dist[lo : lo + step], nearest_index[lo : lo + step] = dist.min(dim=1)
        return bank[nearest_index], nearest_dist

    def regularize(self, features: torch.Tensor) -> torch.Tensor:
        """Template regularisation (paper Eq. 19): rows farther than δ from the template become the
        nearest template vector. Features ``(B, G, F)`` are returned unchanged before calibration."""
        if not self.template_regularization or int(self.template_count) == 0:
            return features
        flat = features.reshape(-1, features.shape[-1])
        template, distance = self._nearest_template(flat)
        replace = (distance > self.template_delta).unsqueeze(1)
        return torch.where(replace, template, flat).view_as(features)

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
        original_features = self.decoder_features(neighborhoods, centers) if self.use_feature_score else None
        point_scores = feature_scores = None
        if template_mode:
            _, distance = self._nearest_template(original_features.reshape(-1, original_features.shape[-1]))
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
                masked = torch.zeros(self.num_groups, device=scores.device)
                masked[torch.cat(self.test_masks(scores.device, run))] = 1.0
                masked = masked.view(1, -1, *([1] * (scores.dim() - 2)))
                point_sum = scores * masked if point_sum is None else point_sum + scores * masked
                point_count = masked if point_count is None else point_count + masked
            if self.use_feature_score and not template_mode:
                reconstructed_features = self.regularize(self.decoder_features(reconstructed, centers))
                feature_runs.append((original_features - reconstructed_features).norm(dim=-1))
        if point_sum is not None:
            point_scores = point_sum / point_count.clamp_min(1.0)
        if feature_runs:
            feature_scores = torch.stack(feature_runs).mean(dim=0)
        return point_scores, feature_scores

    def _to_network_points(
        self, patch_scores: torch.Tensor, group_index: torch.Tensor, num_points: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-point score from the patches holding each point (paper Eq. 15).

        Args:
            patch_scores: ``(B, G)`` one score per patch, or ``(B, G, K)`` one per patch point.
            group_index: ``(B, G, K)`` network point of each patch point.
            num_points: number of network points.

        Returns:
            ``(scores (ΣM,), covered (ΣM,) bool)``; uncovered points score 0.
        """
        index = group_index.reshape(-1)
        if patch_scores.dim() == 2:
            patch_scores = patch_scores.unsqueeze(-1).expand(-1, -1, group_index.shape[-1])
        values = patch_scores.reshape(-1).to(torch.float32)
        count = torch.zeros(num_points, device=values.device).index_add_(0, index, torch.ones_like(values))
        if self.point_aggregation == "mean":
            total = torch.zeros(num_points, device=values.device).index_add_(0, index, values)
            scores = total / count.clamp_min(1)
        else:
            scores = torch.zeros(num_points, device=values.device).scatter_reduce_(
                0, index, values, reduce="amax", include_self=False
            )
        return scores, count > 0

    def _object_scores(self, anomaly_map: torch.Tensor, batch: torch.Tensor, num_clouds: int) -> torch.Tensor:
        if self.object_score == "max":
            return torch.full((num_clouds,), float("-inf"), device=anomaly_map.device).scatter_reduce_(
                0, batch, anomaly_map, reduce="amax", include_self=True
            )
        scores = []
        for b in range(num_clouds):
            cloud = anomaly_map[batch == b]
            k = max(1, round(self.object_topk * cloud.numel()))
            scores.append(cloud.topk(k).values.mean())
        return torch.stack(scores)

    # ----------------------------------------------------------------------------------------
    # geometric residual (in the registered template frame, at every input point)
    # ----------------------------------------------------------------------------------------
    @property
    def geometric_template_list(self) -> list[torch.Tensor]:
        """The registered training templates, each ``(M_i, 3)`` (empty before calibration)."""
        ptr = self.geometric_ptr.tolist()
        return [self.geometric_templates[ptr[i] : ptr[i + 1]] for i in range(len(ptr) - 1)]

    def _subsample_fps(self, cloud: torch.Tensor, count: int | None) -> torch.Tensor:
        if count is None or cloud.shape[0] <= count:
            return cloud
        return cloud[farthest_point_sample(cloud, count).to(cloud.device)]

    def candidate_templates(self, cloud: torch.Tensor) -> list[int]:
        """Indices of the ``registration_templates`` templates a bounding-box-normalised cloud is
        registered to (see ``template_selection``)."""
        templates = self.geometric_template_list
        count = min(self.registration_templates, len(templates))
        if self.template_selection == "first" or count == len(templates):
            return list(range(count))
        probe = self._subsample_fps(cloud, 256)
        distance = torch.stack([knn(t.to(probe), probe, 1)[1][:, 0].clamp_min(0).sqrt().mean() for t in templates])
        return torch.argsort(distance)[:count].tolist()

    def align(self, cloud: torch.Tensor, candidates: list[int] | None = None) -> torch.Tensor:
        """Move one bounding-box-normalised ``cloud (N, 3)`` into the template frame.

        The cloud is registered to the reference template (``registration`` method), then refined
        by ICP against the first ``registration_templates`` templates, keeping the best fit
        (:func:`anomalib_3d.ops.best_template`); templates share the reference frame.

        Returns:
            ``(N, 3)`` the moved cloud (unchanged with ``registration="none"``).
        """
        templates = self.geometric_template_list
        if self.registration == "none" or not templates:
            return cloud
        probe = self._subsample_fps(cloud, self.registration_points).double()
        candidates = self.candidate_templates(cloud) if candidates is None else candidates
        targets = [templates[i].double() for i in candidates]
        voxel = default_voxel_size(targets[0])
        coarse = register(probe, targets[0], self.registration, voxel_size=voxel, seed=self.seed)  # type: ignore[arg-type]
        _, refined = best_template(
            probe, targets, method="icp", init=coarse.transform, voxel_size=voxel,
            max_correspondence_distance=2 * voxel,
        )
        best = refined if refined.better_than(coarse) else coarse
        return apply_transform(cloud, best.transform.to(cloud.device))

    def _geometric_distances(self, points: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Raw distance of every point ``(ΣN, 3)`` to the nearest template point (template frame)."""
        normalised = normalize_clouds(points.float(), batch, "bbox")
        bank = self.geometric_templates.to(normalised)
        num_clouds = int(batch[-1]) + 1 if batch.numel() else 0
        counts = torch.bincount(batch, minlength=num_clouds)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).tolist()
        distances = []
        templates = self.geometric_template_list
        for b in range(num_clouds):
            cloud = normalised[ptr[b] : ptr[b + 1]]
            candidates = self.candidate_templates(cloud)
            aligned = self.align(cloud, candidates)
            if self.template_selection == "nearest":
                bank = torch.cat([templates[i] for i in candidates]).to(normalised)
            _, sq = knn(bank, aligned, 1)
            distances.append(sq[:, 0].clamp_min(0).sqrt())
        return torch.cat(distances) if distances else normalised.new_zeros(0)

    @torch.no_grad()
    def geometric_scores(self, points: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Normalised geometric residual of every input point ``(ΣN,)`` (see ``geometric_score_weight``).

        Raises:
            RuntimeError: no templates yet (call :meth:`calibrate` first).
        """
        if self.geometric_ptr.numel() < 2:
            msg = "IMRNet has no geometric templates: calibrate it on normal training clouds first."
            raise RuntimeError(msg)
        return self._geometric_distances(points, batch) / self.geometric_score_scale

    @torch.no_grad()
    def fit_geometric_templates(self, clouds: list[torch.Tensor]) -> float:
        """Build the geometric template bank and its leave-one-out scale from normal clouds.

        Args:
            clouds: this rank's training clouds, each ``(N_i, 3)`` (gathered over ranks here).

        Returns:
            The scale: mean distance of every template point to the other templates.
        """
        device = self.geometric_templates.device
        device0 = clouds[0].device
        local = [
            self._subsample_fps(normalize_clouds(c.float(), torch.zeros(c.shape[0], dtype=torch.long, device=c.device), "bbox"),
                                self.template_points)
            for c in clouds
        ]
        keys = all_gather_cat(torch.cat([_cloud_keys(c, torch.zeros(c.shape[0], dtype=torch.long, device=device0)) for c in clouds]))
        sizes = all_gather_cat(torch.tensor([c.shape[0] for c in local], dtype=torch.long, device=device0))
        gathered = list(torch.split(all_gather_cat(torch.cat(local)), sizes.tolist()))
        # Canonical order (by content): the reference and the ICP targets do not depend on ranks.
        order = torch.argsort(keys).tolist()
        gathered = [gathered[i] for i in order]
        sizes = sizes[order]
        reference = gathered[0]
        aligned = [reference]
        for cloud in gathered[1:]:
            if self.registration == "none":
                aligned.append(cloud)
                continue
            result = register(cloud.double(), reference.double(), self.registration, seed=self.seed)  # type: ignore[arg-type]
            aligned.append(apply_transform(cloud, result.transform.to(cloud.device)))
        self.geometric_templates = torch.cat(aligned).to(device)
        self.geometric_ptr = torch.tensor([0, *sizes.cumsum(0).tolist()], dtype=torch.long, device=device)
        if len(aligned) < 2:
            scale = float(default_voxel_size(reference))  # one template: no held-out distances
        else:
            held_out = []
            for i, cloud in enumerate(aligned):
                others = torch.cat([c for j, c in enumerate(aligned) if j != i])
                _, sq = knn(others, cloud, 1)
                held_out.append(sq[:, 0].clamp_min(0).sqrt())
            scale = float(torch.cat(held_out).mean())
        self.geometric_score_scale.fill_(max(scale, 1e-12))
        return scale

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
            point_scores, covered = self._to_network_points(point_patch, patches.group_index, num_net)
        if feature_patch is not None:
            feature_scores, covered = self._to_network_points(feature_patch, patches.group_index, num_net)
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
        pred_score = self._object_scores(anomaly_map, batch, num_clouds)
        return IMRNetPrediction(anomaly_map, pred_score, point_map, feature_map, geometric_map)

    # ----------------------------------------------------------------------------------------
    # training-set statistics (template and score scales)
    # ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def calibrate(self, clouds: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """Compute the DFC statistics from normal training clouds (call in eval mode).

        1. Template: fused decoder features of every training patch; at most ``template_size`` of
           them are kept by farthest-point selection in feature space. ``δ`` (unless given) is the
           ``template_quantile`` quantile of each training feature's distance to the nearest
           template vector of *another* cloud.
        2. Scales: the mean point score of the training clouds' network points and the mean
           feature score (``"template"`` mode: the mean held-out distance above, since a training
           feature's distance to a template that contains it is 0), used to put both scores on a
           common scale before they are summed.
        3. Geometric templates (when ``geometric_score_weight > 0``): :meth:`fit_geometric_templates`.

        Under DDP each rank passes its shard; features, score values and templates are gathered
        over ranks (:func:`anomalib_3d.distributed.all_gather_cat`) before use.

        Args:
            clouds: iterable of ``(points (ΣN, 3), batch (ΣN,))`` batches of normal clouds.

        Returns:
            The statistics (``template_count``, ``template_delta``, the two scales).
        """
        batches = [(p, b) for p, b in clouds]
        if not batches:
            msg = "calibrate() needs at least one batch of training clouds."
            raise ValueError(msg)
        features, cloud_ids, cloud_keys = [], [], []
        offset = 0
        for points, batch in batches:
            cloud_keys.append(_cloud_keys(points, batch))
            prepared = self.prepare(points, batch)
            patches = self.make_patches(prepared)
            fused = self.decoder_features(patches.neighborhoods, patches.centers)  # (B, G, F)
            features.append(fused.reshape(-1, fused.shape[-1]))
            ids = torch.arange(fused.shape[0], device=fused.device) + offset
            cloud_ids.append(ids.repeat_interleave(fused.shape[1]))
            offset += fused.shape[0]
        # Cloud ids stay distinct across ranks: offset by the clouds of the ranks before.
        rank_clouds = all_gather_cat(torch.tensor([offset], dtype=torch.long, device=features[0].device))
        rank_index = _rank()
        all_ids = all_gather_cat(torch.cat(cloud_ids) + int(rank_clouds[:rank_index].sum()))
        all_features = all_gather_cat(torch.cat(features))
        offset = int(rank_clouds.sum())
        # Canonical cloud order (by content), so that the bank does not depend on how the clouds
        # were split over batches and ranks.
        order = torch.argsort(all_gather_cat(torch.cat(cloud_keys).to(all_features.device)))
        new_id = torch.empty_like(order)
        new_id[order] = torch.arange(order.numel(), device=order.device)
        all_ids = new_id[all_ids]
        rows = torch.argsort(all_ids, stable=True)
        all_features, all_ids = all_features[rows], all_ids[rows]
        capacity = self.template_bank.shape[0]
        if all_features.shape[0] > capacity:
            chosen = farthest_point_sample(all_features, capacity, backend="torch")
        else:
            chosen = torch.arange(all_features.shape[0], device=all_features.device)
        self.template_bank.zero_()
        self.template_bank[: chosen.numel()] = all_features[chosen]
        self.template_count.fill_(chosen.numel())

        # Distance of every training feature to the template without its own cloud (without
        # itself when there is a single cloud): the reference for δ and for the template score.
        bank, bank_ids = all_features[chosen], all_ids[chosen]
        exclude_cloud = offset > 1
        nearest = []
        for lo in range(0, all_features.shape[0], 1024):
            dist = torch.cdist(all_features[lo : lo + 1024], bank)
            if exclude_cloud:
                dist.masked_fill_(all_ids[lo : lo + 1024].unsqueeze(1) == bank_ids.unsqueeze(0), float("inf"))
            else:
                dist.masked_fill_(dist == 0, float("inf"))
            nearest.append(dist.min(dim=1).values)
        held_out = torch.cat(nearest)
        held_out = held_out[torch.isfinite(held_out)]
        if self.template_threshold is not None:
            delta = float(self.template_threshold)
        else:
            delta = float(torch.quantile(held_out, self.template_quantile)) if held_out.numel() else float("inf")
        self.template_delta.fill_(delta)

        point_values, feature_values = [], []
        for points, batch in batches:
            _, point_scores, feature_scores, covered = self.raw_scores(points, batch)
            if point_scores is not None:
                point_values.append(point_scores[covered])
            if feature_scores is not None and self.feature_reference == "reconstruction":
                feature_values.append(feature_scores[covered])
        if self.use_feature_score and self.feature_reference == "template" and held_out.numel():
            # Scores of training clouds against a template that holds them would be ~0.
            feature_values = [held_out]
        elif feature_values:
            feature_values = [all_gather_cat(torch.cat(feature_values))]
        if point_values:
            point_values = [all_gather_cat(torch.cat(point_values))]
            self.point_score_scale.fill_(max(float(torch.cat(point_values).mean()), 1e-12))
        if feature_values:
            self.feature_score_scale.fill_(max(float(torch.cat(feature_values).mean()), 1e-12))
        if self.geometric_score_weight > 0:
            singles = []
            for points, batch in batches:
                counts = torch.bincount(batch, minlength=int(batch[-1]) + 1).tolist()
                singles.extend(torch.split(points, counts))
            self.fit_geometric_templates(singles)
        self.calibrated.fill_(True)
        return {
            "template_count": int(self.template_count),
            "template_delta": float(self.template_delta),
            "point_score_scale": float(self.point_score_scale),
            "feature_score_scale": float(self.feature_score_scale),
            "geometric_score_scale": float(self.geometric_score_scale),
            "geometric_templates": max(0, self.geometric_ptr.numel() - 1),
        }


__all__ = ["PAPER_LITERAL", "IMRNetModel", "IMRNetPrediction", "PreparedClouds"]
