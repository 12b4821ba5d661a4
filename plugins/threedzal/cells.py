"""Organized clouds on the model grid and their cells (the patches 3DzAL scores).

A cloud on a ``G x G`` grid is cut into ``patch_size``-pixel cells; every cell holding at least one
point is a patch of ``patch_size**2`` slots, filled by cycling through the cell's points (PointNet++
max-pooling cannot see the repetition). Training cells, pseudo-anomalous cells and test cells all go
through :func:`cut_cells`, so they differ only in what the grid holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class OrganizedCloud:
    """One cloud on the model grid.

    Attributes:
        xyz: ``(G, G, 3)``; valid: ``(G, G)`` bool (points used by the model);
        rgb: ``(3, G, G)`` in [0, 1] or None; source_shape: (H, W) of the input grid;
        grid_index: ``(N,) long`` input points' pixels in the input grid; key: cache key (path).
    """

    xyz: torch.Tensor
    valid: torch.Tensor
    rgb: torch.Tensor | None
    source_shape: tuple[int, int]
    grid_index: torch.Tensor
    key: str | None = None


@dataclass
class CellPatches:
    """The non-empty cells of one cloud as fixed-size point patches.

    Attributes:
        points: ``(P, n, 3)`` raw coordinates (padded by cycling through the cell's points).
        centers: ``(P, 3)`` mean of each cell's points.
        counts: ``(P,) long`` points per cell; cells: ``(P,) long`` flat cell index (row * w + col);
        point_index: ``(P, n) long`` index of each slot into the cloud ``xyz[valid]`` (row-major).
    """

    points: torch.Tensor
    centers: torch.Tensor
    counts: torch.Tensor
    cells: torch.Tensor
    point_index: torch.Tensor


def _by_cell(t: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(G, G, ...)`` → ``(h * h, patch_size**2, ...)`` with ``h = G / patch_size`` (row-major cells)."""
    p, h = patch_size, t.shape[0] // patch_size
    return t.reshape(h, p, h, p, *t.shape[2:]).transpose(1, 2).reshape(h * h, p * p, *t.shape[2:])


def cut_cells(xyz: torch.Tensor, valid: torch.Tensor, patch_size: int) -> CellPatches:
    """The non-empty ``patch_size`` cells of an organized grid as ``(P, n, 3)`` patches.

    Args:
        xyz: ``(G, G, 3)``; valid: ``(G, G) bool``; patch_size: cell side in pixels (divides G).
    """
    n = patch_size**2
    point_id = torch.cumsum(valid.reshape(-1).long(), 0) - 1
    cell_xyz = _by_cell(xyz, patch_size)
    cell_valid = _by_cell(valid, patch_size)
    ids = _by_cell(point_id.view(valid.shape), patch_size)
    counts = cell_valid.sum(dim=1)
    cells = (counts > 0).nonzero().squeeze(1)
    cell_xyz, cell_valid, ids, counts = cell_xyz[cells], cell_valid[cells], ids[cells], counts[cells]
    # valid slots first (stable), then cycle through them to fill the patch.
    order = torch.sort((~cell_valid).to(torch.uint8), dim=1, stable=True).indices
    slots = order.gather(1, torch.arange(n, device=xyz.device)[None] % counts[:, None])
    patches = cell_xyz.gather(1, slots[..., None].expand(-1, -1, 3))
    centers = (cell_xyz * cell_valid[..., None]).sum(1) / counts[:, None].clamp_min(1)
    return CellPatches(patches, centers, counts, cells, ids.gather(1, slots))


def cell_sums(values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(G, G)`` per-pixel values → ``(h * h,)`` per-cell sums (flat cell index = row * h + col)."""
    return _by_cell(values, patch_size).sum(dim=1)


def fit_patch_size(points: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(k, 3)`` → ``(size, 3)``: a random subset when ``k > size``, cycled repetition when ``k < size``."""
    k = points.shape[0]
    if k >= size:
        if k == size:
            return points
        return points[torch.randperm(k, generator=generator)[:size].to(points.device)]
    return points[torch.arange(size, device=points.device) % k]


__all__ = ["CellPatches", "OrganizedCloud", "cell_sums", "cut_cells", "fit_patch_size"]
