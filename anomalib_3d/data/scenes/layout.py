"""The released ToysAD-8K / PartsAD-15K scene layout (Odd-One-Out, CVPR 2025): read and write.

One folder per scene::

    <scene_id>/
        RGB/NNNN.png                          RGBA 256 x 256 (alpha ignored, as the official loader does)
        depth_exr/NNNN.exr                    camera depth in metres, background 1e10 (read with the OpenEXR wheel)
        depth/NNNN.npy                        the same as float32 .npy (what our synthetic generator writes)
        segmentations/<obj>/<obj>_NNNN.png    visible pixels of object <obj> (``objects[i].name``)
        binary_labels/NNNN.png                per-view anomaly mask (optional)
        masks/NNNN.png                        silhouette of all objects (optional; else the union of
                                              the object segmentations)
        scene3d.metadata.json                 camera.K (3 x 3), camera.poses[i].rotation (4 x 4
                                              world-to-camera, OpenCV, z up), objects[i].{name, path,
                                              bbox = [location, local sizes (x, y, z)],
                                              rotation_matrix (4 x 4 object-to-world)}

``NNNN`` is the view index (4 digits) and view ``i`` uses ``camera.poses[i]``. A box is the object's
location with its sizes along the object's own axes, turned by ``rotation_matrix`` (see
:mod:`anomalib_3d.data.scenes.dataclasses`); metadata without ``rotation_matrix`` holds world-aligned
``[[cx, cy, cz], [h, w, d]]`` boxes. An object is
anomalous iff the file name of its asset (``objects[i].path``) contains ``-`` (e.g.
``banana_028-crack-001.blend``), the rule of the official code. Splits come from
``<dataset>-split.json``: ``{split name: [scene ids]}``; every key containing ``"test"`` is a
test split (``"unseen-test"`` holds scenes of object classes absent from training).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from anomalib_3d.data.errors import CorruptFileError, DatasetRootNotFoundError, UnsupportedFormatError
from anomalib_3d.data.scenes.boxes import boxes_from_metadata
from anomalib_3d.data.scenes.dataclasses import SceneItem
from anomalib_3d.data.scenes.errors import InvalidPoseError, InvalidSceneError, MissingViewError, UnknownSplitError

METADATA_NAME = "scene3d.metadata.json"
BACKGROUND_DEPTH = 1e10
"""Depth the released EXRs (and our .npy files) store where no surface was hit."""
_BACKGROUND_THRESHOLD = 1e9

__all__ = [
    "BACKGROUND_DEPTH",
    "METADATA_NAME",
    "SceneMetadata",
    "find_split_file",
    "is_anomalous_asset",
    "load_scene",
    "read_depth",
    "read_scene_metadata",
    "read_split",
    "view_name",
    "write_depth",
    "write_scene_metadata",
]


def view_name(index: int) -> str:
    """File stem of view ``index``: ``"0007"``."""
    return f"{int(index):04d}"


def is_anomalous_asset(asset_path: str) -> bool:
    """The dataset rule: an object is anomalous iff its asset file name contains ``-``."""
    return "-" in os.path.basename(str(asset_path))


@dataclass
class SceneMetadata:
    """The parsed ``scene3d.metadata.json`` of one scene.

    Attributes:
        scene_dir: the scene folder.
        intrinsics: ``(3, 3)`` float ``K`` (shared by every view).
        world_to_camera: ``(N, 4, 4)`` float, one pose per view of the scene.
        boxes: ``(K, 2, 3)`` float world axis-aligned ``[centre, size (x, y, z)]`` (enclosing the
            oriented boxes when the metadata has ``rotation_matrix``).
        object_names: ``K`` names (segmentation folder names).
        asset_paths: ``K`` asset paths (the anomaly rule reads their file names).
        object_labels: ``(K,)`` bool, True = anomalous.
        object_poses: ``(K, 4, 4)`` float object-to-world rigid transforms with the origin at the
            box centre (``rotation_matrix`` with its rotation orthonormalised), or ``None`` when absent.
        object_sizes: ``(K, 3)`` float box extents along the objects' own axes, or ``None``.
        object_defects: ``K`` defect names (``None`` for normal objects) when the metadata records
            them (the synthetic scenes do), else ``None``.
    """

    scene_dir: Path
    intrinsics: Tensor
    world_to_camera: Tensor
    boxes: Tensor
    object_names: list[str]
    asset_paths: list[str]
    object_labels: Tensor
    object_poses: Tensor | None = None
    object_sizes: Tensor | None = None
    object_defects: list[str | None] | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def num_views(self) -> int:
        """Number of views ``N`` listed by the metadata."""
        return int(self.world_to_camera.shape[0])

    @property
    def num_objects(self) -> int:
        """``K``."""
        return len(self.object_names)

    @property
    def scene_id(self) -> str:
        """The folder name."""
        return self.scene_dir.name


def _matrix(value: object, shape: tuple[int, int], what: str, path: Path) -> Tensor:
    try:
        matrix = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidPoseError(f"{what} is not a numeric matrix.", path=path,
                               fix=f"write {what} as a {shape[0]} x {shape[1]} list of lists") from exc
    if tuple(matrix.shape) != shape:
        raise InvalidPoseError(f"{what} has shape {tuple(matrix.shape)}, expected {shape}.", path=path,
                               fix=f"write {what} as a {shape[0]} x {shape[1]} list of lists")
    if not bool(torch.isfinite(matrix).all()):
        raise InvalidPoseError(f"{what} contains NaN/inf.", path=path, fix=f"repair {what}")
    return matrix


def read_scene_metadata(scene_dir: str | Path) -> SceneMetadata:
    """Parse and check ``<scene_dir>/scene3d.metadata.json``.

    Raises:
        InvalidSceneError: the file is missing, not JSON, or lacks ``camera`` / ``objects``.
        InvalidPoseError: ``K`` is not 3 x 3, a pose is not a finite rigid 4 x 4 matrix.
        InvalidBoxError: an object's ``bbox`` is malformed.
    """
    scene_dir = Path(scene_dir)
    path = scene_dir / METADATA_NAME
    if not path.is_file():
        raise InvalidSceneError(f"the scene has no {METADATA_NAME}.", path=scene_dir,
                                fix="every scene folder needs its metadata file (re-download or regenerate the scene)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"not valid JSON ({exc}).", path=path, fix="re-download or regenerate the scene") from exc
    camera = raw.get("camera") if isinstance(raw, dict) else None
    if not isinstance(camera, dict) or "K" not in camera or not isinstance(camera.get("poses"), list):
        raise InvalidSceneError("the metadata has no camera.K / camera.poses list.", path=path,
                                fix="the metadata must hold camera: {K: 3x3, poses: [{rotation: 4x4}, ...]}")
    intrinsics = _matrix(camera["K"], (3, 3), "camera.K", path)
    if not camera["poses"]:
        raise InvalidSceneError("camera.poses is empty: the scene has no views.", path=path,
                                fix="list one pose per rendered view")
    poses = []
    for index, pose in enumerate(camera["poses"]):
        value = pose.get("rotation") if isinstance(pose, dict) else None
        matrix = _matrix(value, (4, 4), f"camera.poses[{index}].rotation", path)
        rotation = matrix[:3, :3]
        if (rotation @ rotation.T - torch.eye(3, dtype=torch.float64)).abs().max() > 1e-3 or \
                (matrix[3] - torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)).abs().max() > 1e-6:
            raise InvalidPoseError(f"camera.poses[{index}].rotation is not a rigid transform [R t; 0 0 0 1].",
                                   path=path, fix="poses must be 4 x 4 world-to-camera matrices")
        poses.append(matrix)
    objects = raw.get("objects")
    if not isinstance(objects, list):
        raise InvalidSceneError("the metadata has no objects list.", path=path,
                                fix="the metadata must hold objects: [{name, path, bbox}, ...]")
    for index, obj in enumerate(objects):
        if not isinstance(obj, dict) or "path" not in obj or "bbox" not in obj:
            raise InvalidSceneError(f"objects[{index}] lacks 'path' or 'bbox'.", path=path,
                                    fix="each object needs its asset path and bbox [location, sizes]")
    oriented = [("rotation_matrix" in obj) for obj in objects]
    if any(oriented) and not all(oriented):
        raise InvalidSceneError("some objects have a rotation_matrix and others not: their boxes cannot be read "
                                "in one convention.", path=path,
                                fix="give every object its rotation_matrix, or none of them (world-aligned boxes)")
    rotations = None
    if objects and all(oriented):
        matrices = [_matrix(obj["rotation_matrix"], (4, 4), f"objects[{index}].rotation_matrix", path)
                    for index, obj in enumerate(objects)]
        rotations = torch.stack([_orthonormal(m[:3, :3], f"objects[{i}].rotation_matrix", path)
                                 for i, m in enumerate(matrices)])
    names, assets, boxes, sizes = [], [], [], []
    for index, obj in enumerate(objects):
        names.append(str(obj.get("name", f"object_{index}")))
        assets.append(str(obj["path"]))
        try:
            boxes.append(boxes_from_metadata([obj["bbox"]], path=str(path),
                                             rotations=None if rotations is None else rotations[index : index + 1])[0])
        except InvalidSceneError as exc:
            raise type(exc)(f"objects[{index}].bbox: {exc.problem}", path=path, fix=exc.fix) from exc
        sizes.append(torch.as_tensor(obj["bbox"], dtype=torch.float64)[1])
    object_poses = object_sizes = None
    if rotations is not None:
        object_poses = torch.eye(4, dtype=torch.float64).repeat(len(objects), 1, 1)
        object_poses[:, :3, :3] = rotations
        object_poses[:, :3, 3] = torch.stack(boxes)[:, 0].double()
        object_sizes = torch.stack(sizes).float()
    defects = None
    if objects and all("defect" in obj for obj in objects):
        defects = [None if obj["defect"] is None else str(obj["defect"]) for obj in objects]
    return SceneMetadata(
        scene_dir=scene_dir,
        intrinsics=intrinsics.float(),
        world_to_camera=torch.stack(poses).float(),
        boxes=torch.stack(boxes) if boxes else torch.zeros(0, 2, 3),
        object_names=names,
        asset_paths=assets,
        object_labels=torch.tensor([is_anomalous_asset(a) for a in assets], dtype=torch.bool),
        object_poses=None if object_poses is None else object_poses.float(),
        object_sizes=object_sizes,
        object_defects=defects,
        raw=raw,
    )


def _orthonormal(matrix: Tensor, what: str, path: Path) -> Tensor:
    """The rotation nearest to ``matrix`` (the released matrices carry Blender scales of ~1)."""
    u, s, vh = torch.linalg.svd(matrix)
    if float(s.min()) < 1e-6 or float(s.max() / s.min()) > 1.5:
        raise InvalidPoseError(f"{what} is not a rotation (singular values {s.tolist()}).", path=path,
                               fix="rotation_matrix must be a 4 x 4 rigid object-to-world transform")
    rotation = u @ vh
    if float(torch.linalg.det(rotation)) < 0:
        raise InvalidPoseError(f"{what} mirrors the object (determinant < 0).", path=path,
                               fix="rotation_matrix must be a proper rotation")
    return rotation


def write_scene_metadata(
    scene_dir: str | Path,
    intrinsics: np.ndarray,
    world_to_camera: np.ndarray,
    objects: list[dict],
    extra: dict | None = None,
) -> Path:
    """Write ``scene3d.metadata.json`` in the released format.

    Args:
        intrinsics: ``(3, 3)``.
        world_to_camera: ``(N, 4, 4)``.
        objects: dicts with ``name``, ``path`` and ``bbox``: ``[location, local sizes (x, y, z)]``
            with ``rotation_matrix (4, 4)`` (the released convention), or world-aligned
            ``[[cx, cy, cz], [h, w, d]]`` without it; written as given (plain lists).
        extra: more top-level keys (e.g. ``scene``).
    """
    payload = {
        "objects": objects,
        "camera": {
            "poses": [{"rotation": np.asarray(p, dtype=float).tolist()} for p in world_to_camera],
            "K": np.asarray(intrinsics, dtype=float).tolist(),
        },
        **(extra or {}),
    }
    path = Path(scene_dir) / METADATA_NAME
    path.write_text(json.dumps(payload, indent=1))
    return path


# ----------------------------------------------------------------------------------------------
# depth


def read_depth(path: str | Path) -> np.ndarray:
    """``(H, W)`` float32 camera depth in metres, ``0`` where the file stores background (>= 1e9).

    Reads ``.exr`` (the first of the channels ``Z``, ``R``, ``Y``, ``V`` present, else the first
    channel; with the ``OpenEXR`` wheel, a dependency of anomalib-3d) and ``.npy``.

    Raises:
        MissingViewError: the file does not exist.
        UnsupportedFormatError: unknown extension, or ``.exr`` without ``OpenEXR`` installed.
        CorruptFileError: the file cannot be parsed.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingViewError("depth file is missing.", path=path, fix="re-download or regenerate the scene, or load without depth")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            depth = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise CorruptFileError(f"cannot read the depth array ({exc}).", path=path) from exc
    elif suffix == ".exr":
        depth = _read_exr(path)
    else:
        raise UnsupportedFormatError(f"unknown depth format {suffix!r}.", path=path, fix="use .exr or .npy depth files")
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim == 3:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise CorruptFileError(f"depth has shape {depth.shape}, expected (H, W).", path=path)
    return np.where(np.isfinite(depth) & (depth < _BACKGROUND_THRESHOLD), depth, 0.0).astype(np.float32)


