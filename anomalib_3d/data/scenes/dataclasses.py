"""Multi-view scenes in anomalib's dataclass system: :class:`SceneItem` and :class:`SceneBatch`.

A scene is ``V`` calibrated views of ``K`` objects (several instances of one object class, some
of them anomalous). Built like :mod:`anomalib_3d.data.dataclasses`: generic field declarations
(:class:`_SceneInputFields`) + validators + anomalib's torch ``DatasetItem`` / ``Batch`` (which
bring ``gt_label``, ``gt_mask``, ``anomaly_map``, ``pred_score``, ``pred_label``, ``pred_mask``),
so anomalib's Engine, PostProcessor and Evaluator see the usual fields. Scene-level fields
(``gt_label``, ``pred_score``) are per scene; per-view fields are ``(V, ...)``.

Camera and pixel conventions are those of :mod:`anomalib_3d.render.volume`: world metres, z up;
``world_to_camera`` is OpenCV (x right, y down, z forward); pixel ``(u, v)`` covers
``[u, u + 1) x [v, v + 1)``.

================  ==========================  ===============================================
field             item                        batch
================  ==========================  ===============================================
image             (V, 3, H, W) float [0, 1]   (B, V, 3, H, W)
depth             (V, H, W) float | None      (B, V, H, W) — camera depth, metres, 0 = no surface
silhouette        (V, H, W) bool | None       (B, V, H, W) — pixels of any object (floor excluded)
object_index      (V, H, W) long | None       (B, V, H, W) — object (0..K-1, scene-local) or -1
intrinsics        (V, 3, 3) float             (B, V, 3, 3)
world_to_camera   (V, 4, 4) float             (B, V, 4, 4)
view_index        (V,) long | None            (B, V) — which of the scene's views these are
source_views      (V,) bool | None            (B, V) — True: builds the volume; False: supervises
gt_mask           (V, H, W) bool | None       (B, V, H, W) — per-view anomaly masks
anomaly_map       (V, H, W) float | None      (B, V, H, W)
pred_mask         (V, H, W) bool | None       (B, V, H, W)
gt_label          () bool (any object odd)    (B,) bool
pred_score        () float                    (B,) float
boxes             (K, 2, 3) float             (ΣK, 2, 3) — [centre xyz, size xyz], world, axis-aligned
object_poses      (K, 4, 4) float | None      (ΣK, 4, 4) — object-to-world, origin at the box centre
object_sizes      (K, 3) float | None         (ΣK, 3) — box extents along the object's own x, y, z
object_labels     (K,) bool                   (ΣK,) bool — True = anomalous object
object_scores     (K,) float | None           (ΣK,) float — predicted score per object
object_batch      —                           (ΣK,) long, scene of each object (sorted, PyG style)
object_names      list[str] (K) | None        list[str] (ΣK)
scene_id          str | None                  list[str] (B)
category          str | None                  list[str] (B)
image_path        str | None                  list[str] (B) — the scene folder
================  ==========================  ===============================================

Predicted boxes (batch only, e.g. Odd-One-Out's density proposals; ``None`` when the model scores
the ground-truth boxes): ``pred_boxes (ΣP, 2, 3)`` world ``[centre, size]``, ``pred_object_scores
(ΣP,)`` float, ``pred_object_batch (ΣP,)`` long scene of each predicted box (sorted). They are
model outputs of a whole batch: :attr:`SceneBatch.items` and :meth:`SceneBatch.collate` do not
carry them.

**Objects are ragged**: a batch concatenates the objects of its scenes along the first dimension
with a sorted ``object_batch`` vector (the project-wide convention of ``PointCloudBatch``);
:meth:`SceneBatch.pad_objects` gives the dense ``(B, K_max, ...)`` view plus a validity mask.
Views are dense: every scene of a batch must have the same ``V`` and ``H x W`` (the datamodule
samples a fixed number of views per scene).

Boxes: ``boxes`` are world axis-aligned; the released metadata's oriented boxes (location, sizes
along the object's own axes, ``rotation_matrix``) are kept as ``object_poses`` / ``object_sizes``.
Conversions: :mod:`anomalib_3d.data.scenes.boxes`. Inside anomalib-3d sizes are always ``(x, y, z)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

import torch
from anomalib.data.dataclasses.generic import FieldDescriptor
from anomalib.data.dataclasses.torch.base import Batch, DatasetItem
from torch import Tensor

from anomalib_3d.data.dataclasses import _check_str_list, text_validator
from anomalib_3d.data import ragged
from anomalib_3d.data.ragged import as_tensor as _tensor
from anomalib_3d.data.scenes.errors import (
    InvalidBoxError,
    InvalidPoseError,
    InvalidSceneError,
)

T = TypeVar("T")
PathT = TypeVar("PathT")

# Per-view fields: first dims (V, ...) in an item, (B, V, ...) in a batch.
PER_VIEW_FIELDS = (
    "image", "depth", "silhouette", "object_index", "intrinsics", "world_to_camera",
    "view_index", "source_views", "gt_mask", "anomaly_map", "pred_mask",
)
# Per-scene tensors: () in an item, (B,) in a batch.
PER_SCENE_TENSOR_FIELDS = ("gt_label", "pred_score", "pred_label")
# Per-object tensors: (K, ...) in an item, (ΣK, ...) in a batch.
PER_OBJECT_FIELDS = ("boxes", "object_poses", "object_sizes", "object_labels", "object_scores")
PER_SCENE_LIST_FIELDS = ("scene_id", "category", "image_path", "mask_path", "explanation")


@dataclass
class _SceneInputFields(Generic[T, PathT], ABC):
    """Generic scene input fields (shapes in the module docstring)."""

    depth: FieldDescriptor[T | None] = FieldDescriptor(validator_name="validate_depth")
    silhouette: FieldDescriptor[T | None] = FieldDescriptor(validator_name="validate_silhouette")
    object_index: FieldDescriptor[T | None] = FieldDescriptor(validator_name="validate_object_index")
    intrinsics: FieldDescriptor[T | None] = FieldDescriptor(validator_name="validate_intrinsics")
    world_to_camera: FieldDescriptor[T | None] = FieldDescriptor(validator_name="validate_world_to_camera")
    view_index: FieldDescriptor[T | None] = FieldDescriptor(validator_name="validate_view_index")
    source_views: FieldDescriptor[T | None] = FieldDescriptor(validator_name="validate_source_views")
    boxes: FieldDescriptor[T | None] = FieldDescriptor(validator_name="validate_boxes")
    object_poses: FieldDescriptor[T | None] = FieldDescriptor(validator_name="validate_object_poses")
    object_sizes: FieldDescriptor[T | None] = FieldDescriptor(validator_name="validate_object_sizes")
    object_labels: FieldDescriptor[T | None] = FieldDescriptor(validator_name="validate_object_labels")
    object_scores: FieldDescriptor[T | None] = FieldDescriptor(validator_name="validate_object_scores")
    object_names: FieldDescriptor[list[str] | None] = FieldDescriptor(validator_name="validate_object_names")
    scene_id: FieldDescriptor[PathT | None] = FieldDescriptor(validator_name="validate_scene_id")
    category: FieldDescriptor[PathT | None] = FieldDescriptor(validator_name="validate_category")
    image_path: FieldDescriptor[PathT | None] = FieldDescriptor(validator_name="validate_image_path")

    @staticmethod
    @abstractmethod
    def validate_depth(depth: T | None) -> T | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_silhouette(silhouette: T | None) -> T | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_object_index(object_index: T | None) -> T | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_intrinsics(intrinsics: T | None) -> T | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_world_to_camera(world_to_camera: T | None) -> T | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_view_index(view_index: T | None) -> T | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_source_views(source_views: T | None) -> T | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_boxes(boxes: T | None) -> T | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_object_poses(poses: T | None) -> T | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_object_sizes(sizes: T | None) -> T | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_object_labels(labels: T | None) -> T | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_object_scores(scores: T | None) -> T | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_object_names(names: list[str] | None) -> list[str] | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_scene_id(scene_id: PathT | None) -> PathT | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_category(category: PathT | None) -> PathT | None:
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def validate_image_path(path: PathT | None) -> PathT | None:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# validators
# --------------------------------------------------------------------------------------------
def _views(value: object, name: str, lead: int, trailing: tuple[int, ...] | None, dtype: torch.dtype | None) -> Tensor | None:
    """``lead`` leading dims (1 item: V; 2 batch: B, V) then ``trailing`` (``None``: two free dims H, W)."""
    if value is None:
        return None
    tensor = _tensor(value, name)
    ndim = lead + (2 if trailing is None else len(trailing))
    if tensor.ndim != ndim or (trailing is not None and tuple(tensor.shape[lead:]) != trailing):
        want = ("B, V" if lead == 2 else "V") + (", H, W" if trailing is None else "".join(f", {t}" for t in trailing))
        raise InvalidSceneError(f"{name} must have shape ({want}), got {tuple(tensor.shape)}.")
    if dtype is torch.bool:
        return tensor.bool()
    if dtype is torch.long:
        return tensor.long()
    if dtype is not None and not tensor.is_floating_point():
        return tensor.float()
    return tensor


def _check_poses(world_to_camera: Tensor) -> Tensor:
    if not bool(torch.isfinite(world_to_camera).all()):
        raise InvalidPoseError("world_to_camera contains NaN/inf.", fix="repair the camera poses")
    rotation = world_to_camera[..., :3, :3].double()
    eye = torch.eye(3, dtype=torch.float64)
    orthogonal = (rotation @ rotation.transpose(-1, -2) - eye).abs().amax() < 1e-3
    last_row = (world_to_camera[..., 3, :].double() - torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)).abs().amax() < 1e-6
    if not bool(orthogonal) or not bool(last_row):
        raise InvalidPoseError(
            "world_to_camera is not a rigid transform (rotation not orthonormal or last row not [0, 0, 0, 1]).",
            fix="poses must be 4 x 4 world-to-camera matrices [R t; 0 0 0 1]",
        )
    return world_to_camera


def _objects(value: object, name: str, trailing: tuple[int, ...], dtype: torch.dtype) -> Tensor | None:
    if value is None:
        return None
    tensor = _tensor(value, name)
    if tensor.ndim != 1 + len(trailing) or tuple(tensor.shape[1:]) != trailing:
        want = "".join(f", {t}" for t in trailing)
        raise InvalidSceneError(f"{name} must have shape (K{want}), got {tuple(tensor.shape)}.")
    return tensor.to(dtype)


class _SharedSceneValidators(ragged.PassThroughValidators):
    """Validators that are the same for items and batches (per-object fields are ragged)."""

    @staticmethod
    def validate_boxes(boxes: Tensor | None) -> Tensor | None:
        boxes = _objects(boxes, "boxes", (2, 3), torch.float32)
        if boxes is not None and boxes.numel():
            if not bool(torch.isfinite(boxes).all()):
                raise InvalidBoxError("boxes contain NaN/inf.", fix="repair the object boxes")
            if bool((boxes[:, 1] <= 0).any()):
                raise InvalidBoxError("a box has a size <= 0.", fix="box sizes are positive extents (x, y, z)")
        return boxes

    @staticmethod
    def validate_object_poses(poses: Tensor | None) -> Tensor | None:
        poses = _objects(poses, "object_poses", (4, 4), torch.float32)
        if poses is not None and poses.numel() and not bool(torch.isfinite(poses).all()):
            raise InvalidPoseError("object_poses contain NaN/inf.", fix="repair the objects' rotation_matrix")
        return poses

    @staticmethod
    def validate_object_sizes(sizes: Tensor | None) -> Tensor | None:
        sizes = _objects(sizes, "object_sizes", (3,), torch.float32)
        if sizes is not None and sizes.numel() and not bool((torch.isfinite(sizes) & (sizes > 0)).all()):
            raise InvalidBoxError("object_sizes must be finite and > 0.", fix="repair the objects' bbox sizes")
        return sizes

    @staticmethod
    def validate_object_labels(labels: Tensor | None) -> Tensor | None:
        return _objects(labels, "object_labels", (), torch.bool)

    @staticmethod
    def validate_object_scores(scores: Tensor | None) -> Tensor | None:
        return _objects(scores, "object_scores", (), torch.float32)

    @staticmethod
    def validate_object_names(names: list[str] | None) -> list[str] | None:
        return _check_str_list(names, "object_names")



def _make_view_validators(lead: int) -> dict[str, staticmethod]:
    """Per-view validators for items (``lead=1``) and batches (``lead=2``)."""

    def image(value: object) -> Tensor:
        if value is None:
            raise InvalidSceneError("a scene needs its view images.", fix="pass image=(V, 3, H, W)")
        tensor = _tensor(value, "image")
        if tensor.ndim != lead + 3 or tensor.shape[lead] != 3:
            want = "B, V" if lead == 2 else "V"
            raise InvalidSceneError(f"image must have shape ({want}, 3, H, W), got {tuple(tensor.shape)}.")
        return tensor if tensor.is_floating_point() else tensor.float()

    def intrinsics(value: object) -> Tensor | None:
        tensor = _views(value, "intrinsics", lead, (3, 3), torch.float32)
        if tensor is not None and not bool(torch.isfinite(tensor).all()):
            raise InvalidPoseError("intrinsics contain NaN/inf.", fix="repair camera.K")
        return tensor

    def world_to_camera(value: object) -> Tensor | None:
        tensor = _views(value, "world_to_camera", lead, (4, 4), torch.float32)
        return None if tensor is None else _check_poses(tensor)

    def per_view(name: str, trailing: tuple[int, ...] | None, dtype: torch.dtype) -> staticmethod:
        """A plain per-view field: shape and dtype only (see :func:`_views`)."""

        def validate(value: object) -> Tensor | None:
            return _views(value, name, lead, trailing, dtype)

        return staticmethod(validate)

    def per_scene(dtype: torch.dtype, scalar_name: str | None = None) -> staticmethod:
        """A per-scene tensor: ``()`` in an item, ``(B,)`` in a batch; with ``scalar_name`` an
        item's value must already be a scalar (reshaping would hide a per-object label)."""

        def validate(value: object) -> Tensor | None:
            if value is None:
                return None
            tensor = torch.as_tensor(value).to(dtype)
            if scalar_name is not None and lead == 1 and tensor.ndim != 0:
                raise InvalidSceneError(f"{scalar_name} of a scene must be a scalar, got {tuple(tensor.shape)}.")
            return tensor.reshape(()) if lead == 1 else tensor.reshape(-1)

        return staticmethod(validate)

    # name: (trailing dims after the views, None = H, W; dtype)
    plain_views = {
        "depth": (None, torch.float32),
        "silhouette": (None, torch.bool),
        "object_index": (None, torch.long),
        "gt_mask": (None, torch.bool),
        "anomaly_map": (None, torch.float32),
        "pred_mask": (None, torch.bool),
        "view_index": ((), torch.long),
        "source_views": ((), torch.bool),
    }
    return {
        "validate_image": staticmethod(image),
        **{f"validate_{name}": per_view(name, trailing, dtype) for name, (trailing, dtype) in plain_views.items()},
        "validate_intrinsics": staticmethod(intrinsics),
        "validate_world_to_camera": staticmethod(world_to_camera),
        "validate_gt_label": per_scene(torch.bool, scalar_name="gt_label"),
        "validate_pred_score": per_scene(torch.float32),
        "validate_pred_label": per_scene(torch.bool),
        **{f"validate_{name}": text_validator(name, batched=lead == 2) for name in ("scene_id", "category", "image_path")},
    }


