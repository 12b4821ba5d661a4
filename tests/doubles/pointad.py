"""Stand-ins for PointAD's frozen CLIP and prompts whose outputs are known in closed form.

They let tests check PointAD's scoring, fusion and end-to-end metrics against values computed by
hand, and give a *separable* case (a "backbone" that sees defects) on which an end-to-end run
must beat chance. Never for results.

* :class:`BlueCueBackbone`: renders / RGB images are pooled onto the patch grid; a patch's
  "abnormality" is its blueness ``b - (r + g) / 2`` (clipped to ``[0, 1]``). Patch token =
  ``(1 - s, s)``, global token = ``(1 - max s, max s)`` (or fixed values, see ``fixed_*``).
* :class:`FixedPrompts`: text features ``normal = (1, 0)``, ``abnormal = (0, 1)``, so the
  abnormal probability of a token ``(a, b)`` is ``sigmoid((b - a) / (|(a, b)| tau))``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from anomalib_3d_plugins.pointad.clip_backbone import VisionFeatures


def blueness(images: Tensor) -> Tensor:
    """``(N, H, W)`` blueness ``clip(b - (r + g) / 2, 0, 1)`` of ``(N, 3, H, W)`` images in ``[0, 1]``."""
    return (images[:, 2] - 0.5 * (images[:, 0] + images[:, 1])).clamp(0.0, 1.0)


class BlueCueBackbone(nn.Module):
    """A frozen-CLIP stand-in (same interface as :class:`FrozenCLIP` for PointAD) that sees blue.

    Args:
        image_size: input size (renders are made at this size).
        grid_size: patch grid ``(h, w)``.
        fixed_global: ``(V_total,)`` or scalar "abnormality" of every global token instead of the
            image's maximum blueness (hand-computed tests).
        fixed_patch: scalar abnormality of every patch token instead of the blueness.
        num_layers: how many (identical) feature layers to return.
    """

    def __init__(
        self,
        image_size: int = 64,
        grid_size: int = 8,
        fixed_global: float | Sequence[float] | None = None,
        fixed_patch: float | None = None,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        self.image_size = (image_size, image_size)
        self.grid_size = (grid_size, grid_size)
        self.patch_size = (image_size // grid_size, image_size // grid_size)
        self.feature_layers = tuple(range(1, num_layers + 1))
        self.vv_start_layer = 1
        self.precision = "fp32"
        self.model_name = "blue-cue-standin"
        self.weights_id = "none"
        self.embed_dim = 2
        self.fixed_global = fixed_global
        self.fixed_patch = fixed_patch
        self.requires_grad_(False)

    def prepare_images(self, images: Tensor, *, antialias: bool = False) -> Tensor:
        """Resize (bilinear) to the input size; no CLIP normalisation (blueness reads raw colours)."""
        if tuple(images.shape[-2:]) == self.image_size:
            return images.float()
        return F.interpolate(images.float(), size=self.image_size, mode="bilinear", align_corners=False,
                             antialias=antialias)

    @torch.no_grad()
    def encode_image(self, images: Tensor) -> VisionFeatures:
        """Tokens ``(1 - s, s)`` from the blueness ``s`` (patch mean; global: the patch maximum)."""
        cue = F.adaptive_avg_pool2d(blueness(images).unsqueeze(1), self.grid_size)[:, 0]  # (N, h, w)
        patch = cue.flatten(1) if self.fixed_patch is None else torch.full_like(cue.flatten(1), self.fixed_patch)
        if self.fixed_global is None:
            glob = patch.amax(dim=1)
        else:
            glob = torch.as_tensor(self.fixed_global, dtype=patch.dtype, device=patch.device).expand(patch.shape[0])
        tokens = torch.stack([1.0 - patch, patch], dim=-1)  # (N, h*w, 2)
        return VisionFeatures(torch.stack([1.0 - glob, glob], dim=-1), [tokens] * len(self.feature_layers))


class FixedPrompts(nn.Module):
    """Prompt-learner stand-in: ``normal = (1, 0)``, ``abnormal = (0, 1)`` (plus a zero-effect parameter
    so optimisers and the loss have something to hold)."""

    def __init__(self) -> None:
        super().__init__()
        self.object_agnostic = True
        self.anchor = nn.Parameter(torch.zeros(1))

    def class_words(self, class_names: Sequence[str] | None) -> list[str]:
        """Always the agnostic word."""
        del class_names
        return ["object"]

    def forward(self, backbone: nn.Module, class_names: Sequence[str] | None = None) -> Tensor:
        """``(1, 2, 2)`` text features."""
        del backbone, class_names
        text = torch.eye(2, device=self.anchor.device)
        return (text + 0.0 * self.anchor).unsqueeze(0)


__all__ = ["BlueCueBackbone", "FixedPrompts", "blueness"]