def _read_exr(path: Path) -> np.ndarray:
    try:
        import OpenEXR  # noqa: PLC0415 - imported only when an EXR file is read
    except ImportError as exc:
        raise UnsupportedFormatError(
            "reading .exr depth needs the OpenEXR package, which is not installed.",
            path=path,
            fix="pip install OpenEXR (a binary wheel, installed with anomalib-3d), or load the scenes with load_depth=False",
        ) from exc
    try:
        with OpenEXR.File(str(path), separate_channels=True) as exr:
            channels = exr.channels()
            # Blender writes depth into R (G = B = the same); other tools use Z / Y / V.
            for name in ("Z", "R", "Y", "V", "depth.Z"):
                if name in channels:
                    return np.asarray(channels[name].pixels)
            return np.asarray(next(iter(channels.values())).pixels)
    except Exception as exc:  # OpenEXR raises plain RuntimeError/OSError on bad files
        raise CorruptFileError(f"cannot read the EXR file ({exc}).", path=path) from exc


def write_depth(path: str | Path, depth: np.ndarray) -> Path:
    """Write ``(H, W)`` depth (metres, ``0``/``inf`` = background) as float32 ``.npy`` with background 1e10."""
    depth = np.asarray(depth, dtype=np.float32)
    stored = np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(BACKGROUND_DEPTH)).astype(np.float32)
    path = Path(path)
    np.save(path, stored)
    return path