SceneValidator = type("SceneValidator", (_SharedSceneValidators,), {
    "__doc__": "Validators of a single :class:`SceneItem`.", **_make_view_validators(1)})
SceneBatchValidator = type("SceneBatchValidator", (_SharedSceneValidators,), {
    "__doc__": "Validators of a :class:`SceneBatch`.", **_make_view_validators(2)})


def _check_consistency(obj: object, lead: int) -> None:
    """Per-view fields share (V, H, W) (and B); per-object fields share K."""
    image = obj.image
    views_shape = tuple(image.shape[:lead])
    hw = tuple(image.shape[-2:])
    where = obj.image_path if isinstance(getattr(obj, "image_path", None), str) else None
    for name in PER_VIEW_FIELDS[1:]:
        value = getattr(obj, name)
        if value is None:
            continue
        if tuple(value.shape[:lead]) != views_shape:
            raise InvalidSceneError(f"{name} is for {tuple(value.shape[:lead])} views but image has {views_shape}.",
                                    path=where, fix=f"give {name} one entry per view, in the order of the images")
        if name in ("depth", "silhouette", "object_index", "gt_mask", "anomaly_map", "pred_mask") and \
                tuple(value.shape[-2:]) != hw:
            raise InvalidSceneError(f"{name} is {tuple(value.shape[-2:])} pixels but the images are {hw}.",
                                    path=where, fix=f"resize {name} to the image size (nearest for masks)")
    counts = {name: getattr(obj, name).shape[0] for name in PER_OBJECT_FIELDS if getattr(obj, name) is not None}
    if obj.object_names is not None:
        counts["object_names"] = len(obj.object_names)
    if len(set(counts.values())) > 1:
        raise InvalidSceneError(f"per-object fields disagree on the number of objects: {counts}.", path=where,
                                fix="give boxes, object_labels, object_scores and object_names one entry per object")


