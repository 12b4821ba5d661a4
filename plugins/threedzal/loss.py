"""3DzAL losses: patch contrastive (Eq. 1), representation disentanglement (Eq. 2) and the normalcy
classifier's cross-entropy (Eq. 3), each switchable.

The paper's PDF lost the symbols of Eq. 1-2; the forms below are our reading of the text
(documented in the README):

* Eq. 1 — supervised-contrastive form with normal patches as anchors::

      L_con = -1/|P| sum_{i in P} 1/|P\\i| sum_{p in P\\i}
              log( exp(s_ip / tau) / (sum_{p' in P\\i} exp(s_ip' / tau) + sum_{n in N} exp(s_in / tau)) )

  with ``s`` the cosine similarity, ``P`` the normal (positive) and ``N`` the pseudo-anomalous
  (negative) patch features, ``tau = 0.07``.
* Eq. 2 — f_theta (d-dim) and FPFH (33-dim) differ in width, so FPFH goes through a fixed, seeded
  random projection to d dims first; the loss is the mean *squared* cosine similarity (driving the
  features orthogonal — minimising the signed cosine would make f_theta an anti-copy of FPFH,
  which is just as redundant). ``mode="signed"`` gives the literal minimised cosine.

A self-supervised alternative for f_theta (a control, not in the paper): **denoising** — f_theta
encodes a jittered normal patch, a small decoder rebuilds the clean patch, scored by the Chamfer
distance (:func:`patch_denoising_loss`). It needs no pseudo-anomalies.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from anomalib_3d.ops import chamfer_distance


def patch_contrastive_loss(positives: torch.Tensor, negatives: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Eq. 1: pull normal patch features together, push pseudo-anomalous ones away.

    Args:
        positives: ``(P, d)`` features of normal patches (``P >= 2``).
        negatives: ``(Q, d)`` features of pseudo-anomalous patches (``Q >= 0``).
        temperature: ``tau``.

    Returns:
        scalar loss.
    """
    if positives.shape[0] < 2:
        msg = f"the contrastive loss needs at least 2 positive patches, got {positives.shape[0]}."
        raise ValueError(msg)
    pos = F.normalize(positives, dim=-1)
    neg = F.normalize(negatives, dim=-1)
    num = pos.shape[0]
    sim_pp = pos @ pos.T / temperature  # (P, P)
    sim_pn = pos @ neg.T / temperature  # (P, Q)
    self_mask = torch.eye(num, dtype=torch.bool, device=pos.device)
    sim_pp_others = sim_pp.masked_fill(self_mask, -math.inf)
    # log of the denominator: every other positive and every negative.
    log_denominator = torch.logsumexp(torch.cat([sim_pp_others, sim_pn], dim=1), dim=1, keepdim=True)  # (P, 1)
    log_prob = (sim_pp - log_denominator).masked_fill(self_mask, 0.0)
    return -(log_prob.sum(dim=1) / (num - 1)).mean()


