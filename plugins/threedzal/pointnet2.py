"""A small PointNet++ (single-scale grouping) for fixed-size point patches.

3DzAL runs two of these on every 8 x 8-pixel patch: the learned feature branch f_theta and the
normalcy classifier g_phi. A patch is tiny (at most 64 points), so the network is two set
abstractions: FPS centroids + kNN groups + shared MLP + max-pool, then one "group all" level.
Every step is differentiable with respect to the input coordinates (the test-time input
perturbation needs that gradient); only the FPS / kNN *indices* are not.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from anomalib_3d.ops import farthest_point_sample


class PointBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the channel (last) dimension of ``(..., C)`` point features, as in PointNet++:
    normalising across patches keeps the patch features from collapsing onto one direction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view_as(x)


def shared_mlp(widths: Sequence[int]) -> nn.Sequential:
    """Point-wise MLP ``widths[0] -> ... -> widths[-1]`` (Linear + BatchNorm + ReLU per layer)."""
    layers: list[nn.Module] = []
    for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(c_in, c_out), PointBatchNorm(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def patch_centroids(patches: torch.Tensor, num_centroids: int) -> torch.Tensor:
    """Farthest-point-sampled centroid indices of every patch (``anomalib_3d.ops`` FPS).

    Args:
        patches: ``(P, n, 3)`` patches of ``n`` points each.
        num_centroids: ``m <= n`` centroids per patch.

    Returns:
        ``(P, m) long`` local indices into each patch.
    """
    num_patches, n, _ = patches.shape
    batch = torch.arange(num_patches, device=patches.device).repeat_interleave(n)
    # The pure-torch backend runs every patch in one vectorised loop of m steps (fpsample would
    # loop over thousands of tiny clouds in Python).
    flat = farthest_point_sample(patches.detach().reshape(-1, 3), m := min(num_centroids, n), batch, backend="torch")
    offsets = torch.arange(num_patches, device=patches.device).repeat_interleave(m) * n
    return (flat - offsets).view(num_patches, m)


class PatchPointNet2(nn.Module):
    """PointNet++ SSG for ``(P, n, 3)`` patches → ``(P, out_dim)``.

    Args:
        out_dim: output width (feature size of f_theta, or 2 logits for g_phi).
        num_centroids: centroids of the first set abstraction.
        group_size: neighbours per centroid (kNN inside the patch).
        widths: hidden widths ``(c1, c2)`` of the two set abstractions.
    """

    def __init__(self, out_dim: int = 32, num_centroids: int = 16, group_size: int = 8,
                 widths: Sequence[int] = (32, 64)) -> None:
        super().__init__()
        c1, c2 = widths
        self.num_centroids = int(num_centroids)
        self.group_size = int(group_size)
        self.out_dim = int(out_dim)
        self.local = shared_mlp((3, c1, c1))
        self.global_ = shared_mlp((3 + c1, c2, c2))
        self.head = nn.Linear(c2, out_dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Args: patches ``(P, n, 3)`` (centred, scaled). Returns ``(P, out_dim)``."""
        if patches.ndim != 3 or patches.shape[-1] != 3:
            msg = f"patches must be (P, n, 3), got {tuple(patches.shape)}."
            raise ValueError(msg)
        num_patches, n, _ = patches.shape
        if num_patches == 0:
            return patches.new_zeros((0, self.out_dim))
        centroid_index = patch_centroids(patches, self.num_centroids)  # (P, m)
        centroids = patches.gather(1, centroid_index[..., None].expand(-1, -1, 3))  # (P, m, 3)
        k = min(self.group_size, n)
        # kNN inside a patch of <= 64 points: one dense (P, m, n) distance block is the cheapest.
        with torch.no_grad():
            neighbours = torch.cdist(centroids, patches).topk(k, dim=-1, largest=False).indices  # (P, m, k)
        grouped = patches[torch.arange(num_patches, device=patches.device)[:, None, None], neighbours]
        local = self.local(grouped - centroids[:, :, None, :]).amax(dim=2)  # (P, m, c1)
        pooled = self.global_(torch.cat([centroids, local], dim=-1)).amax(dim=1)  # (P, c2)
        return self.head(pooled)


class PatchDecoder(nn.Module):
    """Feature ``(P, d)`` → ``(P, num_points, 3)`` patch: the decoder of the denoising control.

    Args:
        in_dim: feature width d; num_points: points rebuilt per patch; hidden: hidden width.
    """

    def __init__(self, in_dim: int, num_points: int, hidden: int = 128) -> None:
        super().__init__()
        self.num_points = int(num_points)
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 3 * self.num_points))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Args: features ``(P, d)``. Returns ``(P, num_points, 3)``."""
        return self.net(features).view(features.shape[0], self.num_points, 3)


__all__ = ["PatchDecoder", "PatchPointNet2", "patch_centroids", "shared_mlp"]
