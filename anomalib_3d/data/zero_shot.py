"""Zero-shot fitting data: what a zero-shot model learns from, never its target.

A zero-shot model never fits on its target. Two kinds of fitting data exist here:

* PointAD's **auxiliary** set: annotated samples (good and defective, with point labels) of other
  categories or datasets, on which it learns its prompts (:func:`auxiliary_sources`,
  :func:`auxiliary_loader`);
* 3DzAL's **task-irrelevant** samples: scans of other categories, raw material for its
  pseudo-anomalies (:func:`task_irrelevant_dataset`, :func:`read_organized_scans`).

Both are read from :class:`~anomalib_3d.data.datamodules.zero_shot.DataSource` slices and pass the
project's one leak check, :func:`~anomalib_3d.data.datamodules.zero_shot.check_zero_shot`, against
the target the model is evaluated on, exactly as the ``ZeroShot3D`` protocol datamodule does. The
sources, their spellings and the check belong to that protocol module (they are read with our
datamodules' scanners); this module builds on it what a model asks for, so the data flows one way:
scanners → sources and check → fitting data → models.

How the fit reaches the auxiliary set
-------------------------------------
Lightning reads the fitting data from exactly one place: the attached datamodule's
``train_dataloader`` hook when a datamodule is given (anomalib's CLI and ``Engine`` always give
one), else the ``train_dataloaders`` passed to ``fit``, else the model's own ``train_dataloader``
hook. A zero-shot model states its fitting data through that last, documented hook. For a fit
through a datamodule that we cannot change (anomalib's ``MVTec3D``), the model adds the
:class:`ModelTrainData` callback (through ``configure_callbacks``): in the ``setup`` stage, which
Lightning runs after the datamodule's ``setup`` and before the fit loop asks for data, it asks the
model for its loader once and lets the datamodule's ``train_dataloader`` hook answer with it for
the duration of the fit (given back in ``teardown``, or in ``on_exception`` when the fit fails).
The target's train split is never read. Dataloaders passed straight to ``fit`` (no datamodule) are
taken as the fitting data, as Lightning defines it, and nothing is re-routed: no trainer or loop
state is touched, only public hooks. The other routes are worse: the model's hook alone is
ignored as soon as a datamodule is attached, anomalib's CLI cannot pass loaders to ``fit``, and
replacing the fit loop's data source would reach into Lightning's private state.

The foreground of organized scans (:func:`foreground_mask`: the support plane removed, BTF's
way) is here too: both zero-shot models drop the plane of anomalib's raw depth inputs the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, NamedTuple

import pandas as pd
import torch
from lightning.pytorch import Callback
from torch import Tensor
from torch.utils.data import DataLoader

from anomalib_3d.data.dataclasses import PointCloudBatch
from anomalib_3d.data.datamodules.zero_shot import as_sources, check_zero_shot, read_sources, source_dict, source_dicts
from anomalib_3d.data.background import clean_organized_scan
from anomalib_3d.data.datasets import PointCloudDataset

logger = logging.getLogger(__name__)

#: Where the built-in synthetic parts are generated when no source names a root.
DEFAULT_SYNTHETIC_ROOT = "./datasets/Synthetic3D"
#: Auxiliary categories of the built-in synthetic fallback (when the target is not synthetic).
DEFAULT_AUXILIARY_CATEGORIES = ("bottle", "cup", "gear", "bracket")
#: A plane-only scan keeps all its points: fewer foreground points than this means "no object found".
_MIN_FOREGROUND_POINTS = 16


# ----------------------------------------------------------------------------------------------
# the target
def target_categories(datamodule: object) -> list[str]:
    """The categories a datamodule evaluates: a ``ZeroShot3D``'s test categories, else its
    ``categories`` / ``category`` (anomalib's datamodules); ``[]`` without a datamodule."""
    if datamodule is None:
        return []
    if hasattr(datamodule, "test_categories"):
        return sorted(datamodule.test_categories())
    categories = getattr(datamodule, "categories", None)
    if categories:
        return list(categories)
    category = getattr(datamodule, "category", None)
    return [category] if isinstance(category, str) else []


def target_samples(datamodule: object) -> pd.DataFrame | None:
    """The samples a datamodule evaluates on (its set-up test and validation data), or ``None``."""
    frames = []
    for name in ("test_data", "val_data"):
        samples = getattr(getattr(datamodule, name, None), "samples", None)
        if samples is not None:
            frames.append(samples)
    return pd.concat(frames, ignore_index=True) if frames else None


# ----------------------------------------------------------------------------------------------
# PointAD's auxiliary set
def auxiliary_sources(explicit: Sequence[dict[str, Any]] | None, datamodule: object) -> list[dict[str, Any]]:
    """The auxiliary sources, in this order: ``explicit``; the ``fit_sources`` of a
    :class:`~anomalib_3d.data.datamodules.zero_shot.ZeroShot3D` target; good + defective samples
    (test split) of the built-in synthetic parts, avoiding the target's categories when the target
    is ``Synthetic3D`` too."""
    if explicit is not None:
        return list(explicit)
    fit_sources = getattr(datamodule, "fit_sources", None)
    if fit_sources:
        return [source_dict(source) for source in fit_sources]
    categories = list(DEFAULT_AUXILIARY_CATEGORIES)
    if type(datamodule).__name__ == "Synthetic3D":
        from anomalib_3d.data.synthetic import list_categories

        target = set(target_categories(datamodule))
        categories = [c for c in list_categories() if c not in target][:4]
    return [{"dataset": "synthetic3d", "root": DEFAULT_SYNTHETIC_ROOT, "categories": categories, "split": "test",
             "exclude": [], "options": {}}]


def auxiliary_loader(
    sources: Sequence[object],
    *,
    datamodule: object = None,
    batch_size: int = 4,
    num_workers: int = 0,
    grid_size: int | None = None,
    seed: int = 0,
    keep_largest_cluster: bool = False,
) -> DataLoader:
    """The shuffled loader of the auxiliary (annotated, fitting) samples.

    Args:
        sources: the auxiliary :class:`~anomalib_3d.data.datamodules.zero_shot.DataSource` slices (any spelling).
        datamodule: the target; its set-up test / validation samples may not be auxiliary samples.
        batch_size, num_workers: of the loader.
        grid_size: organized sources are nearest-resized to ``grid_size`` x ``grid_size`` (``None`` keeps them).
        seed: seed of the loader's own shuffling generator (the global RNG is not touched).
        keep_largest_cluster: organized sources keep only their largest DBSCAN cluster after the
            plane is removed (:func:`~anomalib_3d.data.background.clean_organized_scan`).

    Raises:
        ValueError: the sources hold no sample, or an auxiliary sample is a target sample.
    """
    sources = as_sources(sources)
    frame = read_sources(sources)
    if frame.empty:
        msg = f"the auxiliary sources {[asdict(s) for s in sources]} hold no samples."
        raise ValueError(msg)
    check_zero_shot(frame, target_samples(datamodule), role="auxiliary")
    grid = None if grid_size is None else (grid_size, grid_size)
    dataset = PointCloudDataset(frame, split=None, remove_background=True, keep_largest_cluster=keep_largest_cluster,
                                grid_size=grid, name="auxiliary")
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        collate_fn=PointCloudBatch.collate,
        generator=torch.Generator().manual_seed(seed),
    )
    logger.info(
        "Zero-shot fit on the auxiliary set: %d samples (%d anomalous) from %s. "
        "The target datamodule's own train split is NOT used (zero-shot).",
        len(frame), int(frame.label_index.astype(int).sum()),
        ", ".join(f"{s.dataset}:{'+'.join(s.categories)}/{s.split}" for s in sources),
    )
    return loader