# ----------------------------------------------------------------------------------------------
# images


def _read_png(path: Path, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode))
    except (UnidentifiedImageError, OSError) as exc:
        raise CorruptFileError(f"cannot read the image ({exc}).", path=path, fix="re-download or regenerate the scene") from exc


def _read_mask(path: Path) -> np.ndarray:
    return _read_png(path, "L") > 127


def _resize(tensor: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """Resize ``(V, C, H, W)`` (float) with ``mode``; identity when already that size."""
    if tuple(tensor.shape[-2:]) == size:
        return tensor
    import torch.nn.functional as F

    if mode == "nearest":
        return F.interpolate(tensor, size=size, mode="nearest-exact")
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)


def load_scene(
    scene_dir: str | Path,
    view_indices: list[int] | Tensor | None = None,
    *,
    metadata: SceneMetadata | None = None,
    image_size: tuple[int, int] | None = None,
    load_depth: bool = False,
    load_masks: bool = True,
    source_views: list[bool] | Tensor | None = None,
    category: str | None = None,
) -> SceneItem:
    """Read views of one scene folder into a :class:`SceneItem`.

    Args:
        scene_dir: the scene folder.
        view_indices: views to read (default all, in order).
        metadata: already parsed metadata (read when ``None``).
        image_size: ``(H, W)`` to resize to (images bilinear, masks and depth nearest, ``K`` scaled);
            ``None`` keeps the stored size.
        load_depth: read ``depth_exr/NNNN.exr`` (or ``depth/NNNN.npy``).
        load_masks: read silhouettes, object segmentations and anomaly masks when present.
        source_views: ``(V,)`` bool marking the views that build the volume (stored as is).
        category: object class of the scene (default: the asset name of the first object without
            its ``_NNN`` instance suffix).

    Raises:
        MissingViewError: a requested view is not listed by the metadata or its RGB (or requested
            depth / mask) file is missing.
        InvalidSceneError, InvalidPoseError, InvalidBoxError: bad metadata.
    """
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise DatasetRootNotFoundError("scene folder does not exist.", path=scene_dir, fix="check the dataset root and split file")
    metadata = metadata or read_scene_metadata(scene_dir)
    if view_indices is None:
        view_indices = list(range(metadata.num_views))
    views = [int(v) for v in (view_indices.tolist() if isinstance(view_indices, Tensor) else view_indices)]
    bad = [v for v in views if not 0 <= v < metadata.num_views]
    if bad:
        raise MissingViewError(f"views {bad} requested but the metadata lists {metadata.num_views} poses.",
                               path=scene_dir / METADATA_NAME, fix="request views 0 .. N-1")
    images = []
    for view in views:
        path = scene_dir / "RGB" / f"{view_name(view)}.png"
        if not path.is_file():
            raise MissingViewError(f"view {view} has a pose but no image.", path=path,
                                   fix="re-download or regenerate the scene (every pose needs RGB/NNNN.png)")
        images.append(_read_png(path, "RGB"))
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise InvalidSceneError(f"the views have different sizes {sorted(shapes)}.", path=scene_dir / "RGB")
    stored_hw = images[0].shape[:2]
    image = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    target_hw = tuple(int(s) for s in image_size) if image_size is not None else tuple(stored_hw)

    def masks_from(paths: list[Path]) -> Tensor:
        stack = np.stack([_read_mask(p) for p in paths])
        return _resize(torch.from_numpy(stack).unsqueeze(1).float(), target_hw, "nearest")[:, 0] > 0.5

    def view_files(folder: str, suffix: str) -> list[Path] | None:
        directory = scene_dir / folder
        if not directory.is_dir():
            return None
        paths = [directory / f"{view_name(v)}{suffix}" for v in views]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise MissingViewError(f"{len(missing)} view file(s) missing in {folder}/, first {missing[0].name}.",
                                   path=missing[0], fix="re-download or regenerate the scene")
        return paths

    depth = None
    if load_depth:
        paths = view_files("depth_exr", ".exr") or view_files("depth", ".npy")
        if paths is None:
            raise MissingViewError("load_depth=True but the scene has neither depth_exr/ nor depth/.", path=scene_dir,
                                   fix="load with load_depth=False")
        stack = torch.from_numpy(np.stack([read_depth(p) for p in paths]))
        depth = _resize(stack.unsqueeze(1), target_hw, "nearest")[:, 0]

    silhouette = object_index = gt_mask = None
    if load_masks:
        seg_dirs = [scene_dir / "segmentations" / name for name in metadata.object_names]
        if metadata.object_names and all(d.is_dir() for d in seg_dirs):
            owner = torch.full((len(views), *target_hw), -1, dtype=torch.long)
            for index, (name, directory) in enumerate(zip(metadata.object_names, seg_dirs, strict=True)):
                paths = [directory / f"{name}_{view_name(v)}.png" for v in views]
                missing = [p for p in paths if not p.is_file()]
                if missing:
                    raise MissingViewError(f"object {name!r} has no segmentation for {len(missing)} view(s).",
                                           path=missing[0], fix="re-download or regenerate the scene")
                owner[masks_from(paths) & (owner < 0)] = index
            object_index = owner
        mask_paths = view_files("masks", ".png")
        if mask_paths is not None:
            silhouette = masks_from(mask_paths)
        elif object_index is not None:
            silhouette = object_index >= 0
        label_paths = view_files("binary_labels", ".png")
        if label_paths is not None:
            gt_mask = masks_from(label_paths)

    intrinsics = metadata.intrinsics.clone()
    if target_hw != tuple(stored_hw):
        # Pixel edges scale exactly under the [u, u + 1) convention: x' = x * W' / W.
        scale = torch.tensor([target_hw[1] / stored_hw[1], target_hw[0] / stored_hw[0], 1.0])
        intrinsics = intrinsics * scale.view(3, 1)
        image = _resize(image, target_hw, "bilinear").clamp(0.0, 1.0)
    num = len(views)
    if category is None and metadata.asset_paths:
        stem = os.path.basename(metadata.asset_paths[0]).split("-")[0].rsplit(".", 1)[0]
        category = stem.rsplit("_", 1)[0] if "_" in stem else stem
    return SceneItem(
        image=image,
        depth=depth,
        silhouette=silhouette,
        object_index=object_index,
        intrinsics=intrinsics.expand(num, 3, 3).clone(),
        world_to_camera=metadata.world_to_camera[views],
        view_index=torch.tensor(views, dtype=torch.long),
        source_views=None if source_views is None else torch.as_tensor(source_views, dtype=torch.bool),
        boxes=metadata.boxes,
        object_poses=metadata.object_poses,
        object_sizes=metadata.object_sizes,
        object_labels=metadata.object_labels,
        object_names=list(metadata.object_names),
        gt_label=bool(metadata.object_labels.any()),
        gt_mask=gt_mask,
        scene_id=metadata.scene_id,
        category=category,
        image_path=str(scene_dir),
    )


