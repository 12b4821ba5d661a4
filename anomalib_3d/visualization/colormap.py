"""Anomaly score → colour with a *fixed* range, and the ground-truth palette.

A per-sample min–max stretch makes every cloud look anomalous somewhere (its own maximum is
always bright red), so heatmaps of different samples could not be compared. Scores are therefore
mapped through one fixed range ``[vmin, vmax]``; the default ``(0, 1)`` is the range of anomalib's
``PostProcessor`` output, where ``0.5`` is the decision threshold. For raw (un-normalised) scores
pass the range explicitly, e.g. ``score_range=(0.0, 3.5)``. Values outside the range saturate.

Everything is torch and stays on the input's device.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

#: Colour of normal points in ground-truth renders (light grey) and of anomalous ones (red).
GT_NORMAL_RGB = (0.72, 0.72, 0.72)
GT_ANOMALOUS_RGB = (0.86, 0.08, 0.08)

_LUT_SIZE = 256


@lru_cache(maxsize=8)
def _lut(cmap: str) -> np.ndarray:
    import matplotlib as mpl

    try:
        colormap = mpl.colormaps[cmap]
    except KeyError as exc:
        msg = f"unknown matplotlib colormap {cmap!r}; use e.g. 'jet', 'turbo', 'inferno'."
        raise ValueError(msg) from exc
    return np.asarray(colormap(np.linspace(0.0, 1.0, _LUT_SIZE))[:, :3], dtype=np.float32)


def normalize_scores(scores: torch.Tensor, vmin: float = 0.0, vmax: float = 1.0) -> torch.Tensor:
    """Map scores linearly from ``[vmin, vmax]`` to ``[0, 1]`` and clip.

    Args:
        scores: ``(...)`` float scores.
        vmin: score shown with the lowest colour.
        vmax: score shown with the highest colour (``> vmin``).

    Returns:
        ``(...)`` float in ``[0, 1]``; NaN scores become 0.
    """
    if not vmax > vmin:
        msg = f"score range must satisfy vmax > vmin, got ({vmin}, {vmax})."
        raise ValueError(msg)
    unit = (scores.float() - vmin) / (vmax - vmin)
    return torch.nan_to_num(unit, nan=0.0).clamp(0.0, 1.0)


def score_to_rgb(
    scores: torch.Tensor,
    vmin: float = 0.0,
    vmax: float = 1.0,
    cmap: str = "jet",
) -> torch.Tensor:
    """Colour scores with a matplotlib colormap over the fixed range ``[vmin, vmax]``.

    Args:
        scores: ``(...)`` float scores (per point or per pixel).
        vmin, vmax: fixed score range (see the module docstring).
        cmap: matplotlib colormap name.

    Returns:
        ``(..., 3)`` float RGB in ``[0, 1]`` on ``scores.device``.
    """
    lut = torch.from_numpy(_lut(cmap)).to(scores.device)
    index = (normalize_scores(scores, vmin, vmax) * (_LUT_SIZE - 1)).round().long()
    return lut[index]


def gt_to_rgb(gt_mask: torch.Tensor) -> torch.Tensor:
    """Ground-truth colours: anomalous red on normal grey.

    Args:
        gt_mask: ``(...)`` bool (or 0/1) labels.

    Returns:
        ``(..., 3)`` float RGB in ``[0, 1]``.
    """
    mask = gt_mask.bool()
    normal = torch.tensor(GT_NORMAL_RGB, device=mask.device)
    anomalous = torch.tensor(GT_ANOMALOUS_RGB, device=mask.device)
    return torch.where(mask.unsqueeze(-1), anomalous, normal)


def overlay_heatmap(
    image: torch.Tensor,
    scores: torch.Tensor,
    vmin: float = 0.0,
    vmax: float = 1.0,
    cmap: str = "jet",
    alpha: float = 0.5,
) -> torch.Tensor:
    """Blend a score heatmap over an RGB image.

    Args:
        image: ``(3, H, W)`` float RGB in ``[0, 1]`` (``[0, 255]`` is rescaled).
        scores: ``(H, W)`` float scores at the image resolution.
        vmin, vmax, cmap: as in :func:`score_to_rgb`.
        alpha: heatmap opacity in ``[0, 1]``.

    Returns:
        ``(H, W, 3)`` float RGB in ``[0, 1]``.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        msg = f"image must be (3, H, W), got {tuple(image.shape)}."
        raise ValueError(msg)
    if tuple(scores.shape) != tuple(image.shape[1:]):
        msg = f"scores {tuple(scores.shape)} must match the image size {tuple(image.shape[1:])}."
        raise ValueError(msg)
    rgb = image.float().permute(1, 2, 0)
    if rgb.numel() and float(rgb.max()) > 1.0:
        rgb = rgb / 255.0
    heat = score_to_rgb(scores, vmin, vmax, cmap)
    return ((1.0 - alpha) * rgb.clamp(0.0, 1.0) + alpha * heat).clamp(0.0, 1.0)


__all__ = [
    "GT_ANOMALOUS_RGB",
    "GT_NORMAL_RGB",
    "gt_to_rgb",
    "normalize_scores",
    "overlay_heatmap",
    "score_to_rgb",
]
