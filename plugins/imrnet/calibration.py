"""IMRNet's training-set statistics: the feature template of the DFC feature score, its threshold
δ, the scales that put the scores on one footing, and the geometric template bank.

Under DDP each rank passes its shard; features, score values and templates are gathered over ranks
(:func:`anomalib_3d.distributed.all_gather_cat`) and put in a canonical order by cloud content
before use, so the statistics depend neither on batching nor on the number of ranks.
"""

from __future__ import annotations

from collections.abc import Iterable
import torch

from anomalib_3d.distributed import all_gather_cat
from anomalib_3d.ops import farthest_point_sample
from anomalib_3d.ops.templates import TemplateBank, cloud_checksums

from .network import MaskReconstructionNetwork
from .settings import FEATURE_NORMALIZATIONS, SCORE_SCALES

# Rows of training features compared with the template at once.
_CHUNK = 1024
# Floor of a feature dimension's training spread when standardising (features are layer-normalised,
# so a spread this small is float32 rounding, not signal).
MIN_FEATURE_STD = 1e-4


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def held_out_distances(
    features: torch.Tensor, cloud_ids: torch.Tensor, bank: torch.Tensor, bank_ids: torch.Tensor, exclude_cloud: bool
) -> torch.Tensor:
    """Distance of every training feature to the template without its own cloud.

    Args:
        features: ``(T, F)`` training features; ``cloud_ids``: ``(T,) long`` their clouds.
        bank: ``(M, F)`` template; ``bank_ids``: ``(M,) long`` the cloud of each template vector.
        exclude_cloud: leave out the feature's whole cloud (False, for a single cloud: only the
            feature itself, i.e. zero distances).

    Returns:
        ``(T',)`` the finite distances (a feature whose cloud holds the whole template has none).
    """
    held_out = all_held_out_distances(features, cloud_ids, bank, bank_ids, exclude_cloud)
    return held_out[torch.isfinite(held_out)]


def all_held_out_distances(
    features: torch.Tensor, cloud_ids: torch.Tensor, bank: torch.Tensor, bank_ids: torch.Tensor, exclude_cloud: bool
) -> torch.Tensor:
    """:func:`held_out_distances` for every row: ``(T,)``, ``inf`` where nothing is left to compare with."""
    nearest = []
    for lo in range(0, features.shape[0], _CHUNK):
        dist = torch.cdist(features[lo : lo + _CHUNK], bank)
        if exclude_cloud:
            dist.masked_fill_(cloud_ids[lo : lo + _CHUNK].unsqueeze(1) == bank_ids.unsqueeze(0), float("inf"))
        else:
            dist.masked_fill_(dist == 0, float("inf"))
        nearest.append(dist.min(dim=1).values)
    return torch.cat(nearest)


def mean_cloud_maximum(values: torch.Tensor, cloud_ids: torch.Tensor) -> float:
    """Mean over clouds of each cloud's largest finite value (``values``, ``cloud_ids``: ``(T,)``);
    NaN when no value is finite."""
    finite = torch.isfinite(values)
    values, cloud_ids = values[finite], cloud_ids[finite]
    if values.numel() == 0:
        return float("nan")
    maxima = torch.full((int(cloud_ids.max()) + 1,), float("-inf"), dtype=values.dtype, device=values.device)
    maxima.scatter_reduce_(0, cloud_ids, values, reduce="amax")
    return float(maxima[torch.isfinite(maxima)].mean())


