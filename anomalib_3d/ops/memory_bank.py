"""Memory banks of normal features: greedy coreset subsampling and exact nearest-neighbour scoring.

One implementation for every model that scores a test feature by its distance to the nearest
training feature (BTF, PatchCore3D, Reg3DAD's feature bank, 3DzAL, IMRNet's template): PatchCore's
greedy k-center coreset on a seeded random projection, a bank that lives in a buffer (so
checkpoints carry it) and is gathered over DDP ranks before subsampling, chunked exact kNN
queries, and PatchCore's neighbourhood re-weighting of the object score.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from anomalib_3d.distributed import all_gather_cat
from anomalib_3d.ops.neighbors import knn

__all__ = ["MemoryBank", "canonical_order", "greedy_coreset", "nearest_neighbors", "reweighted_max"]

# Distance-matrix entries held at once by a query; bounds peak memory to ~64 MiB of float32.
_QUERY_BUDGET = 1 << 24
# Up to this width (raw coordinates, small descriptors) the exact kd-tree search of
# anomalib_3d.ops.knn beats the brute-force distance matrix by an order of magnitude.
_KNN_MAX_DIM = 8


def _random_projection(features: torch.Tensor, projection_dim: int, seed: int) -> torch.Tensor:
    """Seeded Gaussian random projection ``(M, D) -> (M, projection_dim)`` (Johnson-Lindenstrauss)."""
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(features.shape[1], projection_dim, generator=generator, dtype=torch.float64)
    matrix = (matrix / math.sqrt(projection_dim)).to(device=features.device, dtype=features.dtype)
    return features @ matrix


def greedy_coreset(
    features: torch.Tensor,
    num_samples: int,
    projection_dim: int | None = 128,
    seed: int = 0,
    *,
    start: int | None = None,
) -> torch.Tensor:
    """Greedy k-center coreset (Sener & Savarese 2018, as used by PatchCore).

    Starting from one seeded random row, repeatedly adds the row farthest (Euclidean) from every
    row chosen so far. The selection runs on a seeded Gaussian random projection to
    ``projection_dim`` dimensions when the features are wider than that (PatchCore's speed-up; the
    coreset is still a subset of the original rows). Deterministic for a given ``seed``, unlike
    anomalib's ``KCenterGreedy`` which draws from the global RNG.

    Each step is computed in one pass over the rows: the squared distance to the new centre ``c``
    is first bounded through ``|x|^2 + |c|^2 - 2 x.c`` (row norms computed once, so the pass is one
    matrix-vector product, memory-bandwidth bound, instead of an ``(M, D)`` difference tensor);
    only the rows that bound cannot rule out (those the new centre may bring closer, a few per
    step once the coreset covers the data) get their distance recomputed as ``|x - c|^2``. The
    selection is therefore exactly that of the plain difference form, row for row. A chosen row
    is never chosen again (exact duplicates of it can be, once nothing else is left).

    Args:
        features: ``(M, D)`` float.
        num_samples: coreset size; ``>= M`` returns every row (``arange(M)``).
        projection_dim: dimension of the random projection, or None to select on the raw features.
        seed: seeds both the projection and the first row.
        start: first row, overriding the seeded choice.

    Returns:
        ``(min(num_samples, M),) long`` row indices in selection order (first = the start row).
    """
    if features.ndim != 2:
        msg = f"features must be (M, D), got shape {tuple(features.shape)}."
        raise ValueError(msg)
    if num_samples < 1:
        msg = f"num_samples must be >= 1, got {num_samples}."
        raise ValueError(msg)
    num_rows = features.shape[0]
    if num_samples >= num_rows:
        return torch.arange(num_rows, device=features.device)
    work = features.detach()
    if not work.is_floating_point():
        work = work.float()
    if projection_dim is not None and work.shape[1] > projection_dim:
        work = _random_projection(work, projection_dim, seed)
    if start is None:
        start = int(torch.randint(num_rows, (1,), generator=torch.Generator().manual_seed(seed)))
    work = work.contiguous()
    # Centred copy for the bound: the rounding error of the norm expansion grows with |x|^2, and
    # centring makes the norms as small as they can be.
    centred = (work - work.mean(dim=0)).contiguous()
    sq_norms = centred.pow(2).sum(dim=1)
    # Rounding bound of the expansion (and of the exact form it is compared with), relative to
    # |x|^2 + |c|^2 + d: a few dot-product lengths of machine epsilon.
    slack = (2 * work.shape[1] + 8) * torch.finfo(work.dtype).eps
    selected = torch.empty(num_samples, dtype=torch.long, device=features.device)
    selected[0] = start
    min_sq = (work - work[start]).pow(2).sum(dim=1)
    min_sq[start] = -1.0
    bound = torch.empty_like(sq_norms)
    limit = torch.empty_like(sq_norms)
    # One Python iteration per selected row: a stop signal is handled between two steps.
    for step in range(1, num_samples):
        index = _first_argmax(min_sq)
        selected[step] = index
        _update_nearest_centre(work, centred, sq_norms, min_sq, index, slack, bound, limit)
        min_sq[index] = -1.0  # below every unchosen row, so no row is chosen twice
    return selected


def _first_argmax(values: torch.Tensor) -> int:
    """Index of the first maximum of ``values (M,)`` (numpy's on CPU: ~10x faster than torch's)."""
    if values.device.type == "cpu":
        return int(np.argmax(values.numpy()))
    return int(torch.argmax(values))


def _true_rows(mask: torch.Tensor) -> torch.Tensor:
    """``(K,) long`` indices where ``mask (M,) bool`` holds (numpy's on CPU: ~10x faster than torch's)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return torch.nonzero(mask).squeeze(1)