class ModelTrainData(Callback):
    """A fit through a datamodule reads the model's own ``train_dataloader`` (the datamodule's
    train split is never read); see the module docstring for why this is the route.

    The model's loader is asked for once per fit, in ``setup``, so its shuffling generator carries
    on across epochs as with any loader; ``teardown`` (or ``on_exception``, when the fit fails)
    gives the datamodule its own hook back.
    """

    def __init__(self) -> None:
        self._routed: tuple[object, object] | None = None

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:  # noqa: ANN401
        """Route the datamodule's training hook to the model's loader (fit only)."""
        datamodule = getattr(trainer, "datamodule", None)
        if stage != "fit" or datamodule is None:
            return
        loader = pl_module.train_dataloader()
        self._routed = (datamodule, datamodule.__dict__.get("train_dataloader"))
        datamodule.train_dataloader = lambda: loader

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:  # noqa: ANN401, ARG002
        """Give the datamodule its own training hook back after the fit."""
        if stage == "fit":
            self._give_back()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:  # noqa: ANN401, ARG002
        """Give the hook back when the fit fails (Lightning runs no ``teardown`` then)."""
        self._give_back()

    def _give_back(self) -> None:
        if self._routed is None:
            return
        datamodule, previous = self._routed
        if previous is None:
            datamodule.__dict__.pop("train_dataloader", None)
        else:
            datamodule.train_dataloader = previous
        self._routed = None


# ----------------------------------------------------------------------------------------------
# 3DzAL's task-irrelevant samples
class OrganizedScan(NamedTuple):
    """One scan on a ``(H, W)`` grid.

    Attributes:
        path: the cloud file.
        xyz: ``(H, W, 3)`` float coordinates, zero where the grid has no point.
        valid: ``(H, W)`` bool, where the grid has a point.
    """

    path: str
    xyz: Tensor
    valid: Tensor


