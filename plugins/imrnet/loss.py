"""IMRNet losses and patch comparisons, built on the shared Chamfer-L2 op."""

from __future__ import annotations

import torch

from anomalib_3d.ops import chamfer_distance


def _flatten_patches(patches: torch.Tensor, name: str) -> torch.Tensor:
    if patches.dim() != 4 or patches.shape[-1] != 3:
        msg = f"{name} must be (B, M, K, 3) patches, got {tuple(patches.shape)}."
        raise ValueError(msg)
    return patches.reshape(-1, patches.shape[2], 3)


def masked_patch_chamfer_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PMR reconstruction loss (paper Eq. 12): Chamfer-L2 between predicted and true masked patches.

    Per patch ``mean_i min_j |p_i - t_j|^2 + mean_j min_i |p_i - t_j|^2`` (squared distances, as
    Point-MAE's ``ChamferDistanceL2``), averaged over all masked patches of the batch.

    Args:
        predicted: ``(B, M, K, 3)`` reconstructed masked patches (local coordinates).
        target: ``(B, M, K', 3)`` the masked patches of the input (local coordinates).

    Returns:
        Scalar loss.
    """
    if predicted.shape[:2] != target.shape[:2]:
        msg = f"predicted {tuple(predicted.shape)} and target {tuple(target.shape)} differ in (B, M)."
        raise ValueError(msg)
    total, _ = chamfer_distance(_flatten_patches(predicted, "predicted"), _flatten_patches(target, "target"))
    return total


def patch_chamfer_scores(original: torch.Tensor, reconstructed: torch.Tensor) -> torch.Tensor:
    """DFC point-patch comparison (paper Eq. 13-14): Chamfer-L2 of each input patch vs its reconstruction.

    Args:
        original: ``(B, G, K, 3)`` input patches (local coordinates).
        reconstructed: ``(B, G, K', 3)`` the same patches after iterative reconstruction.

    Returns:
        ``(B, G)`` per-patch Chamfer-L2 (0 for a patch identical to its reconstruction).
    """
    if original.shape[:2] != reconstructed.shape[:2]:
        msg = f"original {tuple(original.shape)} and reconstructed {tuple(reconstructed.shape)} differ in (B, G)."
        raise ValueError(msg)
    total, _ = chamfer_distance(
        _flatten_patches(original, "original"), _flatten_patches(reconstructed, "reconstructed"), reduction="none"
    )
    return total.view(original.shape[0], original.shape[1])


def patch_point_distances(original: torch.Tensor, reconstructed: torch.Tensor) -> torch.Tensor:
    """Squared distance of every input patch point to the nearest point of its reconstructed patch.

    The one-sided, per-point term of :func:`patch_chamfer_scores` (finer localisation than the
    per-patch value).

    Args:
        original: ``(B, G, K, 3)`` input patches (local coordinates).
        reconstructed: ``(B, G, K', 3)`` reconstructed patches.

    Returns:
        ``(B, G, K)``.
    """
    if original.shape[:2] != reconstructed.shape[:2]:
        msg = f"original {tuple(original.shape)} and reconstructed {tuple(reconstructed.shape)} differ in (B, G)."
        raise ValueError(msg)
    _, (dist_original, _) = chamfer_distance(
        _flatten_patches(original, "original"), _flatten_patches(reconstructed, "reconstructed"), reduction="none"
    )
    return dist_original.view(original.shape[:3])


__all__ = ["masked_patch_chamfer_loss", "patch_chamfer_scores", "patch_point_distances"]