def _update_nearest_centre(
    work: torch.Tensor,
    centred: torch.Tensor,
    sq_norms: torch.Tensor,
    min_sq: torch.Tensor,
    index: int,
    slack: float,
    bound: torch.Tensor,
    limit: torch.Tensor,
) -> None:
    """``min_sq = min(min_sq, |work - work[index]|^2)`` in place, the distance recomputed exactly
    only where the norm-expansion estimate leaves the minimum in doubt.

    Args:
        work: ``(M, D)`` rows; centred: the same rows minus their mean; sq_norms: ``(M,)`` squared
            norms of ``centred``; min_sq: ``(M,)`` squared distance to the nearest centre so far;
            index: the new centre's row; slack: relative rounding bound of the estimate;
            bound, limit: ``(M,)`` scratch.
    """
    centre_sq = sq_norms[index]
    torch.mv(centred, centred[index], out=bound)
    bound.mul_(-2.0).add_(sq_norms).add_(centre_sq)  # ~ |x - c|^2
    # A row can get closer only if its estimate, less the rounding bound, is below its minimum.
    torch.add(sq_norms, min_sq, out=limit).add_(centre_sq).mul_(slack).add_(min_sq)
    rows = _true_rows(bound < limit).to(work.device)
    if rows.numel():
        exact = (work[rows] - work[index]).pow(2).sum(dim=1)
        min_sq[rows] = torch.minimum(min_sq[rows], exact)


