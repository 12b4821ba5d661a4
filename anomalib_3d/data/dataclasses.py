"""Point-cloud items and batches in anomalib's dataclass system.

``PointCloudItem`` / ``PointCloudBatch`` follow anomalib's ``DepthItem`` / ``DepthBatch``: generic
field declarations (:class:`_PointCloudInputFields`) + validators (:class:`PointCloudValidator`,
:class:`PointCloudBatchValidator`) + anomalib's torch ``DatasetItem`` / ``Batch`` (which bring
``gt_label``, ``gt_mask``, ``anomaly_map``, ``pred_score``, ``pred_label``, ``pred_mask``...).
So anomalib's Engine, PostProcessor, Evaluator and callbacks work on them unchanged.

Conventions (per point ⇒ aligned with ``points``):

================  ======================  =====================================================
field             item                    batch
================  ======================  =====================================================
points            (N, 3) float            (ΣN, 3) float, clouds concatenated
batch_index       —                       (ΣN,) long, cloud of each point (PyG ``batch``)
colors, normals   (N, 3) float | None     (ΣN, 3) float | None
gt_mask           (N,) bool | None        (ΣN,) bool | None — per-point ground truth
anomaly_map       (N,) float | None       (ΣN,) float | None — per-point scores
pred_mask         (N,) bool | None        (ΣN,) bool | None
gt_label          () bool                 (B,) bool
pred_score        () float                (B,) float
image             (3, H, W) | None        (B, 3, H, W) | None — RGB of organized sources
grid_shape        (2,) long | None        (B, 2) long | None — (H, W) of the organized grid
grid_index        (N,) long | None        (ΣN,) long | None — flat pixel ``row * W + col``
pixel_gt_mask     (H, W) bool | None      (B, H, W) bool | None — full-resolution 2D GT
category, paths   str | None              list[str] | None
================  ======================  =====================================================

``grid_index`` + ``grid_shape`` make organized clouds exact: point scores scatter back to the
very pixels they came from (:func:`anomalib_3d.data.adapters.points_to_pixel_map`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

import torch
from anomalib.data.dataclasses.generic import FieldDescriptor
from anomalib.data.dataclasses.torch.base import Batch, DatasetItem
from torchvision.tv_tensors import Image

from anomalib_3d.data.errors import GroundTruthMismatchError, InvalidPointsError, EmptyPointCloudError
from anomalib_3d.data import ragged
from anomalib_3d.data.ragged import as_tensor as _as_tensor

T = TypeVar("T")
PathT = TypeVar("PathT")

# Fields whose first dimension runs over points (split / concatenated along points).
PER_POINT_FIELDS = ("points", "colors", "normals", "gt_mask", "anomaly_map", "pred_mask", "grid_index")
# Fields whose first dimension runs over clouds.
PER_CLOUD_TENSOR_FIELDS = ("gt_label", "pred_score", "pred_label", "image", "grid_shape", "pixel_gt_mask")
#: Fields a batch may drop when only some clouds have them (logged once, naming the files).
OPTIONAL_APPEARANCE_FIELDS = ("colors", "normals", "image")
PER_CLOUD_LIST_FIELDS = ("category", "point_path", "image_path", "mask_path", "explanation")


@dataclass
class _PointCloudInputFields(Generic[T, PathT], ABC):
    """Generic point-cloud input fields (see the module docstring for shapes)."""

    points: FieldDescriptor[T | None] = FieldDescriptor(validator_name="validate_points")
    colors: FieldDescriptor[T | None] = FieldDescriptor(validator_name="validate_colors")
    normals: FieldDescriptor[T | None] = FieldDescriptor(validator_name="validate_normals")
    grid_shape: FieldDescriptor[T | None] = FieldDescriptor(validator_name="validate_grid_shape")
    grid_index: FieldDescriptor[T | None] = FieldDescriptor(validator_name="validate_grid_index")
    pixel_gt_mask: FieldDescriptor[T | None] = FieldDescriptor(validator_name="validate_pixel_gt_mask")
    category: FieldDescriptor[PathT | None] = FieldDescriptor(validator_name="validate_category")
    point_path: FieldDescriptor[PathT | None] = FieldDescriptor(validator_name="validate_point_path")
    image_path: FieldDescriptor[PathT | None] = FieldDescriptor(validator_name="validate_image_path")

    @staticmethod
    @abstractmethod
    def validate_points(points: T) -> T:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_colors(colors: T | None) -> T | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_normals(normals: T | None) -> T | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_grid_shape(grid_shape: T | None) -> T | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_grid_index(grid_index: T | None) -> T | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_pixel_gt_mask(mask: T | None) -> T | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_category(category: PathT | None) -> PathT | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_point_path(path: PathT | None) -> PathT | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_image_path(path: PathT | None) -> PathT | None:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# validators
# --------------------------------------------------------------------------------------------
def _check_points(points: object) -> torch.Tensor:
    if points is None:
        raise EmptyPointCloudError("points is required for a point-cloud item.", fix="pass points=(N, 3) tensor")
    points = _as_tensor(points, "points")
    if points.ndim != 2 or points.shape[1] != 3:
        raise InvalidPointsError(
            f"points must have shape (N, 3), got {tuple(points.shape)}.",
            fix="reshape the array to one xyz row per point",
        )
    if points.shape[0] == 0:
        raise EmptyPointCloudError("the point cloud has no points.", fix="check the source file / preprocessing")
    if not points.is_floating_point():
        points = points.float()
    bad = ~torch.isfinite(points).all(dim=1)
    if bad.any():
        raise InvalidPointsError(
            f"{int(bad.sum())} of {points.shape[0]} points have NaN/inf coordinates.",
            fix="remove or repair invalid points before building the item",
        )
    return points


def _check_per_point_3(value: object, name: str) -> torch.Tensor | None:
    if value is None:
        return None
    value = _as_tensor(value, name).float()
    if value.ndim != 2 or value.shape[1] != 3:
        raise InvalidPointsError(f"{name} must have shape (N, 3), got {tuple(value.shape)}.")
    return value


def _check_per_point_scalar(value: object, name: str, dtype: torch.dtype | None) -> torch.Tensor | None:
    if value is None:
        return None
    value = _as_tensor(value, name)
    if value.ndim != 1:
        raise GroundTruthMismatchError(
            f"{name} must be per point with shape (N,), got {tuple(value.shape)}.",
            fix="for organized sources map the 2D mask to points through grid_index",
        )
    return value.to(dtype) if dtype is not None else value


def _check_str(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        msg = f"{name} must be a string, got {type(value).__name__}."
        raise TypeError(msg)
    return value


def _check_str_list(value: object, name: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence):
        msg = f"{name} must be a list of strings, got {type(value).__name__}."
        raise TypeError(msg)
    return [str(v) for v in value]


def text_validator(name: str, batched: bool) -> staticmethod:
    """Validator of a text field: a string per item, a list of strings (one per group) per batch."""
    check = _check_str_list if batched else _check_str

    def validate(value: str | list[str] | None) -> str | list[str] | None:
        return check(value, name)

    return staticmethod(validate)


class _SharedPointValidators(ragged.PassThroughValidators):
    """Validators identical for items and batches (everything indexed by point)."""

    @staticmethod
    def validate_points(points: torch.Tensor) -> torch.Tensor:
        return _check_points(points)

    @staticmethod
    def validate_colors(colors: torch.Tensor | None) -> torch.Tensor | None:
        return _check_per_point_3(colors, "colors")

    @staticmethod
    def validate_normals(normals: torch.Tensor | None) -> torch.Tensor | None:
        return _check_per_point_3(normals, "normals")

    @staticmethod
    def validate_grid_index(grid_index: torch.Tensor | None) -> torch.Tensor | None:
        return _check_per_point_scalar(grid_index, "grid_index", torch.long)

    @staticmethod
    def validate_gt_mask(gt_mask: torch.Tensor | None) -> torch.Tensor | None:
        return _check_per_point_scalar(gt_mask, "gt_mask", torch.bool)

    @staticmethod
    def validate_anomaly_map(anomaly_map: torch.Tensor | None) -> torch.Tensor | None:
        if anomaly_map is None:
            return None
        anomaly_map = _check_per_point_scalar(anomaly_map, "anomaly_map", None)
        return anomaly_map.float() if not anomaly_map.is_floating_point() else anomaly_map

    @staticmethod
    def validate_pred_mask(pred_mask: torch.Tensor | None) -> torch.Tensor | None:
        return _check_per_point_scalar(pred_mask, "pred_mask", torch.bool)


def _lead_validators(batched: bool) -> type[_SharedPointValidators]:
    """Validators whose item and batch versions differ only by the leading ``B`` of the shapes.

    Args:
        batched: ``False``: shapes of an item (``image (3, H, W)``, ``gt_label ()``, ...);
            ``True``: of a batch (``(B, 3, H, W)``, ``(B,)``, ...).

    Returns:
        A validator class (a base of :class:`PointCloudValidator` / :class:`PointCloudBatchValidator`).
    """
    lead = 1 if batched else 0
    prefix = "batched " if batched else ""

    def validate_image(image: torch.Tensor | None) -> Image | None:
        if image is None:
            return None
        image = _as_tensor(image, "image")
        if image.ndim != lead + 3 or image.shape[lead] != 3:
            want = "must be (B, 3, H, W)" if batched else "must be an RGB tensor of shape (3, H, W)"
            msg = f"{prefix}image {want}, got {tuple(image.shape)}."
            raise ValueError(msg)
        return Image(image.float() if not image.is_floating_point() else image)

    def validate_gt_label(gt_label: int | torch.Tensor | Sequence[int] | None) -> torch.Tensor | None:
        if gt_label is None:
            return None
        gt_label = torch.as_tensor(gt_label)
        if gt_label.ndim != lead:
            want = "must be (B,), got" if batched else "of an item must be a scalar, got shape"
            msg = f"{prefix}gt_label {want} {tuple(gt_label.shape)}."
            raise ValueError(msg)
        return gt_label.bool()

    def validate_grid_shape(grid_shape: torch.Tensor | None) -> torch.Tensor | None:
        if grid_shape is None:
            return None
        grid_shape = torch.as_tensor(grid_shape, dtype=torch.long)
        if grid_shape.ndim != lead + 1 or grid_shape.shape[-1] != 2:
            msg = f"{prefix}grid_shape must be {'(B, 2)' if batched else '(H, W)'}, got {tuple(grid_shape.shape)}."
            raise ValueError(msg)
        return grid_shape

    def validate_pixel_gt_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
        if mask is None:
            return None
        mask = _as_tensor(mask, "pixel_gt_mask")
        if not batched and mask.ndim == 3 and mask.shape[0] == 1:
            mask = mask[0]  # an item's (1, H, W) mask image
        if mask.ndim != lead + 2:
            msg = f"{prefix}pixel_gt_mask must be {'(B, H, W)' if batched else '(H, W)'}, got {tuple(mask.shape)}."
            raise ValueError(msg)
        return mask.bool()

    methods = {
        "validate_image": staticmethod(validate_image),
        "validate_gt_label": staticmethod(validate_gt_label),
        "validate_grid_shape": staticmethod(validate_grid_shape),
        "validate_pixel_gt_mask": staticmethod(validate_pixel_gt_mask),
        "validate_category": text_validator("category", batched),
        "validate_point_path": text_validator("point_path", batched),
        "validate_image_path": text_validator("image_path", batched),
    }
    name = "_BatchLeadValidators" if batched else "_ItemLeadValidators"
    return type(name, (_SharedPointValidators,), {"__module__": __name__, **methods})


class PointCloudValidator(_lead_validators(batched=False)):
    """Validators of a single :class:`PointCloudItem`."""

    @staticmethod
    def validate_pred_score(pred_score: float | torch.Tensor | None) -> torch.Tensor | None:
        return None if pred_score is None else torch.as_tensor(pred_score, dtype=torch.float32).reshape(())

    @staticmethod
    def validate_pred_label(pred_label: torch.Tensor | None) -> torch.Tensor | None:
        return None if pred_label is None else torch.as_tensor(pred_label).bool().reshape(())


class PointCloudBatchValidator(_lead_validators(batched=True)):
    """Validators of a :class:`PointCloudBatch`."""

    @staticmethod
    def validate_batch_index(batch_index: torch.Tensor | None) -> torch.Tensor | None:
        return ragged.check_group_index(
            batch_index, "batch_index", "ΣN", "(points of one cloud contiguous), as torch-cluster expects."
        )

    @staticmethod
    def validate_pred_score(pred_score: torch.Tensor | None) -> torch.Tensor | None:
        if pred_score is None:
            return None
        pred_score = torch.as_tensor(pred_score)
        return pred_score.float().reshape(-1) if not pred_score.is_floating_point() else pred_score.reshape(-1)

    @staticmethod
    def validate_pred_label(pred_label: torch.Tensor | None) -> torch.Tensor | None:
        return None if pred_label is None else torch.as_tensor(pred_label).bool().reshape(-1)

    @staticmethod
    def validate_mask_path(mask_path: list[str] | None) -> list[str] | None:
        return _check_str_list(mask_path, "mask_path")


def _check_alignment(obj: object, num_points: int, where: str) -> None:
    """Every per-point field must have exactly one row per point."""
    for name in PER_POINT_FIELDS[1:]:
        value = getattr(obj, name, None)
        if value is not None and value.shape[0] != num_points:
            path = getattr(obj, "point_path", None)
            raise GroundTruthMismatchError(
                f"{name} has {value.shape[0]} rows but the {where} has {num_points} points.",
                path=path if isinstance(path, str) else None,
                fix=f"give {name} exactly one entry per point, in the same order as the points",
            )


# --------------------------------------------------------------------------------------------
# item and batch
# --------------------------------------------------------------------------------------------
@dataclass
class PointCloudItem(PointCloudValidator, _PointCloudInputFields[torch.Tensor, str], DatasetItem[Image]):
    """One point cloud with its ground truth and (after the model) its predictions.

    Example:
        >>> item = PointCloudItem(points=torch.rand(100, 3), gt_label=0, gt_mask=torch.zeros(100))
        >>> item.num_points
        100
    """

    # RGB is optional for point clouds (anomalib's DatasetItem requires it).
    image: FieldDescriptor[torch.Tensor | None] = FieldDescriptor(validator_name="validate_image", default=None)

    def __post_init__(self) -> None:
        _check_alignment(self, self.points.shape[0], "cloud")

    @property
    def num_points(self) -> int:
        """Number of points N."""
        return int(self.points.shape[0])


@dataclass
class PointCloudBatch(
    ragged.RaggedBatchMixin,
    PointCloudBatchValidator,
    _PointCloudInputFields[torch.Tensor, list[str]],
    Batch[Image],
):
    """A batch of ragged point clouds, concatenated along points with a ``batch_index`` vector.

    Build one with :meth:`collate`; iterate it to get :class:`PointCloudItem` back; call
    :meth:`pad` for a dense ``(B, N_max, 3)`` view.
    """

    item_class: ClassVar[type[PointCloudItem]] = PointCloudItem

    image: FieldDescriptor[torch.Tensor | None] = FieldDescriptor(validator_name="validate_image", default=None)
    batch_index: FieldDescriptor[torch.Tensor | None] = FieldDescriptor(validator_name="validate_batch_index")

    def __post_init__(self) -> None:
        if self.batch_index is None:
            self.batch_index = torch.zeros(self.points.shape[0], dtype=torch.long, device=self.points.device)
        if self.batch_index.shape[0] != self.points.shape[0]:
            raise GroundTruthMismatchError(
                f"batch_index has {self.batch_index.shape[0]} entries for {self.points.shape[0]} points.",
            )
        _check_alignment(self, self.points.shape[0], "batch")

    # -- sizes ------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """Number of clouds B (anomalib's ``len(batch)``)."""
        if self.gt_label is not None:
            return int(self.gt_label.shape[0])
        if self.batch_index.numel() == 0:
            return 0
        return int(self.batch_index[-1].item()) + 1

    @property
    def num_points(self) -> torch.Tensor:
        """(B,) long: points per cloud."""
        return torch.bincount(self.batch_index, minlength=self.batch_size)

    @property
    def ptr(self) -> torch.Tensor:
        """(B + 1,) long: cloud ``b`` is ``points[ptr[b]:ptr[b + 1]]`` (PyG ``ptr``)."""
        return ragged.group_ptr(self.num_points)

    # -- ragged <-> items -------------------------------------------------------------------
    @property
    def items(self) -> list[PointCloudItem]:
        """Split the batch back into one :class:`PointCloudItem` per cloud."""
        return self._split_items(
            PointCloudItem, self.ptr, ragged=PER_POINT_FIELDS, dense=PER_CLOUD_TENSOR_FIELDS, text=PER_CLOUD_LIST_FIELDS
        )

    @classmethod
    def collate(cls, items: list[PointCloudItem]) -> PointCloudBatch:
        """Concatenate items into one batch (the DataLoader ``collate_fn``).

        A tensor field is kept only if every item has it. An optional appearance field
        (``colors``, ``normals``, ``image``) present in some items only is dropped for the whole
        batch with one warning naming the files without it; any other field present in some
        items only raises a :class:`~anomalib_3d.data.errors.PointCloudError` naming them. Path/category fields may be missing for some
        clouds (a good sample has no GT file): they collate to ``""``.
        """
        if not items:
            msg = "cannot collate an empty list of point-cloud items."
            raise ValueError(msg)
        kwargs: dict[str, object] = {}
        for name in (*PER_POINT_FIELDS, *PER_CLOUD_TENSOR_FIELDS, *PER_CLOUD_LIST_FIELDS):
            values = [getattr(item, name) for item in items]
            present = [v is not None for v in values]
            if not any(present):
                continue
            if name in PER_CLOUD_LIST_FIELDS:
                # Paths are legitimately absent for some clouds (a good sample has no GT file).
                kwargs[name] = ragged.collate_text(values)
                continue
            if not all(present):
                missing = [getattr(it, "point_path", None) or f"item {i}" for i, (it, p) in
                           enumerate(zip(items, present, strict=True)) if not p]
                if name in OPTIONAL_APPEARANCE_FIELDS:
                    # Deliberate: colours / normals / images are optional inputs, so a batch that
                    # mixes clouds with and without them keeps the common part (the points) and
                    # says which files lack them, once per field.
                    _warn_dropped(name, missing, len(items))
                    continue
                from anomalib_3d.data.errors import PointCloudError

                raise PointCloudError(
                    f"field '{name}' is set for some clouds of the batch but missing for "
                    f"{len(missing)} of {len(items)}: {missing[:5]}.",
                    fix="give every item of a batch the same fields (a model output is set for all or none).",
                )
            if name in PER_POINT_FIELDS:
                kwargs[name] = torch.cat([torch.as_tensor(v) for v in values])
            else:
                tensors = [torch.as_tensor(v) for v in values]
                shapes = {tuple(t.shape) for t in tensors}
                if len(shapes) > 1:
                    from anomalib_3d.data.errors import PointCloudError

                    sizes = [f"{getattr(it, 'point_path', None) or f'item {i}'}: {tuple(t.shape)}"
                             for i, (it, t) in enumerate(zip(items, tensors, strict=True))]
                    raise PointCloudError(
                        f"field '{name}' has different shapes across the batch ({'; '.join(sizes[:5])}).",
                        fix="resize organized inputs to one size in the datamodule (grid_size=(H, W): nearest, "
                            "so no points are invented), or use batch size 1.",
                    )
                kwargs[name] = torch.stack(tensors)
        device = items[0].points.device
        counts = torch.tensor([item.num_points for item in items], device=device)
        kwargs["batch_index"] = torch.repeat_interleave(torch.arange(len(items), device=device), counts)
        return cls(**kwargs)

    def pad(self, max_points: int | None = None, fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense view of the points.

        Args:
            max_points: pad/truncation length; default the largest cloud. A smaller value raises
                (truncating would drop points silently).
            fill: value of padded coordinates.

        Returns:
            ``(points (B, N_max, 3), valid (B, N_max) bool)``.
        """
        max_points = ragged.pad_length(self.num_points, max_points, "max_points", "cloud", "points")
        offsets = ragged.group_slots(self.batch_index, self.ptr, self.points.device)
        dense = self.points.new_full((self.batch_size, max_points, 3), fill)
        dense[self.batch_index, offsets] = self.points
        valid = torch.zeros(self.batch_size, max_points, dtype=torch.bool, device=self.points.device)
        valid[self.batch_index, offsets] = True
        return dense, valid


_WARNED_DROPPED: set[str] = set()


def _warn_dropped(name: str, missing: list[str], batch_size: int) -> None:
    """Warn the first time a field is dropped (later batches log at INFO: no flood per epoch)."""
    import logging

    level = logging.INFO if name in _WARNED_DROPPED else logging.WARNING
    _WARNED_DROPPED.add(name)
    logging.getLogger(__name__).log(
        level,
        "collate: %d of %d clouds have no '%s' (%s%s); '%s' is dropped for this whole batch.",
        len(missing), batch_size, name, ", ".join(missing[:5]), ", ..." if len(missing) > 5 else "", name,
    )


__all__ = ["OPTIONAL_APPEARANCE_FIELDS", "PointCloudBatch", "PointCloudBatchValidator", "PointCloudItem", "PointCloudValidator"]
