"""Helpers shared by the ragged batch dataclasses (:mod:`anomalib_3d.data.dataclasses` and
:mod:`anomalib_3d.data.scenes.dataclasses`).

Both batches concatenate variable-length groups along their first dimension (the points of the
clouds, the objects of the scenes) and say which group each row belongs to with a sorted *group
index* vector (PyG's ``batch``): ``index (ΣN,)`` long, ``index[i] = b`` for every row ``i`` of group
``b``. From it come the group sizes ``counts (B,)``, the offsets ``ptr (B + 1,)`` (group ``b`` is
``rows[ptr[b]:ptr[b + 1]]``) and each row's slot inside its group (for dense padding).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import fields
from typing import Any

import torch


def as_tensor(value: object, name: str) -> torch.Tensor:
    """``value`` as a plain :class:`torch.Tensor` (tensor subclasses such as tv_tensors unwrapped).

    Raises:
        TypeError: ``value`` is neither a tensor nor array-like (the message names ``name``).
    """
    if isinstance(value, torch.Tensor):
        return value.as_subclass(torch.Tensor) if type(value) is not torch.Tensor else value
    try:
        return torch.as_tensor(value)
    except Exception as exc:
        msg = f"{name} must be a tensor or array-like, got {type(value).__name__}."
        raise TypeError(msg) from exc


def check_group_index(
    value: object,
    name: str,
    rows: str,
    unsorted: str,
    error: type[Exception] = ValueError,
) -> torch.Tensor | None:
    """Validate a group index vector: ``(ΣN,)`` long, sorted (each group's rows contiguous).

    Args:
        value: the vector (``None`` passes through).
        name: field name, for messages.
        rows: the size symbol in the shape message (``"ΣN"``: ``"{name} must be (ΣN,), ..."``).
        unsorted: the end of the "must be sorted" message, after ``"{name} must be sorted "``.
        error: exception class raised (each dataclass family keeps its own).

    Returns:
        ``(ΣN,)`` long, or ``None``.
    """
    if value is None:
        return None
    index = as_tensor(value, name).long()
    if index.ndim != 1:
        raise error(f"{name} must be ({rows},), got {tuple(index.shape)}.")
    # torch-cluster / scatter ops assume one contiguous run per group.
    if index.numel() > 1 and bool((index[1:] < index[:-1]).any()):
        raise error(f"{name} must be sorted {unsorted}")
    return index


def group_ptr(counts: torch.Tensor) -> torch.Tensor:
    """``(B,)`` group sizes → ``(B + 1,)`` offsets: group ``b`` owns rows ``ptr[b]:ptr[b + 1]`` (PyG ``ptr``)."""
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def pad_length(counts: torch.Tensor, requested: int | None, arg: str, group: str, unit: str) -> int:
    """Dense length of a padded view: ``requested`` or, by default, the largest group.

    Args:
        counts: ``(B,)`` rows per group.
        requested: the caller's length (``None``: the largest group).
        arg, group, unit: words of the error message (``max_points``, ``cloud``, ``points``).

    Raises:
        ValueError: ``requested`` is below the largest group (truncating would drop rows silently).
    """
    largest = int(counts.max()) if counts.numel() else 0
    if requested is None:
        return largest
    if requested < largest:
        msg = f"{arg}={requested} is smaller than the largest {group} ({largest} {unit})."
        raise ValueError(msg)
    return requested


def group_slots(index: torch.Tensor, ptr: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``(ΣN,)`` long: position of every row inside its group (``index``: ``(ΣN,)``, ``ptr``: ``(B + 1,)``)."""
    return torch.arange(index.shape[0], device=device) - ptr[:-1][index]


def collate_text(values: Sequence[str | None]) -> list[str]:
    """Per-group strings of a batch; a group without one gets ``""`` (e.g. a good sample's mask path)."""
    return ["" if v is None else v for v in values]


class PassThroughValidators:
    """Validators of anomalib's free-form fields (``mask_path``, ``explanation``): kept as given."""

    @staticmethod
    def validate_mask_path(mask_path: object) -> object:
        return mask_path

    @staticmethod
    def validate_explanation(explanation: object) -> object:
        return explanation


class RaggedBatchMixin:
    """``len``, iteration and ``keys`` of a batch dataclass.

    The batch class defines ``batch_size`` and ``items`` (its split into items); list this mixin
    before anomalib's ``Batch`` so these take precedence over anomalib's own.
    """

    def __len__(self) -> int:
        return self.batch_size  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[Any]:
        yield from self.items  # type: ignore[attr-defined]

    def _split_items(
        self,
        item_class: type,
        ptr: torch.Tensor,
        ragged: Sequence[str],
        dense: Sequence[str],
        text: Sequence[str],
    ) -> list[Any]:
        """One ``item_class`` per group: ``ragged`` fields sliced ``ptr[b]:ptr[b + 1]`` (rows of
        group ``b``), ``dense`` fields indexed ``[b]``, ``text`` fields picked (``""`` → ``None``).

        Args:
            item_class: the item dataclass (passed explicitly so a batch subclass that overrides
                ``item_class`` does not change what its parent's ``items`` returns).
            ptr: ``(B + 1,)`` group offsets (:func:`group_ptr`).
        """
        bounds = ptr.tolist()
        out = []
        for b in range(self.batch_size):  # type: ignore[attr-defined]
            kwargs: dict[str, Any] = {}
            rows = slice(bounds[b], bounds[b + 1])
            for name in ragged:
                value = getattr(self, name)
                kwargs[name] = None if value is None else value[rows]
            for name in dense:
                value = getattr(self, name)
                kwargs[name] = None if value is None else value[b]
            for name in text:  # "" is collate's placeholder for a missing string
                value = getattr(self, name)
                kwargs[name] = None if value is None or value[b] == "" else value[b]
            out.append(item_class(**kwargs))
        return out

    def keys(self, include_none: bool = True) -> list[str]:
        """Field names (only those that are set with ``include_none=False``)."""
        names = [f.name for f in fields(self)]  # type: ignore[arg-type]
        return names if include_none else [n for n in names if getattr(self, n) is not None]


__all__ = [
    "PassThroughValidators",
    "RaggedBatchMixin",
    "as_tensor",
    "check_group_index",
    "collate_text",
    "group_ptr",
    "group_slots",
    "pad_length",
]