def nearest_neighbors(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int = 1,
    *,
    budget: int = _QUERY_BUDGET,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest rows of ``bank`` for every query (chunked ``torch.cdist``).

    Features up to 8-D go through :func:`anomalib_3d.ops.knn` (exact kd-tree / torch-cluster
    search). Wider ones: queries and bank are both cut into chunks so at most ``budget`` distances
    exist at once; a running top-k merges the bank chunks. The returned distances are recomputed directly from the
    chosen pairs, so they carry no matrix-multiplication cancellation error.

    Args:
        queries: ``(Q, D)``.
        bank: ``(M, D)`` with ``M >= 1``.
        k: neighbours per query, ``1 <= k <= M``.
        budget: largest distance block held at once.

    Returns:
        ``(distances (Q, k), indices (Q, k) long)``, nearest first.
    """
    if bank.numel() == 0:
        msg = "the memory bank is empty: fit it on training features before querying."
        raise RuntimeError(msg)
    if bank.ndim != 2 or queries.ndim != 2 or queries.shape[1] != bank.shape[1]:
        msg = f"queries (Q, D) and bank (M, D) must agree in D, got {tuple(queries.shape)} and {tuple(bank.shape)}."
        raise ValueError(msg)
    if not 1 <= k <= bank.shape[0]:
        msg = f"k must be in [1, {bank.shape[0]}] (bank size), got {k}."
        raise ValueError(msg)
    queries = queries.to(bank.dtype)
    if bank.shape[1] <= _KNN_MAX_DIM and queries.shape[0] > 0:
        index, sq_dist = knn(bank, queries, k)
        return sq_dist.clamp_min(0).sqrt(), index
    bank_chunk = max(k, min(bank.shape[0], budget))
    query_chunk = max(1, budget // bank_chunk)
    out_index = torch.empty((queries.shape[0], k), dtype=torch.long, device=bank.device)
    for q0 in range(0, queries.shape[0], query_chunk):
        block = queries[q0 : q0 + query_chunk]
        best_d = best_i = None
        for b0 in range(0, bank.shape[0], bank_chunk):
            dist = torch.cdist(block, bank[b0 : b0 + bank_chunk])
            kk = min(k, dist.shape[1])
            d, i = torch.topk(dist, kk, dim=1, largest=False)
            i = i + b0
            if best_d is None:
                best_d, best_i = d, i
            else:
                d = torch.cat([best_d, d], dim=1)
                i = torch.cat([best_i, i], dim=1)
                best_d, order = torch.topk(d, min(k, d.shape[1]), dim=1, largest=False)
                best_i = i.gather(1, order)
        out_index[q0 : q0 + block.shape[0]] = best_i
    distances = (queries.unsqueeze(1) - bank[out_index]).pow(2).sum(-1).sqrt()
    distances, order = torch.sort(distances, dim=1)
    return distances, out_index.gather(1, order)


def reweighted_max(
    scores: torch.Tensor,
    features: torch.Tensor,
    nn_index: torch.Tensor,
    bank: torch.Tensor,
    batch: torch.Tensor | None = None,
    num_neighbors: int = 9,
) -> torch.Tensor:
    """PatchCore's object score: the largest patch score, down-weighted where the bank is dense.

    For each cloud, take its highest-scoring feature ``m*`` (score ``s*``), its nearest bank entry
    and that entry's ``num_neighbors`` nearest bank entries ``N`` (itself first); the score is
    ``(1 - softmax_{n in N}(||m* - n||)[0]) * s*`` (PatchCore Eq. 7).

    Args:
        scores: ``(N,)`` per-feature scores (distance to the nearest bank entry).
        features: ``(N, D)`` the features that produced them.
        nn_index: ``(N,) long`` their nearest bank rows.
        bank: ``(M, D)``.
        batch: ``(N,) long`` sorted cloud ids, or None (one cloud).
        num_neighbors: support size; 1 returns the plain maximum.

    Returns:
        ``(B,)`` object scores.
    """
    if batch is None:
        batch = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    num_clouds = int(batch.max()) + 1 if batch.numel() else 0
    maxima = scores.new_full((num_clouds,), -torch.inf).scatter_reduce(0, batch, scores, "amax")
    if num_neighbors <= 1 or num_clouds == 0:
        return maxima
    # argmax per cloud: the first feature whose score equals its cloud's maximum.
    is_max = scores == maxima[batch]
    positions = torch.arange(scores.shape[0], device=scores.device)
    first = torch.full((num_clouds,), scores.shape[0], dtype=torch.long, device=scores.device)
    first = first.scatter_reduce(0, batch[is_max], positions[is_max], "amin")
    top_features = features[first].to(bank.dtype)
    nn_rows = bank[nn_index[first]]
    _, support = nearest_neighbors(nn_rows, bank, k=min(num_neighbors, bank.shape[0]))
    distances = (top_features.unsqueeze(1) - bank[support]).pow(2).sum(-1).sqrt()
    weights = 1 - torch.softmax(distances, dim=1)[:, 0]
    return weights.to(scores.dtype) * maxima


def canonical_order(rows: torch.Tensor) -> torch.Tensor:
    """A permutation that sorts ``rows (M, D)`` lexicographically (first column first).

    The same set of rows gives the same order whatever order it came in, so results built from it
    (a greedy coreset, say) do not depend on data-loader shuffling or on DDP rank shards.

    Returns:
        ``(M,) long`` indices into ``rows``.
    """
    if rows.shape[0] <= 1:
        return torch.arange(rows.shape[0], device=rows.device)
    keys = rows.detach().cpu().double().numpy()
    order = np.lexsort(keys.T[::-1])
    return torch.as_tensor(order, dtype=torch.long, device=rows.device)


class MemoryBank(nn.Module):
    """A bank of normal features with coreset subsampling and exact kNN queries.

    The bank is the buffer ``bank`` (``(M', D)``), so it travels in ``state_dict`` and checkpoints;
    loading a checkpoint resizes it to the stored shape.

    Args:
        coreset_ratio: fraction of the (gathered) training features kept by greedy coreset;
            ``>= 1`` keeps all.
        projection_dim: random-projection width used by the coreset selection (None: raw).
        seed: seeds the coreset selection.

    Example:
        >>> bank = MemoryBank(coreset_ratio=0.5)
        >>> bank.fit(torch.randn(100, 8))
        >>> distances, indices = bank.query(torch.randn(5, 8), k=3)
        >>> tuple(distances.shape), tuple(bank.bank.shape)
        ((5, 3), (50, 8))
    """

    bank: torch.Tensor

    def __init__(self, coreset_ratio: float = 0.1, projection_dim: int | None = 128, seed: int = 0) -> None:
        super().__init__()
        if not coreset_ratio > 0:
            msg = f"coreset_ratio must be positive, got {coreset_ratio!r}."
            raise ValueError(msg)
        self.coreset_ratio = float(coreset_ratio)
        self.projection_dim = projection_dim
        self.seed = int(seed)
        self.register_buffer("bank", torch.empty(0, 0))

    @property
    def is_fitted(self) -> bool:
        """Whether the bank holds any feature."""
        return self.bank.shape[0] > 0

    def fit(self, features: torch.Tensor) -> None:
        """Gather ``features (M, D)`` over ranks, subsample by greedy coreset and store them."""
        features = all_gather_cat(features.detach())
        if features.ndim != 2 or features.shape[0] == 0:
            msg = f"MemoryBank.fit needs (M >= 1, D) features, got shape {tuple(features.shape)}."
            raise ValueError(msg)
        # The greedy coreset depends on row order, which depends on how the training loader
        # shuffled and on how ranks split it: put the rows in an order set by their content.
        features = features[canonical_order(features)]
        if self.coreset_ratio >= 1:
            self.bank = features.clone()
            return
        num_samples = max(1, math.ceil(self.coreset_ratio * features.shape[0] - 1e-9))
        index = greedy_coreset(features, num_samples, self.projection_dim, self.seed)
        self.bank = features[index].clone()

    def query(self, features: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact ``k`` nearest bank entries of ``features (Q, D)``: ``(distances (Q, k), indices (Q, k))``."""
        return nearest_neighbors(features, self.bank, k)

    def object_score(
        self,
        scores: torch.Tensor,
        features: torch.Tensor,
        nn_index: torch.Tensor,
        batch: torch.Tensor | None = None,
        num_neighbors: int = 9,
    ) -> torch.Tensor:
        """PatchCore's re-weighted maximum per cloud; see :func:`reweighted_max`. Returns ``(B,)``."""
        return reweighted_max(scores, features, nn_index, self.bank, batch, num_neighbors)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        # The bank's size is only known after fitting: take the stored shape before copying.
        stored = state_dict.get(prefix + "bank")
        if stored is not None and stored.shape != self.bank.shape:
            self.bank = torch.empty_like(stored, device=self.bank.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