# --------------------------------------------------------------------------------------------
# item and batch
# --------------------------------------------------------------------------------------------
@dataclass
class SceneItem(SceneValidator, _SceneInputFields[Tensor, str], DatasetItem[Tensor]):  # type: ignore[misc, valid-type]
    """One multi-view scene with its ground truth and (after the model) its predictions.

    Example:
        >>> item = SceneItem(image=torch.rand(5, 3, 32, 32), intrinsics=torch.eye(3).expand(5, 3, 3),
        ...                  world_to_camera=torch.eye(4).expand(5, 4, 4), boxes=torch.ones(3, 2, 3),
        ...                  object_labels=torch.tensor([0, 1, 0]), gt_label=True)
        >>> item.num_views, item.num_objects
        (5, 3)
    """

    image: FieldDescriptor[Tensor | None] = FieldDescriptor(validator_name="validate_image", default=None)

    def __post_init__(self) -> None:
        if self.image is None:
            raise InvalidSceneError("a scene needs its view images.", fix="pass image=(V, 3, H, W)")
        _check_consistency(self, 1)

    @property
    def num_views(self) -> int:
        """``V``."""
        return int(self.image.shape[0])

    @property
    def num_objects(self) -> int:
        """``K`` (0 when the scene carries no object annotations)."""
        for name in PER_OBJECT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                return int(value.shape[0])
        return len(self.object_names) if self.object_names is not None else 0


