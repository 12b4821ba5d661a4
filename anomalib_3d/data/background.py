"""Support-plane removal for organized scans, as in BTF's preprocessing."""

from __future__ import annotations

import numpy as np
import torch

from anomalib_3d.data.adapters import valid_pixel_mask


def remove_background_plane(
    xyz: np.ndarray,
    *,
    distance_threshold: float = 0.005,
    border: int = 10,
    seed: int = 0,
) -> np.ndarray:
    """Mask of the pixels that are *not* the support plane, as in BTF's preprocessing.

    The plane is fitted robustly (RANSAC) on the valid pixels of a ``border``-pixel frame around
    the image, where MVTec 3D-AD shows only the support surface; every pixel within
    ``distance_threshold`` (metres) of that plane is background. A plain least-squares fit would
    be dragged by the object; a RANSAC on all pixels can lock onto a flat object top.

    Args:
        xyz: (H, W, 3) float organized grid.

    Returns:
        (H, W) bool: True = keep (valid and off the plane).
    """
    valid = valid_pixel_mask(torch.from_numpy(xyz)).numpy()
    frame = np.zeros_like(valid)
    frame[:border], frame[-border:], frame[:, :border], frame[:, -border:] = True, True, True, True
    candidates = xyz[valid & frame]
    if candidates.shape[0] < 3:
        return valid
    rng = np.random.default_rng(seed)
    best_inliers, best = -1, None
    for _ in range(200):
        p = candidates[rng.choice(candidates.shape[0], 3, replace=False)]
        normal = np.cross(p[1] - p[0], p[2] - p[0])
        norm = np.linalg.norm(normal)
        if norm < 1e-12:
            continue
        normal /= norm
        inliers = int((np.abs((candidates - p[0]) @ normal) < distance_threshold).sum())
        if inliers > best_inliers:
            best_inliers, best = inliers, (normal, p[0])
    if best is None:
        return valid
    # Refine on the inliers with least squares (SVD of the centred inliers).
    normal, origin = best
    inl = candidates[np.abs((candidates - origin) @ normal) < distance_threshold]
    centre = inl.mean(axis=0)
    normal = np.linalg.svd(inl - centre, full_matrices=False)[2][-1]
    distance = np.abs((xyz - centre) @ normal)
    return valid & (distance > distance_threshold)


__all__ = ["remove_background_plane"]
