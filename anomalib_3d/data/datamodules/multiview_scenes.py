"""MultiViewScenes: multi-view multi-object scenes (ToysAD-8K / PartsAD-15K layout, or synthetic).

The input of a scene model (Odd-One-Out) is several views of several instances of one object
class; an object is anomalous when it differs from the others. This datamodule reads the released
layout (:mod:`anomalib_3d.data.scenes.layout`) and yields :class:`~anomalib_3d.data.scenes.SceneItem`
objects, collated into :class:`~anomalib_3d.data.scenes.SceneBatch` (objects ragged, with an
``object_batch`` vector).

Views per scene: ``num_views`` (5) at test time, chosen without replacement by a generator seeded
with ``(seed, scene id)`` so every run sees the same views. In training ``train_view_sets * num_views``
(2 x 5) fresh random views per access: the first ``num_views`` build the volume
(``source_views = True``), the rest supervise the rendering, as in the paper.

With ``synthetic=True`` (the embedded default; no download) :meth:`prepare_data` generates scenes
of our procedural parts into a cache folder under ``root`` (:mod:`anomalib_3d.data.synthetic.scenes`)
and the same reader loads them. Pass a dict instead of ``True`` to change the generation
parameters (see :func:`~anomalib_3d.data.synthetic.scenes.generate_scene_dataset`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from anomalib.data.datamodules.base.image import AnomalibDataModule
from anomalib.data.utils import TestSplitMode, ValSplitMode

from anomalib_3d.data.datasets import SamplesTableDataset
from anomalib_3d.data.scenes import (
    InvalidSceneError,
    SceneBatch,
    SceneItem,
    UnknownSplitError,
    find_split_file,
    load_scene,
    read_scene_metadata,
    read_split,
)

__all__ = ["MultiViewSceneDataset", "MultiViewScenes", "scan_scenes", "select_views"]


def _seed_for(seed: int, scene_id: str) -> int:
    digest = hashlib.sha1(f"{int(seed)}/{scene_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def select_views(num_available: int, count: int, scene_id: str, seed: int | None, path: Path | None = None) -> list[int]:
    """``count`` distinct views out of ``num_available``.

    ``seed=None`` draws from torch's global generator (training: new views every access, seeded
    by Lightning per worker); an int gives the same views for the same ``(seed, scene_id)``.

    Raises:
        InvalidSceneError: the scene has fewer than ``count`` views.
    """
    if count > num_available:
        raise InvalidSceneError(
            f"{count} views are needed but the scene has only {num_available}.", path=path,
            fix="lower num_views / train_view_sets, or use scenes rendered from more views",
        )
    generator = None if seed is None else torch.Generator().manual_seed(_seed_for(seed, scene_id) % (2**63))
    return torch.randperm(num_available, generator=generator)[:count].tolist()


def scan_scenes(
    root: str | Path,
    split_file: str | Path | None = None,
    train_split: str | Sequence[str] | None = None,
    test_split: str | Sequence[str] | None = None,
) -> pd.DataFrame:
    """The samples table: one row per scene of the selected splits.

    Columns: ``image_path`` (scene folder), ``split`` (``"train"``/``"test"``), ``split_name`` (key
    in the split file), ``scene_id``, ``label_index`` (1 if any object is anomalous),
    ``num_objects``, ``num_anomalous``, ``mask_path`` (empty).

    Raises:
        UnknownSplitError: no split file, an unknown split name, or a listed scene folder missing.
    """
    root = Path(root)
    split_path = Path(split_file) if split_file is not None else find_split_file(root)
    if not split_path.is_absolute() and not split_path.is_file():
        split_path = root / split_path
    splits = read_split(split_path)
    test_keys = [k for k in splits if "test" in k]
    train_keys = [k for k in splits if "test" not in k]

    def chosen(requested: str | Sequence[str] | None, default: list[str], kind: str) -> list[str]:
        names = default if requested is None else ([requested] if isinstance(requested, str) else list(requested))
        unknown = [n for n in names if n not in splits]
        if unknown:
            raise UnknownSplitError(f"unknown {kind} split(s) {unknown}.", path=split_path,
                                    fix=f"choose from {sorted(splits)}")
        return names

    rows = []
    for split, keys in (("train", chosen(train_split, train_keys, "train")), ("test", chosen(test_split, test_keys, "test"))):
        for key in keys:
            for scene_id in splits[key]:
                scene_dir = root / scene_id
                if not scene_dir.is_dir():
                    raise UnknownSplitError(f"split {key!r} lists scene {scene_id!r}, which has no folder.",
                                            path=scene_dir, fix="re-download the missing scenes or fix the split file")
                metadata = read_scene_metadata(scene_dir)
                anomalous = int(metadata.object_labels.sum())
                rows.append({
                    "image_path": str(scene_dir),
                    "split": split,
                    "split_name": key,
                    "scene_id": scene_id,
                    "label_index": int(anomalous > 0),
                    "num_objects": metadata.num_objects,
                    "num_anomalous": anomalous,
                    "mask_path": "",
                })
    columns = ["image_path", "split", "split_name", "scene_id", "label_index", "num_objects", "num_anomalous", "mask_path"]
    return pd.DataFrame(rows, columns=columns)


class MultiViewSceneDataset(SamplesTableDataset):
    """Scenes of one split as :class:`SceneItem` objects.

    Args:
        samples: the samples table of :func:`scan_scenes`.
        split: keep the rows of this split (``None`` keeps all).
        num_views: views per scene at test time / that build the volume in training.
        view_sets: how many disjoint sets of ``num_views`` to draw (training: 2).
        random_views: draw new views at every access (training) instead of the seeded fixed ones.
        seed: seed of the fixed views.
        image_size, load_depth, load_masks: see :func:`anomalib_3d.data.scenes.load_scene`.
    """

    def __init__(
        self,
        samples: pd.DataFrame,
        split: str | None = None,
        *,
        num_views: int = 5,
        view_sets: int = 1,
        random_views: bool = False,
        seed: int = 0,
        image_size: tuple[int, int] | None = None,
        load_depth: bool = False,
        load_masks: bool = True,
        name: str = "multiview_scenes",
    ) -> None:
        super().__init__(samples, split, "classification", name)
        self.num_views = int(num_views)
        self.view_sets = int(view_sets)
        self.random_views = random_views
        self.seed = int(seed)
        self.image_size = tuple(image_size) if image_size is not None else None
        self.load_depth = load_depth
        self.load_masks = load_masks

    @property
    def collate_fn(self) -> Callable[[list[SceneItem]], SceneBatch]:
        return SceneBatch.collate

    def __getitem__(self, index: int) -> SceneItem:
        row = self.samples.iloc[index]
        scene_dir = Path(row.image_path)
        metadata = read_scene_metadata(scene_dir)
        count = self.num_views * self.view_sets
        views = select_views(metadata.num_views, count, row.scene_id, None if self.random_views else self.seed,
                             path=scene_dir)
        source = [i < self.num_views for i in range(count)]
        return load_scene(
            scene_dir,
            views,
            metadata=metadata,
            image_size=self.image_size,
            load_depth=self.load_depth,
            load_masks=self.load_masks,
            source_views=source,
        )


class MultiViewScenes(AnomalibDataModule):
    """Multi-view multi-object scenes for scene-level (odd-one-out) anomaly detection.

    Args:
        root: dataset root: the scene folders and ``<dataset>-split.json``; with ``synthetic``
            the cache folder the synthetic scenes are generated into.
        split_file: the split file (default: the single ``*-split.json`` under the dataset root).
        train_split: split name(s) used for training (default: every key without ``"test"``).
        test_split: split name(s) used for testing (default: every key containing ``"test"``;
            e.g. ``"unseen-test"`` for the held-out classes only).
        num_views: views per scene (5, as in the paper).
        train_view_sets: training draws ``train_view_sets * num_views`` views; the first
            ``num_views`` build the volume, the rest supervise the rendering (2, as in the paper).
        image_size: ``(H, W)`` to resize views to (``None``: as stored, 256 x 256).
        load_depth: also load depth maps (``depth_exr/*.exr`` of the release or ``depth/*.npy``); needed by
            the contrastive and canonical teachers and the neighbour-median baseline of Odd-One-Out.
        load_masks: load silhouettes, object segmentations and per-view anomaly masks.
        synthetic: ``True`` or a dict of :func:`~anomalib_3d.data.synthetic.scenes.generate_scene_dataset`
            parameters: generate the embedded synthetic scenes under ``root`` first.
        train_batch_size, eval_batch_size, num_workers, val_split_mode, val_split_ratio: as in
            anomalib (validation defaults to the test set).
        seed: seed of the fixed test views (and of anomalib's validation splitting).

    The test set is exactly the test split(s) of the split file: anomalib's test-split logic
    (moving normal *images* between train and test) does not apply to scenes, whose training
    split holds odd objects too, so it is switched off.
    """

    def __init__(
        self,
        root: str | Path = "./datasets/MultiViewScenes",
        split_file: str | Path | None = None,
        train_split: str | list[str] | None = None,
        test_split: str | list[str] | None = None,
        num_views: int = 5,
        train_view_sets: int = 2,
        image_size: tuple[int, int] | None = None,
        load_depth: bool = False,
        load_masks: bool = True,
        synthetic: bool | dict[str, Any] = False,
        train_batch_size: int = 2,
        eval_batch_size: int = 2,
        num_workers: int = 0,
        val_split_mode: ValSplitMode | str = ValSplitMode.SAME_AS_TEST,
        val_split_ratio: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__(
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            val_split_mode=val_split_mode,
            val_split_ratio=val_split_ratio,
            test_split_mode=TestSplitMode.NONE,
            test_split_ratio=None,
            seed=seed,
        )
        if num_views < 1 or train_view_sets < 1:
            msg = f"num_views and train_view_sets must be >= 1, got {num_views} and {train_view_sets}."
            raise ValueError(msg)
        self.root = Path(root)
        self.split_file = split_file
        self.train_split = train_split
        self.test_split = test_split
        self.num_views = int(num_views)
        self.train_view_sets = int(train_view_sets)
        self.image_size = tuple(image_size) if image_size is not None else None
        self.load_depth = load_depth
        self.load_masks = load_masks
        self.view_seed = int(seed)
        if synthetic is True:
            self.synthetic_params: dict[str, Any] | None = {}
        elif isinstance(synthetic, dict):
            self.synthetic_params = dict(synthetic)
        elif synthetic is False or synthetic is None:
            self.synthetic_params = None
        else:
            msg = f"synthetic must be a bool or a dict of generation parameters, got {synthetic!r}."
            raise TypeError(msg)
        if self.synthetic_params is not None:
            from anomalib_3d.data.synthetic.scenes import scene_dataset_params

            # Fills defaults and rejects unknown keys before anything is generated.
            self.synthetic_params = scene_dataset_params(**self.synthetic_params)
        self.category = "synthetic_scenes" if self.synthetic_params is not None else self.root.name

    @property
    def dataset_root(self) -> Path:
        """Where the scenes are read from (a parameter-named cache folder for synthetic scenes)."""
        if self.synthetic_params is None:
            return self.root
        key = hashlib.sha1(json.dumps(self.synthetic_params, sort_keys=True).encode()).hexdigest()[:10]
        return self.root / f"scenes_{key}"

    def prepare_data(self) -> None:
        """Generate the synthetic scenes once (no-op for real data or when cached)."""
        if self.synthetic_params is None:
            return
        from anomalib_3d.data.synthetic.scenes import generate_scene_dataset

        generate_scene_dataset(self.dataset_root, **self.synthetic_params)

    def scan(self) -> pd.DataFrame:
        """The samples table of the selected splits (see :func:`scan_scenes`)."""
        self.prepare_data()  # cheap when cached; makes setup() work without a Trainer too
        return scan_scenes(self.dataset_root, self.split_file, self.train_split, self.test_split)

    def _make_dataset(self, samples: pd.DataFrame, split: str) -> MultiViewSceneDataset:
        training = split == "train"
        return MultiViewSceneDataset(
            samples,
            split,
            num_views=self.num_views,
            view_sets=self.train_view_sets if training else 1,
            random_views=training,
            seed=self.view_seed,
            image_size=self.image_size,
            load_depth=self.load_depth,
            load_masks=self.load_masks,
            name=self.name,
        )

    def _create_test_split(self) -> None:
        """The split file defines the test scenes; nothing is moved between train and test."""

    def _setup(self, _stage: str | None = None) -> None:
        samples = self.scan()
        self.samples = samples
        self.train_data = self._make_dataset(samples, "train")
        self.test_data = self._make_dataset(samples, "test")