# ----------------------------------------------------------------------------------------------
# splits


def find_split_file(root: str | Path) -> Path:
    """The single ``*-split.json`` directly under ``root``.

    Raises:
        DatasetRootNotFoundError: ``root`` does not exist.
        UnknownSplitError: none or several split files.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetRootNotFoundError("dataset root does not exist.", path=root,
                                       fix="download ToysAD-8K / PartsAD-15K there, or use synthetic=True")
    found = sorted(root.glob("*-split.json"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
        raise UnknownSplitError(f"{what} '<dataset>-split.json' files under the root.", path=root,
                                fix="put the dataset's split file (e.g. toys8k-split.json) in the root, or pass split_file=")
    return found[0]


def read_split(path: str | Path) -> dict[str, list[str]]:
    """``{split name: [scene ids]}`` from a split file.

    Raises:
        UnknownSplitError: missing file, not JSON, or not a mapping of names to lists of ids.
    """
    path = Path(path)
    if not path.is_file():
        raise UnknownSplitError("split file does not exist.", path=path, fix="pass the dataset's <dataset>-split.json")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UnknownSplitError(f"split file is not valid JSON ({exc}).", path=path) from exc
    if not isinstance(raw, dict) or not all(
        isinstance(v, list) and all(isinstance(s, str) for s in v) for v in raw.values()
    ):
        raise UnknownSplitError("split file must map split names to lists of scene ids.", path=path,
                                fix='write {"train": ["scene_a", ...], "unseen-test": [...]}')
    return {str(k): list(v) for k, v in raw.items()}