def patch_denoising_loss(reconstruction: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Mean squared-L2 Chamfer distance between rebuilt and clean patches.

    Args:
        reconstruction: ``(P, m, 3)`` decoded points; clean: ``(P, n, 3)`` the unjittered patches.

    Returns:
        scalar loss.
    """
    return chamfer_distance(reconstruction, clean.to(reconstruction.dtype))[0]


class DisentanglementLoss(nn.Module):
    """Eq. 2: cosine similarity between f_theta and (randomly projected) FPFH, minimised.

    Args:
        feature_dim: width d of f_theta.
        fpfh_dim: FPFH width (33).
        mode: ``"squared"`` (mean cos^2, default) or ``"signed"`` (mean cos).
        seed: seed of the fixed projection (a buffer: saved with the model).
    """

    def __init__(self, feature_dim: int, fpfh_dim: int = 33, mode: str = "squared", seed: int = 0) -> None:
        super().__init__()
        if mode not in {"squared", "signed"}:
            msg = f"disentanglement mode must be 'squared' or 'signed', got {mode!r}."
            raise ValueError(msg)
        self.mode = mode
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(fpfh_dim, feature_dim, generator=generator) / math.sqrt(feature_dim))

    def forward(self, features: torch.Tensor, fpfh: torch.Tensor) -> torch.Tensor:
        """Args: features ``(P, d)``, fpfh ``(P, 33)``. Returns a scalar."""
        cosine = F.cosine_similarity(features, fpfh.to(features.dtype) @ self.projection, dim=-1)
        return cosine.square().mean() if self.mode == "squared" else cosine.mean()


class ThreeDzALLoss(nn.Module):
    """lambda1 * L_con + lambda2 * L_dis (f_theta) + L_cls (g_phi) [+ lambda_den * L_den]; every term switchable.

    Args:
        contrastive: use Eq. 1.
        disentanglement: use Eq. 2.
        classification: train the normalcy classifier (Eq. 3).
        lambda_contrastive, lambda_disentanglement: ``lambda1 = 1``, ``lambda2 = 100``.
        temperature: ``tau`` of Eq. 1.
        feature_dim: width of f_theta (for the FPFH projection).
        disentanglement_mode: see :class:`DisentanglementLoss`.
        denoising, lambda_denoising: the self-supervised denoising term and its weight.
    """

    TERMS = ("contrastive", "disentanglement", "classification", "denoising")

    def __init__(self, contrastive: bool = True, disentanglement: bool = True, classification: bool = True,
                 lambda_contrastive: float = 1.0, lambda_disentanglement: float = 100.0, temperature: float = 0.07,
                 feature_dim: int = 32, disentanglement_mode: str = "squared", denoising: bool = False,
                 lambda_denoising: float = 1.0) -> None:
        super().__init__()
        self.use_contrastive = contrastive
        self.use_disentanglement = disentanglement
        self.use_classification = classification
        self.use_denoising = denoising
        self.lambda_denoising = float(lambda_denoising)
        self.lambda_contrastive = float(lambda_contrastive)
        self.lambda_disentanglement = float(lambda_disentanglement)
        self.temperature = float(temperature)
        self.disentanglement = DisentanglementLoss(feature_dim, mode=disentanglement_mode)

    def forward(
        self,
        positive_features: torch.Tensor | None,
        negative_features: torch.Tensor | None,
        positive_fpfh: torch.Tensor | None,
        logits: torch.Tensor | None,
        labels: torch.Tensor | None,
        denoising: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Args: f_theta of normal ``(P, d)`` / pseudo-anomalous ``(Q, d)`` patches, FPFH of the normal
        ones ``(P, 33)``, g_phi logits ``(P+Q, 2)`` and labels ``(P+Q,)`` (1 = pseudo-anomalous), the
        :func:`patch_denoising_loss` value (or None).

        Returns: ``{"loss", and each active term}``.
        """
        terms: dict[str, torch.Tensor] = {}
        if self.use_contrastive and positive_features is not None and negative_features is not None:
            terms["contrastive"] = patch_contrastive_loss(positive_features, negative_features, self.temperature)
        if self.use_disentanglement and positive_features is not None and positive_fpfh is not None:
            terms["disentanglement"] = self.disentanglement(positive_features, positive_fpfh)
        if self.use_classification and logits is not None and labels is not None:
            terms["classification"] = F.cross_entropy(logits, labels.long())
        if self.use_denoising and denoising is not None:
            terms["denoising"] = denoising
        weights = {"contrastive": self.lambda_contrastive, "disentanglement": self.lambda_disentanglement,
                   "classification": 1.0, "denoising": self.lambda_denoising}
        if terms:
            terms["loss"] = sum(weights[name] * value for name, value in terms.items())
        return terms


__all__ = ["DisentanglementLoss", "ThreeDzALLoss", "patch_contrastive_loss", "patch_denoising_loss"]
