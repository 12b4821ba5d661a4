"""Gathering what a model accumulates in training across distributed ranks.

Memory banks, template banks and score statistics are built from the training batches each rank
sees; under DDP every rank sees only its shard, so they are gathered before use. Every function is
the identity when ``torch.distributed`` is not initialised (or has one rank).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Number of ranks, 1 when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` along dim 0 over all ranks, in rank order.

    Ranks may hold different numbers of rows (ragged shards): rows are padded to the largest count
    for the collective and the padding is dropped again.

    Args:
        tensor: (M_r, ...) rows on rank r; trailing shape and dtype equal on every rank.

    Returns:
        (Σ_r M_r, ...) the rows of rank 0, then rank 1, ...; ``tensor`` itself when not distributed.
    """
    size = world_size()
    if size == 1:
        return tensor
    tensor = tensor.contiguous()
    count = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    counts = [torch.zeros_like(count) for _ in range(size)]
    dist.all_gather(counts, count)
    longest = int(max(int(c) for c in counts))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(gathered, padded)
    return torch.cat([part[: int(c)] for part, c in zip(gathered, counts, strict=True)], dim=0)


__all__ = ["all_gather_cat", "world_size"]
