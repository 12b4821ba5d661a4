"""Chamfer-L2 distance between batches of point clouds (the Point-MAE reconstruction loss)."""

from __future__ import annotations

import torch

from anomalib_3d.ops.backend import CHUNK_ELEMENTS

__all__ = ["chamfer_distance"]


def _check_cloud_batch(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        msg = f"{name} must be a floating (B, N, D) tensor, got {shape}."
        raise ValueError(msg)
    if x.numel() and not bool(torch.isfinite(x).all()):
        msg = f"{name} contains NaN or Inf values."
        raise ValueError(msg)


def _lengths(lengths: torch.Tensor | None, batch: int, size: int, name: str, device: torch.device) -> torch.Tensor:
    if lengths is None:
        if size == 0:
            msg = f"{name.split('_')[0]} has no points; Chamfer distance needs at least one point per cloud."
            raise ValueError(msg)
        return torch.full((batch,), size, dtype=torch.long, device=device)
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.shape != (batch,) or lengths.dtype.is_floating_point:
        msg = f"{name} must be an integer tensor of shape ({batch},), got {tuple(lengths.shape)} {lengths.dtype}."
        raise ValueError(msg)
    if bool((lengths < 1).any()) or bool((lengths > size).any()):
        msg = f"{name} must lie in [1, {size}], got {lengths.tolist()}."
        raise ValueError(msg)
    return lengths.long()


@torch.no_grad()
def _nearest(
    x: torch.Tensor, y: torch.Tensor, x_valid: torch.Tensor, y_valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest valid y for every x and of the nearest valid x for every y."""
    batch, n, _ = x.shape
    m = y.shape[1]
    center = y.sum(1, keepdim=True) / y_valid.sum(1).clamp_min(1).view(-1, 1, 1).to(y.dtype)
    x = x - center
    y = y - center
    y_sq = y.pow(2).sum(-1).masked_fill(~y_valid, float("inf")).unsqueeze(1)  # (B, 1, M)
    x_sq = x.pow(2).sum(-1)
    budget = CHUNK_ELEMENTS * (16 if x.device.type == "cuda" else 1)
    rows = max(1, budget // max(batch * m, 1))
    x_nearest = torch.empty((batch, n), dtype=torch.long, device=x.device)
    y_best = torch.full((batch, m), float("inf"), dtype=x.dtype, device=x.device)
    y_nearest = torch.zeros((batch, m), dtype=torch.long, device=x.device)
    y_t = y.transpose(1, 2).contiguous()
    # One reused buffer: fresh large blocks per chunk fragment the CPU heap on long loops.
    buffer = torch.empty(batch * min(rows, n) * m, dtype=x.dtype, device=x.device)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        dist = buffer[: batch * (r1 - r0) * m].view(batch, r1 - r0, m)
        torch.bmm(x[:, r0:r1], y_t, out=dist)
        dist.mul_(-2.0).add_(y_sq)  # |y|^2 - 2 x.y: |x|^2 does not change the argmin over y
        x_nearest[:, r0:r1] = dist.argmin(dim=2)
        dist += x_sq[:, r0:r1].unsqueeze(2)
        dist.masked_fill_(~x_valid[:, r0:r1].unsqueeze(2), float("inf"))
        chunk_best, chunk_arg = dist.min(dim=1)
        better = chunk_best < y_best
        y_best = torch.where(better, chunk_best, y_best)
        y_nearest = torch.where(better, chunk_arg + r0, y_nearest)
    return x_nearest, y_nearest


def chamfer_distance(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    x_lengths: torch.Tensor | None = None,
    y_lengths: torch.Tensor | None = None,
    reduction: str = "mean",
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Squared-L2 Chamfer distance (Point-MAE's ``ChamferDistanceL2``), memory bounded.

    Per cloud ``b``: ``total_b = mean_i min_j |x_i - y_j|^2 + mean_j min_i |x_i - y_j|^2`` over the
    valid (unpadded) points. Nearest neighbours are found in chunks of rows without gradients;
    distances are then recomputed from the matched coordinates, so gradients flow to ``x`` and
    ``y`` exactly as for a dense implementation.

    Args:
        x: ``(B, N, D)``.
        y: ``(B, M, D)``.
        x_lengths: ``(B,) long`` valid points per cloud of ``x`` (padded clouds), or None = all.
        y_lengths: ``(B,) long`` likewise for ``y``.
        reduction: ``"mean"`` (scalar, average of ``total_b``; equals Point-MAE's
            ``mean(dist1) + mean(dist2)`` for unpadded clouds), ``"sum"`` (scalar) or ``"none"`` ((B,)).

    Returns:
        ``(total, (dist_x (B, N), dist_y (B, M)))``: per-point squared distance to the nearest point
        of the other cloud; padded entries are 0.
    """
    _check_cloud_batch(x, "x")
    _check_cloud_batch(y, "y")
    if x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        msg = f"x {tuple(x.shape)} and y {tuple(y.shape)} must agree in batch size and point dimension."
        raise ValueError(msg)
    if x.device != y.device:
        msg = f"x ({x.device}) and y ({y.device}) must be on the same device."
        raise ValueError(msg)
    if reduction not in {"mean", "sum", "none"}:
        msg = f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}."
        raise ValueError(msg)
    batch, n, _ = x.shape
    m = y.shape[1]
    if batch == 0:
        msg = "x and y must hold at least one cloud."
        raise ValueError(msg)
    x_len = _lengths(x_lengths, batch, n, "x_lengths", x.device)
    y_len = _lengths(y_lengths, batch, m, "y_lengths", x.device)
    x_valid = torch.arange(n, device=x.device).unsqueeze(0) < x_len.unsqueeze(1)
    y_valid = torch.arange(m, device=x.device).unsqueeze(0) < y_len.unsqueeze(1)
    dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = x.to(dtype), y.to(dtype)
    x_nearest, y_nearest = _nearest(x.detach(), y.detach(), x_valid, y_valid)
    dist_x = (x - torch.gather(y, 1, x_nearest.unsqueeze(-1).expand_as(x))).pow(2).sum(-1)
    dist_y = (y - torch.gather(x, 1, y_nearest.unsqueeze(-1).expand_as(y))).pow(2).sum(-1)
    dist_x = dist_x * x_valid
    dist_y = dist_y * y_valid
    total = dist_x.sum(1) / x_len.to(dtype) + dist_y.sum(1) / y_len.to(dtype)
    if reduction == "mean":
        total = total.mean()
    elif reduction == "sum":
        total = total.sum()
    return total, (dist_x, dist_y)