@dataclass
class SceneBatch(ragged.RaggedBatchMixin, SceneBatchValidator, _SceneInputFields[Tensor, list[str]], Batch[Tensor]):  # type: ignore[misc, valid-type]
    """A batch of scenes: dense over views, ragged over objects (``object_batch``).

    Build one with :meth:`collate`; iterate it to get :class:`SceneItem` back; call
    :meth:`pad_objects` for dense ``(B, K_max, ...)`` object tensors.
    """

    item_class: ClassVar[type[SceneItem]] = SceneItem

    image: FieldDescriptor[Tensor | None] = FieldDescriptor(validator_name="validate_image", default=None)
    object_batch: FieldDescriptor[Tensor | None] = FieldDescriptor(validator_name="validate_object_batch")
    # Predicted object boxes (e.g. Odd-One-Out's density proposals): ragged over predictions like the
    # ground-truth objects, with their own scene vector. Batch-level model outputs: ``items`` and
    # ``collate`` do not carry them.
    pred_boxes: FieldDescriptor[Tensor | None] = FieldDescriptor(validator_name="validate_pred_boxes")
    pred_object_scores: FieldDescriptor[Tensor | None] = FieldDescriptor(validator_name="validate_pred_object_scores")
    pred_object_batch: FieldDescriptor[Tensor | None] = FieldDescriptor(validator_name="validate_pred_object_batch")

    @staticmethod
    def validate_pred_boxes(boxes: Tensor | None) -> Tensor | None:
        return _SharedSceneValidators.validate_boxes(boxes)

    @staticmethod
    def validate_pred_object_scores(scores: Tensor | None) -> Tensor | None:
        return _objects(scores, "pred_object_scores", (), torch.float32)

    @staticmethod
    def validate_pred_object_batch(pred_object_batch: Tensor | None) -> Tensor | None:
        return ragged.check_group_index(pred_object_batch, "pred_object_batch", "ΣP",
                                 "(predictions of one scene contiguous).", InvalidSceneError)

    @staticmethod
    def validate_object_batch(object_batch: Tensor | None) -> Tensor | None:
        return ragged.check_group_index(object_batch, "object_batch", "ΣK", "(objects of one scene contiguous).", InvalidSceneError)

    def __post_init__(self) -> None:
        if self.image is None:
            raise InvalidSceneError("a scene batch needs its view images.", fix="pass image=(B, V, 3, H, W)")
        _check_consistency(self, 2)
        num_objects = None
        for name in PER_OBJECT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                num_objects = value.shape[0]
                break
        if self.object_batch is None:
            if num_objects not in (None, 0) and self.batch_size != 1:
                raise InvalidSceneError("object_batch is required for a batch of several scenes with objects.",
                                        fix="build batches with SceneBatch.collate")
            self.object_batch = torch.zeros(num_objects or 0, dtype=torch.long, device=self.image.device)
        elif num_objects is not None and self.object_batch.shape[0] != num_objects:
            raise InvalidSceneError(f"object_batch has {self.object_batch.shape[0]} entries for {num_objects} objects.")
        if self.object_batch.numel() and int(self.object_batch[-1]) >= self.batch_size:
            raise InvalidSceneError(f"object_batch refers to scene {int(self.object_batch[-1])} of {self.batch_size}.")

    # -- sizes ------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """Number of scenes ``B``."""
        return int(self.image.shape[0])

    @property
    def num_views(self) -> int:
        """``V`` (the same for every scene of the batch)."""
        return int(self.image.shape[1])

    @property
    def num_objects(self) -> Tensor:
        """``(B,)`` long: objects per scene."""
        return torch.bincount(self.object_batch, minlength=self.batch_size)

    @property
    def object_ptr(self) -> Tensor:
        """``(B + 1,)`` long: scene ``b`` owns objects ``ptr[b]:ptr[b + 1]``."""
        return ragged.group_ptr(self.num_objects)

    # -- ragged <-> items -------------------------------------------------------------------
    @property
    def items(self) -> list[SceneItem]:
        """Split the batch back into one :class:`SceneItem` per scene."""
        return self._split_items(
            SceneItem,
            self.object_ptr,
            ragged=(*PER_OBJECT_FIELDS, "object_names"),
            dense=PER_VIEW_FIELDS + PER_SCENE_TENSOR_FIELDS,
            text=PER_SCENE_LIST_FIELDS,
        )

    @classmethod
    def collate(cls, items: list[SceneItem]) -> SceneBatch:
        """Stack views, concatenate objects (the DataLoader ``collate_fn``).

        A tensor field is kept only if every scene has it; one present for some scenes but not
        all raises rather than being dropped silently. Scenes must agree on ``V`` and ``H x W``.
        """
        if not items:
            raise InvalidSceneError("cannot collate an empty list of scenes.")
        kwargs: dict[str, object] = {}

        def where(index: int) -> str:
            return items[index].image_path or items[index].scene_id or f"scene {index}"

        for name in (*PER_VIEW_FIELDS, *PER_SCENE_TENSOR_FIELDS, *PER_OBJECT_FIELDS, "object_names"):
            values = [getattr(item, name) for item in items]
            present = [v is not None for v in values]
            if not any(present):
                continue
            if not all(present):
                missing = [where(i) for i, p in enumerate(present) if not p]
                raise InvalidSceneError(f"field '{name}' is set for some scenes of the batch but missing for {missing[:3]}.")
            if name == "object_names":
                kwargs[name] = [n for names in values for n in names]
            elif name in PER_OBJECT_FIELDS:
                kwargs[name] = torch.cat(values)
            else:
                shapes = {tuple(v.shape) for v in values}
                if len(shapes) > 1:
                    raise InvalidSceneError(
                        f"field '{name}' has different shapes across the batch {sorted(shapes)}.",
                        fix="sample the same number of views per scene and resize views to one size",
                    )
                kwargs[name] = torch.stack(values)
        for name in PER_SCENE_LIST_FIELDS:
            values = [getattr(item, name) for item in items]
            if any(v is not None for v in values):
                kwargs[name] = ragged.collate_text(values)
        counts = torch.tensor([item.num_objects for item in items])
        device = items[0].image.device
        kwargs["object_batch"] = torch.repeat_interleave(torch.arange(len(items)), counts).to(device)
        return cls(**kwargs)

    def pad_objects(self, max_objects: int | None = None) -> tuple[dict[str, Tensor], Tensor]:
        """Dense per-object tensors.

        Args:
            max_objects: padded length; default the largest scene. A smaller value raises
                (truncating would drop objects silently).

        Returns:
            ``(fields, valid)``: ``fields[name]`` is ``(B, K_max, ...)`` for every per-object
            tensor that is set (padding 0 / False), ``valid`` is ``(B, K_max)`` bool.
        """
        max_objects = ragged.pad_length(self.num_objects, max_objects, "max_objects", "scene", "objects")
        slot = ragged.group_slots(self.object_batch, self.object_ptr, self.object_batch.device)
        out = {}
        for name in PER_OBJECT_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            dense = value.new_zeros(self.batch_size, max_objects, *value.shape[1:])
            dense[self.object_batch, slot] = value
            out[name] = dense
        valid = torch.zeros(self.batch_size, max_objects, dtype=torch.bool, device=self.object_batch.device)
        valid[self.object_batch, slot] = True
        return out, valid


__all__ = [
    "SceneBatch",
    "SceneBatchValidator",
    "SceneItem",
    "SceneValidator",
]