def training_features(
    network: MaskReconstructionNetwork, batches: list[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Fused decoder features of every training patch, gathered over ranks, in canonical cloud order.

    Returns:
        ``(features (T, F), cloud ids (T,), number of clouds)``.
    """
    features, cloud_ids, cloud_keys = [], [], []
    offset = 0
    for points, batch in batches:
        cloud_keys.append(cloud_checksums(points, batch))
        patches = network.make_patches(network.prepare(points, batch))
        fused = network.decoder_features(patches.neighborhoods, patches.centers)  # (B, G, F)
        features.append(fused.reshape(-1, fused.shape[-1]))
        ids = torch.arange(fused.shape[0], device=fused.device) + offset
        cloud_ids.append(ids.repeat_interleave(fused.shape[1]))
        offset += fused.shape[0]
    # Cloud ids stay distinct across ranks: offset by the clouds of the ranks before.
    rank_clouds = all_gather_cat(torch.tensor([offset], dtype=torch.long, device=features[0].device))
    all_ids = all_gather_cat(torch.cat(cloud_ids) + int(rank_clouds[: _rank()].sum()))
    all_features = all_gather_cat(torch.cat(features))
    order = torch.argsort(all_gather_cat(torch.cat(cloud_keys).to(all_features.device)))
    new_id = torch.empty_like(order)
    new_id[order] = torch.arange(order.numel(), device=order.device)
    all_ids = new_id[all_ids]
    rows = torch.argsort(all_ids, stable=True)
    return all_features[rows], all_ids[rows], int(rank_clouds.sum())


class DFCCalibration:
    """The training-set statistics of :class:`~.torch_model.IMRNetModel` (a mixin of it).

    Uses the model's network (``prepare``, ``make_patches``, ``decoder_features``), its raw DFC
    scores and geometric residual, and fills the buffers declared below.
    """

    template_bank: torch.Tensor
    template_count: torch.Tensor
    feature_mean: torch.Tensor
    feature_std: torch.Tensor
    feature_normalization: str
    score_scale: str
    template_delta: torch.Tensor
    point_score_scale: torch.Tensor
    feature_score_scale: torch.Tensor
    geometric_score_scale: torch.Tensor
    calibrated: torch.Tensor
    template_threshold: float | None
    template_quantile: float
    feature_reference: str
    use_feature_score: bool
    geometric_score_weight: float
    geometric_bank: TemplateBank

    def normalize_features(self, features: torch.Tensor) -> torch.Tensor:
        """Fused decoder features ``(..., F)`` in the frame of the training features
        (``feature_normalization``): unchanged, centred on their training mean, or standardised per
        dimension. Identity before calibration."""
        if self.feature_normalization == "none":
            return features
        return (features - self.feature_mean) / self.feature_std

    def _fit_feature_normalization(self, features: torch.Tensor) -> None:
        """Mean and spread of the training features ``(T, F)`` (``feature_normalization``)."""
        self.feature_mean.zero_()
        self.feature_std.fill_(1.0)
        if self.feature_normalization in ("center", "standardize"):
            self.feature_mean.copy_(features.mean(dim=0))
        if self.feature_normalization == "standardize" and features.shape[0] > 1:
            self.feature_std.copy_(features.std(dim=0).clamp_min(MIN_FEATURE_STD))

    def _scale(self, values: torch.Tensor, cloud_ids: torch.Tensor) -> float:
        """The scale a score map is divided by (``score_scale``): the mean of the training values,
        or the mean over training clouds of each cloud's maximum."""
        if self.score_scale == "mean":
            return float(values[torch.isfinite(values)].mean())
        return mean_cloud_maximum(values, cloud_ids)

    @torch.no_grad()
    def calibrate(self, clouds: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """Compute the DFC statistics from normal training clouds (call in eval mode).

        1. Template: fused decoder features of every training patch, normalised
           (``feature_normalization``: their training mean and, when standardising, spread per
           dimension); at most ``template_size`` of them are kept by farthest-point selection in
           feature space. ``δ`` (unless given) is the ``template_quantile`` quantile of each
           training feature's distance to the nearest template vector of *another* cloud.
        2. Scales (``score_scale``): of the point score of the training clouds' network points and
           of the feature score (``"template"`` mode: the held-out distances above, since a training
           feature's distance to a template that contains it is 0) - their mean, or the mean over
           training clouds of each cloud's maximum - used to put both scores on a common scale
           before they are summed.
        3. Geometric templates (when ``geometric_score_weight > 0``): the training clouds registered
           into one frame and their leave-one-out scale (:meth:`IMRNetModel.fit_geometric_templates`).

        Args:
            clouds: iterable of ``(points (ΣN, 3), batch (ΣN,))`` batches of normal clouds.

        Returns:
            The statistics (``template_count``, ``template_delta``, the scales, ``geometric_templates``).
        """
        batches = [(p, b) for p, b in clouds]
        if not batches:
            msg = "calibrate() needs at least one batch of training clouds."
            raise ValueError(msg)
        all_features, all_ids, num_clouds = training_features(self, batches)  # type: ignore[arg-type]
        self._fit_feature_normalization(all_features)
        all_features = self.normalize_features(all_features)
        capacity = self.template_bank.shape[0]
        if all_features.shape[0] > capacity:
            chosen = farthest_point_sample(all_features, capacity, backend="torch")
        else:
            chosen = torch.arange(all_features.shape[0], device=all_features.device)
        self.template_bank.zero_()
        self.template_bank[: chosen.numel()] = all_features[chosen]
        self.template_count.fill_(chosen.numel())

        held_out_all = all_held_out_distances(all_features, all_ids, all_features[chosen], all_ids[chosen], num_clouds > 1)
        held_out = held_out_all[torch.isfinite(held_out_all)]
        if self.template_threshold is not None:
            delta = float(self.template_threshold)
        else:
            delta = float(torch.quantile(held_out, self.template_quantile)) if held_out.numel() else float("inf")
        self.template_delta.fill_(delta)

        point_values, feature_values, value_ids = [], [], []
        offset = 0
        for points, batch in batches:
            prepared, point_scores, feature_scores, covered = self.raw_scores(points, batch)  # type: ignore[attr-defined]
            value_ids.append(prepared.batch[covered] + offset)
            offset += int(batch[-1]) + 1
            if point_scores is not None:
                point_values.append(point_scores[covered])
            if feature_scores is not None and self.feature_reference == "reconstruction":
                feature_values.append(feature_scores[covered])
        if value_ids:
            # Cloud ids stay distinct across ranks: offset by the clouds of the ranks before.
            rank_clouds = all_gather_cat(torch.tensor([offset], dtype=torch.long, device=value_ids[0].device))
            value_ids = all_gather_cat(torch.cat(value_ids) + int(rank_clouds[: _rank()].sum()))
        if self.use_feature_score and self.feature_reference == "template" and held_out.numel():
            # Scores of training clouds against a template that holds them would be ~0.
            self.feature_score_scale.fill_(max(self._scale(held_out_all, all_ids), 1e-12))
        elif feature_values:
            self.feature_score_scale.fill_(max(self._scale(all_gather_cat(torch.cat(feature_values)), value_ids), 1e-12))
        if point_values:
            self.point_score_scale.fill_(max(self._scale(all_gather_cat(torch.cat(point_values)), value_ids), 1e-12))
        if self.geometric_score_weight > 0:
            singles = []
            for points, batch in batches:
                counts = torch.bincount(batch, minlength=int(batch[-1]) + 1).tolist()
                singles.extend(torch.split(points, counts))
            self.fit_geometric_templates(singles)  # type: ignore[attr-defined]
        self.calibrated.fill_(True)
        return {
            "template_count": int(self.template_count),
            "template_delta": float(self.template_delta),
            "point_score_scale": float(self.point_score_scale),
            "feature_score_scale": float(self.feature_score_scale),
            "geometric_score_scale": float(self.geometric_score_scale),
            "geometric_templates": len(self.geometric_bank.templates),
        }


__all__ = [
    "FEATURE_NORMALIZATIONS",
    "SCORE_SCALES",
    "DFCCalibration",
    "all_held_out_distances",
    "held_out_distances",
    "mean_cloud_maximum",
    "training_features",
]