def task_irrelevant_dataset(
    explicit: Sequence[dict[str, Any]] | None,
    datamodule: object,
    grid_size: int,
) -> PointCloudDataset:
    """The task-irrelevant samples: ``explicit`` sources; else the ``task_irrelevant_sources`` of a
    ``ZeroShot3D`` datamodule; else organized synthetic parts (train split, 6 per category) of four
    categories that are neither the target's nor the fitting datamodule's.

    Raises:
        ValueError: a task-irrelevant sample holds a target category or is a target sample.
    """
    grid = (grid_size, grid_size)
    if explicit is None and getattr(datamodule, "task_irrelevant_sources", None):
        return datamodule.task_irrelevant_dataset(grid)
    target = set(target_categories(datamodule))
    sources = explicit
    if sources is None:
        from anomalib_3d.data.synthetic import list_categories

        fitting = set(getattr(datamodule, "categories", []) or [])
        categories = [c for c in list_categories() if c not in target | fitting][:4]
        sources = [{"dataset": "synthetic3d", "root": DEFAULT_SYNTHETIC_ROOT, "categories": categories,
                    "split": "train", "options": {"layout": "mvtec3d", "num_train": 6, "image_size": list(grid)}}]
    frame = read_sources(sources)
    check_zero_shot(frame, target_samples(datamodule), target_categories=target, role="task-irrelevant")
    return PointCloudDataset(frame, None, remove_background=True, grid_size=grid, name="task_irrelevant")


def read_organized_scans(dataset: Any, max_samples: int, grid_size: int) -> list[OrganizedScan]:  # noqa: ANN401
    """At most ``max_samples`` samples of ``dataset``, evenly spread over it, on a ``grid_size``² grid.

    Args:
        dataset: a dataset of organized :class:`~anomalib_3d.data.dataclasses.PointCloudItem` s.
        max_samples: how many to read at most.
        grid_size: grids of another size are nearest-resized to it.
    """
    from anomalib_3d.data.adapters import resize_organized

    total = len(dataset)
    if total == 0 or max_samples <= 0:
        return []
    count = min(total, max_samples)
    scans = []
    for index in torch.linspace(0, total - 1, count).round().long().unique().tolist():
        item = dataset[index]
        height, width = int(item.grid_shape[0]), int(item.grid_shape[1])
        xyz = torch.zeros(height * width, 3)
        xyz[item.grid_index] = item.points.float()
        xyz = xyz.view(height, width, 3)
        if (height, width) != (grid_size, grid_size):
            xyz = resize_organized(xyz, (grid_size, grid_size))
        scans.append(OrganizedScan(str(item.point_path), xyz, (xyz != 0).any(-1)))
    return scans


# ----------------------------------------------------------------------------------------------
# foreground of organized scans
def foreground_mask(points: PointCloudBatch, *, largest_cluster: bool = False) -> Tensor:
    """``(N,)`` bool on the points' device: points off the support plane of their organized grid.

    The plane is found per cloud with :func:`~anomalib_3d.data.background.remove_background_plane`
    (BTF's RANSAC on the border); a cloud where (almost) nothing is left keeps every point.

    Args:
        points: an organized batch (``grid_index`` and ``grid_shape`` set).
        largest_cluster: also drop every fragment outside the largest DBSCAN cluster
            (:func:`~anomalib_3d.data.background.clean_organized_scan`, the PointAD authors' cleaning).
    """
    keep = torch.ones(points.points.shape[0], dtype=torch.bool, device=points.points.device)
    shape = points.grid_shape.reshape(-1, 2)
    ptr = points.ptr.tolist()
    for cloud in range(points.batch_size):
        lo, hi = ptr[cloud], ptr[cloud + 1]
        height, width = (int(s) for s in shape[cloud])
        grid = torch.zeros(height * width, 3, dtype=torch.float32)
        index = points.grid_index[lo:hi].cpu()
        grid[index] = points.points[lo:hi].detach().float().cpu()
        mask = clean_organized_scan(grid.view(height, width, 3).numpy(), largest_cluster=largest_cluster)
        mask = torch.from_numpy(mask)
        cloud_keep = mask.reshape(-1)[index].to(keep.device)
        if int(cloud_keep.sum()) >= _MIN_FOREGROUND_POINTS:
            keep[lo:hi] = cloud_keep
    return keep


__all__ = [
    "DEFAULT_AUXILIARY_CATEGORIES",
    "DEFAULT_SYNTHETIC_ROOT",
    "ModelTrainData",
    "OrganizedScan",
    "auxiliary_loader",
    "auxiliary_sources",
    "foreground_mask",
    "read_organized_scans",
    "source_dicts",
    "target_categories",
    "target_samples",
    "task_irrelevant_dataset",
]
