"""3DzAL as an anomalib model (Lightning module).

Paper: "Towards Zero-shot 3D Anomaly Localization" (3DzAL). See ``README.md`` for every component,
its switch, the choices made where the paper text lost a number, and measured results.

Fitting: the datamodule's training split holds the *normal* data of one (non-target) category; the
task-irrelevant samples (pseudo-anomaly material) come from, in this order, the ``task_irrelevant``
argument, the ``task_irrelevant_sources`` of a :class:`~anomalib_3d.data.datamodules.zero_shot.ZeroShot3D` datamodule, or the
built-in organized ``Synthetic3D`` parts that are not the target. f_theta and g_phi train on normal
vs pseudo-anomalous patches; the memory bank is (re)built from the training split with the final
weights before any validation / test / prediction.

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_3d_plugins.threedzal import ThreeDzAL
    >>> model = ThreeDzAL.small()
    >>> Engine().train(model, datamodule=...)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from anomalib.models.components import AnomalibModule
from lightning.pytorch.utilities.types import STEP_OUTPUT

from anomalib_3d.data.dataclasses import PointCloudBatch
from anomalib_3d.data.zero_shot import foreground_mask, read_organized_scans, source_dicts, task_irrelevant_dataset
from anomalib_3d.models import PointCloudModelMixin, PointScores, TrainingStatisticsMixin
from anomalib_3d.settings import switches_from

from .settings import ThreeDzALSettings
from .torch_model import OrganizedCloud, ThreeDzALModel, ThreeDzALPrediction

logger = logging.getLogger(__name__)

#: CPU preset (``configs/models/threedzal_small.yaml``): 128² grid, 8-pixel patches (16 x 16 patches),
#: 16-d f_theta, tiny PointNet++, small random generator CNN, no RGB, FPFH radius for ~10 cm parts,
#: whole-grid pseudo-defects with count-matched positives.
SMALL_PRESET: dict[str, Any] = {
    "grid_size": 128,
    "patch_size": 8,
    "rgb_backbone": None,
    "fpfh_radius": 0.006,
    "fpfh_normal_k": 16,
    "feature_dim": 16,
    "pointnet_centroids": 8,
    "pointnet_group_size": 8,
    "pointnet_widths": (16, 32),
    "generator_backbone": "small",
    "top_fraction": 0.01,
    "region_size": 24,
    "pseudo_anomalies": "grid",
    "count_matched": True,
    "positives_per_sample": 32,
    "blur_sigma": 2.0,
    # chosen on the validation held-out categories knob and ring (README, table V):
    "learned_weight": 0.5,
    "depth_consistent": True,
    "perturbation_direction": "odin",
    "max_epochs": 100,
    "learning_rate": 2e-3,
    "max_task_irrelevant": 24,
}


# Plain dicts before the hyper-parameters are saved: checkpoints stay weights_only-safe.
@switches_from(ThreeDzALSettings, prepare={"task_irrelevant": source_dicts})
class ThreeDzAL(TrainingStatisticsMixin, PointCloudModelMixin, AnomalibModule):
    """3DzAL: zero-shot 3D anomaly localization from task-irrelevant data.

    Every switch of the network, pseudo-anomalies, losses, memory bank and scoring is a field of
    :class:`~anomalib_3d_plugins.threedzal.settings.ThreeDzALSettings` (documented there, same name
    and default here: ``--model.grid_size 128``). The arguments of the fit itself:

    Args:
        task_irrelevant: DataSource-like dicts of task-irrelevant samples (see module docstring).
        max_task_irrelevant: at most this many task-irrelevant samples are used (evenly spread).
        learning_rate: Adam learning rate.
        max_epochs: training epochs.
        remove_background: drop the support plane of raw ``DepthBatch`` inputs (anomalib's MVTec3D).
        seed: seeds everything random in the model (a settings field too).
        **kwargs: anomalib's components (``pre_processor``, ``post_processor``, ``evaluator``,
            ``visualizer``), passed to ``AnomalibModule``.
    """

    requires_organized = True  # scores organized grids only; predict refuses unorganized clouds by name

    def init_from_settings(
        self,
        settings: ThreeDzALSettings,
        task_irrelevant: list[dict[str, Any]] | dict[str, Any] | None = None,
        max_task_irrelevant: int = 64,
        learning_rate: float = 1e-3,
        max_epochs: int = 10,
        remove_background: bool = True,
    ) -> None:
        """Build the network from ``settings`` and keep the other arguments (the class docstring)."""
        self.model = ThreeDzALModel(settings)
        self.task_irrelevant = task_irrelevant
        self.max_task_irrelevant = int(max_task_irrelevant)
        self.learning_rate = float(learning_rate)
        self.max_epochs = int(max_epochs)
        self.remove_background = remove_background
        self.seed = settings.seed
        self._statistics_stale = True  # the memory bank (TrainingStatisticsMixin)
        #: paths of every sample read for fitting (normal training + task-irrelevant), for audits.
        self.fit_paths: list[str] = []

    @classmethod
    def small(cls, **overrides: Any) -> ThreeDzAL:  # noqa: ANN401
        """The CPU preset (see :data:`SMALL_PRESET`)."""
        return cls(**{**SMALL_PRESET, **overrides})

    # ------------------------------------------------------------------------------------------
    # anomalib contract
    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """Epochs of f_theta / g_phi; one validation after the last (the bank is built then)."""
        epochs = self.max_epochs if self.model.trainable else 1
        return {"max_epochs": epochs, "num_sanity_val_steps": 0, "check_val_every_n_epoch": max(1, epochs),
                "gradient_clip_val": 0}

    def configure_optimizers(self) -> torch.optim.Optimizer | None:
        """Adam on f_theta and g_phi (None for the BTF-style configuration: nothing to learn)."""
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        if not self.model.trainable or not parameters:
            return None
        return torch.optim.Adam(parameters, lr=self.learning_rate)

    # ------------------------------------------------------------------------------------------
    # data
    def _datamodule(self) -> Any:  # noqa: ANN401
        """The datamodule of the trainer this module is attached to (``None`` when there is none)."""
        try:
            return self.trainer.datamodule
        except RuntimeError:  # not attached to a trainer
            return None

    def task_irrelevant_dataset(self) -> Any:  # noqa: ANN401
        """The task-irrelevant samples (see :func:`anomalib_3d.data.zero_shot.task_irrelevant_dataset`)."""
        return task_irrelevant_dataset(self.task_irrelevant, self._datamodule(), self.model.settings.grid_size)

    def load_task_irrelevant(self) -> int:
        """Read (at most ``max_task_irrelevant``) task-irrelevant samples and compute their interest regions."""
        dataset = self.task_irrelevant_dataset()
        scans = read_organized_scans(dataset, self.max_task_irrelevant, self.model.settings.grid_size)
        if not scans:
            msg = "no task-irrelevant sample found; give task_irrelevant sources or set adding_ratio: 0."
            raise ValueError(msg)
        self.fit_paths.extend(scan.path for scan in scans)
        found = self.model.set_task_irrelevant([(scan.xyz, scan.valid) for scan in scans])
        logger.info("3DzAL: %d interest regions from %d task-irrelevant samples (categories: %s).",
                    found, len(scans), ", ".join(sorted(set(dataset.samples.category))))
        return found

    def setup(self, stage: str | None = None) -> None:
        """On ``fit``: compute the task-irrelevant interest regions (adding / attach material)."""
        if stage == "fit" and self.model.uses_task_irrelevant and not self.model.regions:
            self.load_task_irrelevant()

    # ------------------------------------------------------------------------------------------
    # batches → organized clouds
    def organized_clouds(self, batch: Any, keyed: bool = False) -> tuple[PointCloudBatch, list[OrganizedCloud]]:  # noqa: ANN401
        """The batch as points and as clouds on the model grid (support plane dropped for raw ``DepthBatch``)."""
        points = self.as_point_batch(batch)
        if points.grid_index is None or points.grid_shape is None:
            msg = ("3DzAL needs organized clouds (grid_index / grid_shape): MVTec 3D-AD, anomalib's MVTec3D, "
                   "or Synthetic3D with layout: mvtec3d.")
            raise TypeError(msg)
        device = points.points.device
        batch_index = points.batch_index.to(device)
        grid_index = points.grid_index.to(device)
        foreground = None
        if getattr(batch, "depth_map", None) is not None and self.remove_background:
            foreground = foreground_mask(points).to(device)
        keys = None
        if keyed and points.point_path is not None:
            keys = [str(p) for p in points.point_path]
        image = None if points.image is None else points.image.as_subclass(torch.Tensor).to(device)
        clouds = self.model.organize(points.points, batch_index, grid_index, points.grid_shape, points.batch_size,
                                     image=image, foreground=foreground, keys=keys)
        return points, clouds

    # ------------------------------------------------------------------------------------------
    # steps
    def training_step(self, batch: Any, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Losses of f_theta / g_phi on normal clouds + their pseudo-anomalies (nothing when not trainable)."""
        del args, kwargs
        points, clouds = self.organized_clouds(batch, keyed=True)
        if points.point_path is not None:
            self.fit_paths.extend(str(p) for p in points.point_path)
        self.mark_statistics_stale()
        if not self.model.trainable:
            return None
        losses = self.model.training_losses(clouds)
        if "loss" not in losses:
            return None
        for name, value in losses.items():
            self.log(f"train_{name}", value, prog_bar=name == "loss", batch_size=points.batch_size)
        return losses["loss"]

    @torch.no_grad()
    def build_memory_bank(self, dataloader: Any = None) -> int:  # noqa: ANN401
        """Features of the training split (final weights) → coreset memory bank.

        Args:
            dataloader: batches to build from; default: this rank's share of the training split
                (:meth:`~anomalib_3d.models.TrainingStatisticsMixin.training_batches`).

        Returns:
            number of training patch features (over all ranks).
        """
        batches = list(dataloader) if dataloader is not None else self.training_batches()
        if not batches:
            msg = "no training data to build the memory bank from: fit on a datamodule, or pass a dataloader."
            raise RuntimeError(msg)
        was_training = self.model.training
        self.model.eval()
        try:
            count = self._fit_bank(batches)
        finally:
            self.model.train(was_training)
        self._statistics_stale = False
        return count

    @torch.no_grad()
    def fit_training_statistics(self, batches: list[Any]) -> None:
        """The coreset memory bank of the training patch features (TrainingStatisticsMixin)."""
        self._fit_bank(batches)

    def training_statistics_fitted(self) -> bool:
        """Whether the memory bank was fitted (or loaded)."""
        return bool(self.model.memory_bank.is_fitted)

    def _fit_bank(self, batches: list[Any]) -> int:
        clouds = []
        for batch in batches:
            batch = batch.to(self.device) if hasattr(batch, "to") else batch
            points, organized = self.organized_clouds(batch, keyed=True)
            if points.point_path is not None:
                self.fit_paths.extend(str(p) for p in points.point_path)
            clouds.extend(organized)
        if all(c.key is not None for c in clouds):
            # The coreset depends on the feature order: make the bank independent of the shuffling.
            clouds.sort(key=lambda c: c.key)
        count = self.model.fit_memory_bank(clouds)
        logger.info("3DzAL memory bank: %d of %d training patch features kept.", self.model.memory_bank.bank.shape[0], count)
        return count

    def predict_batch(self, batch: Any) -> tuple[Any, ThreeDzALPrediction]:  # noqa: ANN401
        """Scores of a batch: ``(batch with anomaly_map / pred_score, raw prediction)``."""
        points, prediction = self._score(batch)
        return self.write_predictions(batch, points, prediction.anomaly_map, prediction.pred_score), prediction

    def predict_points(self, batch: Any) -> PointScores:  # noqa: ANN401
        """Per-point and object scores of a batch (bank distance, normalcy classifier, learned feature)."""
        points, prediction = self._score(batch)
        return PointScores(points, prediction.anomaly_map, prediction.pred_score)

    def _score(self, batch: Any) -> tuple[PointCloudBatch, ThreeDzALPrediction]:  # noqa: ANN401
        points, clouds = self.organized_clouds(batch)
        return points, self.model.predict_clouds(clouds)


__all__ = ["SMALL_PRESET", "ThreeDzAL"]
