"""PointAD's hybrid loss (paper §3.5): two MIL terms on points and two multi-task terms on pixels.

With ``K`` views per cloud, ``P(g, f) = softmax([cos(f, g_n), cos(f, g_a)] / tau)`` and two-class
segmentation maps ``S_n, S_a`` (softmax over the two prompts at every patch, upsampled bilinearly to
the render size):

* **3D global** (view-wise MIL): ``CE(1/K sum_k P(g, f^(k)), y)`` — the *mean over views of the
  probabilities* against the object label (the authors' release averages logits instead; we follow
  the paper's formula);
* **3D local** (pixel-wise MIL): per point the maps are read at its pixel in every view where it is
  visible and averaged (``S^3d``); ``Dice(S^3d_a, y) + Dice(S^3d_n, 1 - y)`` per cloud;
* **2D global** (MTL): ``CE(P(g, f^(k)), y^(k))`` for every view, ``y^(k) = 1`` iff the view's
  rendered mask has an anomalous pixel;
* **2D local** (MTL): ``Focal([S_n, S_a], M^(k)) + Dice(S_a, M^(k)) + Dice(S_n, 1 - M^(k))`` per view.

``L_hybrid`` is the sum of the enabled terms (Table 6 switches them). Local terms of several
vision layers are averaged over the layers. Dice uses AnomalyCLIP's smoothing of 1 and is averaged
over clouds (3D) or view images (2D); Focal uses ``gamma = 2`` on the probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

EPS = 1e-8


def dice_loss(
    pred: Tensor,
    target: Tensor,
    group: Tensor | None = None,
    *,
    num_groups: int | None = None,
    valid: Tensor | None = None,
    smooth: float = 1.0,
) -> Tensor:
    """Soft Dice loss ``1 - (2 sum(p t) + s) / (sum p + sum t + s)``, averaged over groups.

    Args:
        pred: ``(G, ...)`` soft predictions in ``[0, 1]`` (one row per group), or ``(M,)`` with ``group``.
        target: same shape as ``pred``, in ``{0, 1}`` (or soft).
        group: ``(M,)`` long group of each entry of flat ``pred`` (e.g. the cloud of each point).
        num_groups: number of groups for ``group`` (default ``group.max() + 1``).
        valid: optional bool mask of entries that take part (same shape as ``pred``).
        smooth: additive smoothing ``s``.

    Returns:
        Scalar: mean over groups of the per-group Dice loss.
    """
    if pred.shape != target.shape:
        msg = f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape."
        raise ValueError(msg)
    target = target.to(pred.dtype)
    if valid is not None:
        weight = valid.to(pred.dtype)
        pred, target = pred * weight, target * weight
    if group is None:
        flat_pred, flat_target = pred.reshape(pred.shape[0], -1), target.reshape(target.shape[0], -1)
        intersection = (flat_pred * flat_target).sum(1)
        total = flat_pred.sum(1) + flat_target.sum(1)
    else:
        if pred.ndim != 1 or group.shape != pred.shape:
            msg = "with group, pred/target/group must all be (M,)."
            raise ValueError(msg)
        count = int(group.max().item()) + 1 if num_groups is None else int(num_groups)
        intersection = pred.new_zeros(count).index_add(0, group, pred * target)
        total = pred.new_zeros(count).index_add(0, group, pred + target)
    return (1.0 - (2.0 * intersection + smooth) / (total + smooth)).mean()


def focal_loss(probs: Tensor, target: Tensor, *, gamma: float = 2.0, eps: float = 1e-6) -> Tensor:
    """Focal loss on class probabilities: ``mean(-(1 - p_t)^gamma log p_t)``.

    Args:
        probs: ``(M, C, ...)`` probabilities (softmax over ``C``).
        target: ``(M, ...)`` long class index of every entry.
        gamma: focusing exponent.
        eps: probabilities are clamped to ``[eps, 1]`` before the log.

    Returns:
        Scalar mean over every entry.
    """
    p_true = probs.gather(1, target.long().unsqueeze(1)).squeeze(1).clamp(min=eps, max=1.0)
    return (-(1.0 - p_true).pow(gamma) * p_true.log()).mean()


def global_3d_loss(view_probs: Tensor, labels: Tensor) -> Tensor:
    """View-wise MIL: cross-entropy of the mean over views of the class probabilities.

    Args:
        view_probs: ``(B, V, 2)`` per-view ``[normal, abnormal]`` probabilities.
        labels: ``(B,)`` object labels (0 normal, 1 anomalous).

    Returns:
        Scalar ``mean_b -log(mean_v p_{b,v}[y_b])``.
    """
    mean_probs = view_probs.mean(dim=1)
    picked = mean_probs.gather(1, labels.long().view(-1, 1)).squeeze(1)
    return -picked.clamp(min=EPS).log().mean()


def global_2d_loss(view_logits: Tensor, view_labels: Tensor) -> Tensor:
    """Multi-task global term: cross-entropy of every view against its own label.

    Args:
        view_logits: ``(B, V, 2)`` logits (``cos / tau``).
        view_labels: ``(B, V)`` 1 where the view's rendered mask has anomalous pixels.
    """
    return F.cross_entropy(view_logits.reshape(-1, view_logits.shape[-1]), view_labels.reshape(-1).long())


def local_3d_loss(
    point_probs: Tensor,
    point_labels: Tensor,
    batch: Tensor,
    num_clouds: int,
    valid: Tensor | None = None,
    smooth: float = 1.0,
) -> Tensor:
    """Pixel-wise MIL: Dice of the gathered point maps against the point labels, per cloud.

    Args:
        point_probs: ``(N, 2)`` view-averaged ``[S_n, S_a]`` of every point.
        point_labels: ``(N,)`` point labels.
        batch: ``(N,)`` cloud of each point.
        num_clouds: ``B``.
        valid: ``(N,)`` bool, points seen in at least one view (others carry no signal).

    Returns:
        Scalar ``mean_b [Dice(S_a, y) + Dice(S_n, 1 - y)]``.
    """
    labels = point_labels.to(point_probs.dtype)
    abnormal = dice_loss(point_probs[:, 1], labels, batch, num_groups=num_clouds, valid=valid, smooth=smooth)
    normal = dice_loss(point_probs[:, 0], 1.0 - labels, batch, num_groups=num_clouds, valid=valid, smooth=smooth)
    return abnormal + normal


def local_2d_loss(pixel_probs: Tensor, masks: Tensor, *, gamma: float = 2.0, smooth: float = 1.0) -> Tensor:
    """Multi-task local term on the rendered views.

    Args:
        pixel_probs: ``(B, V, 2, H, W)`` ``[S_n, S_a]`` upsampled to the render size.
        masks: ``(B, V, H, W)`` rendered ground truth in ``{0, 1}``.

    Returns:
        Scalar ``Focal + Dice(S_a, M) + Dice(S_n, 1 - M)`` (Dice per view image, averaged).
    """
    probs = pixel_probs.flatten(0, 1)
    target = masks.flatten(0, 1).to(probs.dtype)
    focal = focal_loss(probs, (target > 0.5).long(), gamma=gamma)
    return focal + dice_loss(probs[:, 1], target, smooth=smooth) + dice_loss(probs[:, 0], 1.0 - target, smooth=smooth)


@dataclass
class HybridLossInputs:
    """What the hybrid loss reads (``L`` vision layers, ``B`` clouds, ``V`` views, ``N`` points).

    Attributes:
        view_logits: ``(B, V, 2)`` global logits of every view.
        labels: ``(B,)`` object labels.
        view_labels: ``(B, V)`` view labels (rendered mask has an anomalous pixel).
        point_probs: ``L x (N, 2)`` view-averaged point maps.
        point_labels: ``(N,)`` point labels.
        batch: ``(N,)`` cloud of each point.
        point_valid: ``(N,)`` bool, point visible in some view.
        pixel_probs: ``L x (B, V, 2, H, W)`` per-view maps at render size.
        masks: ``(B, V, H, W)`` rendered ground truth.
    """

    view_logits: Tensor
    labels: Tensor
    view_labels: Tensor | None = None
    point_probs: Sequence[Tensor] | None = None
    point_labels: Tensor | None = None
    batch: Tensor | None = None
    point_valid: Tensor | None = None
    pixel_probs: Sequence[Tensor] | None = None
    masks: Tensor | None = None


class HybridLoss(nn.Module):
    """``L_hybrid = L3d_global + L3d_local + L2d_global + L2d_local``, each term switchable.

    Args:
        global_3d, local_3d, global_2d, local_2d: enable the term (paper Table 6).
        focal_gamma: Focal loss exponent.
        dice_smooth: Dice smoothing.
    """

    TERMS = ("global_3d", "local_3d", "global_2d", "local_2d")

    def __init__(
        self,
        global_3d: bool = True,
        local_3d: bool = True,
        global_2d: bool = True,
        local_2d: bool = True,
        focal_gamma: float = 2.0,
        dice_smooth: float = 1.0,
    ) -> None:
        super().__init__()
        self.enabled = {"global_3d": global_3d, "local_3d": local_3d, "global_2d": global_2d, "local_2d": local_2d}
        if not any(self.enabled.values()):
            msg = "at least one term of the hybrid loss must be enabled."
            raise ValueError(msg)
        self.focal_gamma = focal_gamma
        self.dice_smooth = dice_smooth

    @property
    def needs_points(self) -> bool:
        """The 3D local term needs the maps gathered to points."""
        return self.enabled["local_3d"]

    @property
    def needs_pixels(self) -> bool:
        """The 2D terms need rendered masks."""
        return self.enabled["local_2d"] or self.enabled["global_2d"]

    def forward(self, inputs: HybridLossInputs) -> dict[str, Tensor]:
        """Compute the enabled terms and their sum.

        Returns:
            ``{"loss": total, "<term>": value, ...}`` for the enabled terms.
        """
        terms: dict[str, Tensor] = {}
        if self.enabled["global_3d"]:
            terms["global_3d"] = global_3d_loss(inputs.view_logits.softmax(dim=-1), inputs.labels)
        if self.enabled["global_2d"]:
            terms["global_2d"] = global_2d_loss(inputs.view_logits, _require(inputs.view_labels, "view_labels"))
        if self.enabled["local_3d"]:
            layers = _require(inputs.point_probs, "point_probs")
            batch = _require(inputs.batch, "batch")
            labels = _require(inputs.point_labels, "point_labels")
            num_clouds = int(inputs.labels.shape[0])
            per_layer = [
                local_3d_loss(p, labels, batch, num_clouds, inputs.point_valid, smooth=self.dice_smooth) for p in layers
            ]
            terms["local_3d"] = torch.stack(per_layer).mean()
        if self.enabled["local_2d"]:
            layers = _require(inputs.pixel_probs, "pixel_probs")
            masks = _require(inputs.masks, "masks")
            per_layer = [local_2d_loss(p, masks, gamma=self.focal_gamma, smooth=self.dice_smooth) for p in layers]
            terms["local_2d"] = torch.stack(per_layer).mean()
        terms["loss"] = torch.stack(list(terms.values())).sum()
        return terms


def _require(value: object, name: str) -> object:
    if value is None:
        msg = f"the hybrid loss needs '{name}' for the enabled terms."
        raise ValueError(msg)
    return value


__all__ = [
    "HybridLoss",
    "HybridLossInputs",
    "dice_loss",
    "focal_loss",
    "global_2d_loss",
    "global_3d_loss",
    "local_2d_loss",
    "local_3d_loss",
]
