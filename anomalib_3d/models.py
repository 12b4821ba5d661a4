"""What every anomalib-3d lightning model shares: batch adaptation and anomalib components.

anomalib's ``get_model("name")`` only scans *direct* subclasses of ``AnomalibModule``, so a
plugin is declared as ``class IMRNet(PointCloudModelMixin, AnomalibModule)`` — the mixin brings
the shared behaviour without standing between the plugin and ``AnomalibModule``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from anomalib import LearningType
from anomalib.pre_processing import PreProcessor
from lightning.pytorch import Callback
from lightning.pytorch.utilities.types import STEP_OUTPUT

from anomalib_3d._lazy import lazy_exports
from anomalib_3d.data.adapters import (
    depth_batch_to_point_batch,
    points_to_pixel_map,
    resize_nearest,
)
from anomalib_3d.data.dataclasses import PointCloudBatch
from anomalib_3d.data.errors import PointCloudError

if TYPE_CHECKING:
    from anomalib.metrics import Evaluator
    from anomalib.visualization import Visualizer
    from lightning.pytorch import LightningModule, Trainer

logger = logging.getLogger(__name__)


def _asked_on_command_line(option: str) -> bool:
    return any(arg == option or arg.startswith(f"{option}=") for arg in sys.argv[1:])


class ValidateAfterLastEpoch(Callback):
    """Validate once, after the last training epoch, unless another cadence was asked for.

    Our models validate only to fit thresholds and normalisation statistics, which need the
    trained model; Lightning's default (validate after *every* epoch) would score the whole
    validation split once per epoch for nothing. anomalib's ``trainer_arguments`` cannot express
    "a default the user may override" (the model's value always wins), hence this callback, which
    leaves the trainer alone when ``check_val_every_n_epoch`` is not Lightning's default of 1 or
    when ``--trainer.check_val_every_n_epoch`` is on the command line (so an explicit 1 is
    honoured there too; through the Python API, 1 reads as "not set").
    """

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        del pl_module
        max_epochs = trainer.max_epochs
        if trainer.check_val_every_n_epoch != 1 or _asked_on_command_line("--trainer.check_val_every_n_epoch"):
            return
        if max_epochs is None or max_epochs <= 1:
            return
        trainer.check_val_every_n_epoch = max_epochs
        logger.info(
            "Validating once, after epoch %d (thresholds need the trained model); "
            "pass --trainer.check_val_every_n_epoch N to validate more often.",
            max_epochs,
        )


class PointCloudModelMixin:
    """Shared behaviour of the 3D models. Mix in *before* ``AnomalibModule``.

    * accepts :class:`PointCloudBatch` and anomalib's own ``DepthBatch`` (``MVTec3D``): the
      latter is turned into points by :func:`as_point_batch` and the predictions are written back
      as pixel maps by :func:`write_predictions`, so anomalib's pixel metrics and visualizer work;
    * pre-processor without image transforms (points are never resized; RGB stays aligned);
    * the papers' metrics (object I-AUROC / AP, point P-AUROC, AUPRO) and the 3D visualizer.
    """

    @property
    def learning_type(self) -> LearningType:
        """``ONE_CLASS``, so that anomalib's Engine runs ``fit``: the one-class models learn from normal
        training samples; the zero-shot ones (PointAD, 3DzAL) never see the target but learn from
        their own fitting data, and the Engine skips ``fit`` for ``ZERO_SHOT`` models."""
        return LearningType.ONE_CLASS

    @staticmethod
    def configure_pre_processor(image_size: tuple[int, int] | None = None) -> PreProcessor:
        """No image transform (resizing would break the point ↔ pixel correspondence); records the
        reading options of the fitted data for predict (:class:`~anomalib_3d.data.predict.PointCloudPreProcessor`)."""
        from anomalib_3d.data.predict.preprocessing import PointCloudPreProcessor

        del image_size
        return PointCloudPreProcessor()

    @staticmethod
    def configure_evaluator() -> Evaluator:
        from anomalib_3d.metrics import default_evaluator

        return default_evaluator()

    @classmethod
    def configure_visualizer(cls) -> Visualizer:
        from anomalib_3d.visualization import PointCloudVisualizer

        return PointCloudVisualizer()

    def configure_callbacks(self) -> Sequence[Callback] | Callback:
        """anomalib's component callbacks, :class:`ValidateAfterLastEpoch`, the repair of anomalib
        2.7's depth datamodules under pandas 3 (:class:`~anomalib_3d.data.adapters.DepthDataRepair`),
        the fault handling (:class:`~anomalib_3d.runtime.callback.FaultGuard`) and, after the
        post-processor, the predict outputs (:class:`~anomalib_3d.visualization.predictions.PredictionWriter`)."""
        from anomalib_3d.data.adapters import DepthDataRepair
        from anomalib_3d.runtime.callback import FaultGuard
        from anomalib_3d.visualization.predictions import PredictionWriter

        callbacks = super().configure_callbacks()  # type: ignore[misc]
        callbacks = list(callbacks) if isinstance(callbacks, Sequence) else [callbacks]
        return [*callbacks, ValidateAfterLastEpoch(), DepthDataRepair(), FaultGuard(), PredictionWriter()]

    def check_normal(self, point_batch: PointCloudBatch, why: str) -> None:
        """Refuse anomalous clouds in a training batch, naming them (one-class models).

        Args:
            point_batch: the training batch.
            why: what the model does with normal samples, for the message.
        """
        labels = point_batch.gt_label
        if labels is None or not bool(labels.any()):
            return
        bad = labels.nonzero().flatten().tolist()
        paths = point_batch.point_path or []
        names = [paths[i] if i < len(paths) else f"cloud {i}" for i in bad]
        raise PointCloudError(
            f"the training split holds anomalous clouds ({len(bad)} in this batch: {names[:3]}); "
            f"{type(self).__name__} {why}.",
            fix="move anomalous samples to the test split (anomalib's datamodules do this by construction)",
        )

    @staticmethod
    def as_point_batch(batch: Any) -> PointCloudBatch:  # noqa: ANN401
        """The batch as points: a :class:`PointCloudBatch` as is, a ``DepthBatch`` converted."""
        if isinstance(batch, PointCloudBatch):
            return batch
        if getattr(batch, "depth_map", None) is not None:
            return depth_batch_to_point_batch(batch)
        msg = (
            f"{type(batch).__name__} carries no 3D data. anomalib-3d models take PointCloudBatch "
            "(our datamodules) or DepthBatch with organized xyz (anomalib's MVTec3D)."
        )
        raise TypeError(msg)

    @staticmethod
    def write_predictions(
        batch: Any,  # noqa: ANN401
        point_batch: PointCloudBatch,
        anomaly_map: torch.Tensor,
        pred_score: torch.Tensor,
    ) -> Any:  # noqa: ANN401
        """Put per-point scores and object scores into the batch anomalib will post-process.

        Args:
            batch: the batch the step received.
            point_batch: its point view (``batch`` itself for point batches).
            anomaly_map: (ΣN,) per-point scores.
            pred_score: (B,) object scores.

        Returns:
            ``batch`` updated: per-point ``anomaly_map`` for point batches; for a ``DepthBatch``
            an (B, H, W) pixel map (pixels without a point get the cloud's minimum score) at the
            resolution of its ``gt_mask`` (or of the xyz grid).
        """
        if batch is point_batch:
            return batch.update(anomaly_map=anomaly_map, pred_score=pred_score)
        pixel_map = points_to_pixel_map(
            anomaly_map,
            point_batch.grid_index,
            point_batch.grid_shape,
            point_batch.batch_index,
            batch_size=point_batch.batch_size,
        )
        gt_mask = getattr(batch, "gt_mask", None)
        if gt_mask is not None and tuple(gt_mask.shape[-2:]) != tuple(pixel_map.shape[-2:]):
            pixel_map = resize_nearest(pixel_map, tuple(gt_mask.shape[-2:]))
        return batch.update(anomaly_map=pixel_map, pred_score=pred_score)

    # ----------------------------------------------------------------------------------------
    # evaluation steps, shared: each model provides ``predict_points(batch) -> PointScores``
    # ----------------------------------------------------------------------------------------
    def predict_and_write(self, batch: Any) -> Any:  # noqa: ANN401
        """The model's :class:`PointScores` for ``batch``, written into it (:meth:`write_predictions`)."""
        predict_points = getattr(self, "predict_points", None)
        if predict_points is None:
            msg = f"{type(self).__name__} must define predict_points(batch) -> PointScores."
            raise NotImplementedError(msg)
        scores: PointScores = predict_points(batch)
        return self.write_predictions(batch, scores.points, scores.anomaly_map, scores.pred_score)

    def validation_step(self, batch: Any, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Batch with per-point ``anomaly_map`` and object ``pred_score`` (thresholds are fitted on them)."""
        del args, kwargs
        return self.predict_and_write(batch)

    def test_step(self, batch: Any, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Batch with per-point ``anomaly_map`` and object ``pred_score``."""
        del args, kwargs
        return self.predict_and_write(batch)

    def predict_step(self, batch: Any, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Batch with per-point ``anomaly_map`` and object ``pred_score``."""
        del args, kwargs
        return self.predict_and_write(batch)

    def forward(self, batch: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        """The whole inference pipeline on a point batch (or ``DepthBatch``): pre-processor, model,
        post-processor (each when configured)."""
        del args, kwargs
        pre_processor = getattr(self, "pre_processor", None)
        post_processor = getattr(self, "post_processor", None)
        batch = pre_processor(batch) if pre_processor else batch
        batch = self.predict_and_write(batch)
        return post_processor(batch) if post_processor else batch


class PointScores(NamedTuple):
    """What a point model predicts for one batch (see :meth:`PointCloudModelMixin.predict_and_write`).

    Attributes:
        points: the batch as points (:meth:`PointCloudModelMixin.as_point_batch`).
        anomaly_map: (ΣN,) float, a score per point of ``points``.
        pred_score: (B,) float, a score per cloud.
    """

    points: PointCloudBatch
    anomaly_map: torch.Tensor
    pred_score: torch.Tensor


class FeatureBankModule:
    """Shared steps of the training-free memory-bank models (BTF, PatchCore3D, Reg3DAD).

    They learn nothing by gradient: one pass over the normal training clouds collects features (or
    templates), anomalib's ``MemoryBankMixin`` calls :meth:`fit` at the end of that epoch (and before
    any validation that finds the model unfitted), and every evaluation step scores a batch. The
    torch model provides ``collect(point_batch)`` (what one batch contributes), ``fit(list_of_collected)``
    and ``forward(point_batch) -> (anomaly_map, pred_score)``. Mix in after ``PointCloudModelMixin`` and
    before anomalib's ``MemoryBankMixin`` / ``AnomalibModule``; the class sets ``self.model``.
    """

    model: torch.nn.Module

    def _init_bank_state(self) -> None:
        self._collected: list[Any] = []
        # Lightning's DDP strategy refuses a module without any trainable parameter; this one
        # scalar (always multiplied by 0) lets the memory-bank models train under DDP, where their
        # banks are gathered across ranks.
        self.ddp_anchor = torch.nn.Parameter(torch.zeros(()))

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """One pass over the training data, no gradients to clip, no sanity validation."""
        return {"gradient_clip_val": 0, "max_epochs": 1, "num_sanity_val_steps": 0}

    @staticmethod
    def configure_optimizers() -> None:
        """Nothing to optimise."""
        return

    def training_step(self, batch: Any, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Collect what this batch of normal clouds contributes to the memory."""
        del args, kwargs
        point_batch = self.as_point_batch(batch)  # type: ignore[attr-defined]
        self.check_normal(point_batch, "builds its memory from normal samples only")  # type: ignore[attr-defined]
        self._collected.append(self.model.collect(point_batch))  # type: ignore[operator]
        # Lightning needs a loss-like value; nothing is optimised.
        return self.ddp_anchor * 0.0

    def fit(self) -> None:
        """Build the memory from everything collected (called once, by ``MemoryBankMixin``)."""
        if not self._collected:
            msg = (
                f"{type(self).__name__} has collected no training clouds: its memory is built from the training "
                "split during `engine.fit` (one epoch). Fix: run engine.fit on a datamodule with normal training "
                "samples first, or load a fitted checkpoint."
            )
            raise RuntimeError(msg)
        self.model.fit(self._collected)  # type: ignore[operator]
        self._collected = []

    def predict_points(self, batch: Any) -> PointScores:  # noqa: ANN401
        """Scores of a batch from the fitted memory (the torch model's ``forward``)."""
        point_batch = self.as_point_batch(batch)  # type: ignore[attr-defined]
        anomaly_map, pred_score = self.model(point_batch)
        return PointScores(point_batch, anomaly_map, pred_score)


class TrainingStatisticsMixin:
    """Statistics a trained model computes from the whole training split with its final weights.

    IMRNet's score statistics and 3DzAL's memory bank are functions of the trained network, so
    they are (re)computed after training: after the last training epoch (before the checkpoint
    callback saves the model), when training stops mid-epoch, and before any evaluation that finds
    them stale (weights changed since) or missing. A loaded checkpoint carries them.

    The model provides :meth:`fit_training_statistics` (what to compute from its share of the
    training batches; it gathers over ranks itself, e.g. with
    :func:`anomalib_3d.distributed.all_gather_cat`) and :meth:`training_statistics_fitted`, and calls
    :meth:`mark_statistics_stale` whenever its weights change (in ``training_step``). Mix in before
    ``PointCloudModelMixin``.
    """

    _statistics_stale: bool = True

    def fit_training_statistics(self, batches: list[Any]) -> None:
        """Compute the statistics from this rank's training batches (model in eval mode)."""
        raise NotImplementedError

    def training_statistics_fitted(self) -> bool:
        """Whether the statistics exist (fitted now or loaded from a checkpoint)."""
        raise NotImplementedError

    def mark_statistics_stale(self) -> None:
        """The weights changed: recompute before the next evaluation."""
        self._statistics_stale = True

    def training_batches(self) -> list[Any]:
        """This rank's share of the training split, read again (empty when none is reachable).

        On one process the datamodule's own training loader is read as is. Under DDP every rank
        reads the split in dataset order (each rank's training loader shuffles with its own
        generator) and keeps every ``world_size``-th batch, so each cloud is seen by one rank; a
        rank left without a batch repeats one rather than skipping the collectives.
        """
        from anomalib_3d.distributed import world_size

        trainer = getattr(self, "_trainer", None)
        if trainer is None:
            return []
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and getattr(datamodule, "train_data", None) is not None:
            loader = datamodule.train_dataloader()
        else:
            loader = trainer.train_dataloader
        if loader is None:
            return []
        ranks = world_size()
        dataset = getattr(loader, "dataset", None)
        if ranks > 1 and dataset is not None:
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=loader.batch_size or 1, shuffle=False, collate_fn=loader.collate_fn
            )
        batches = list(loader)
        if ranks > 1:
            rank = int(getattr(trainer, "global_rank", 0))
            batches = batches[rank::ranks] or batches[rank % max(len(batches), 1) :][:1]
        return batches

    def refresh_training_statistics(self) -> bool:
        """Recompute the statistics from the training data the trainer knows of.

        Returns:
            False (with a warning) when no training data is reachable; the statistics then stay as
            they are (loaded, earlier, or none).
        """
        batches = self.training_batches()
        if not batches:
            logger.warning(
                "%s: no training data reachable to compute its training statistics; scores use the last "
                "statistics (or none).", type(self).__name__,
            )
            return False
        model = self.model  # type: ignore[attr-defined]
        was_training = model.training
        model.eval()
        try:
            self.fit_training_statistics(batches)
        finally:
            model.train(was_training)
        self._statistics_stale = False
        return True

    def _last_training_epoch(self) -> bool:
        trainer = self.trainer  # type: ignore[attr-defined]
        if trainer.should_stop:
            return True
        max_epochs = trainer.max_epochs
        if max_epochs is not None and max_epochs > 0 and trainer.current_epoch + 1 >= max_epochs:
            return True
        max_steps = trainer.max_steps
        return max_steps is not None and max_steps > 0 and trainer.global_step >= max_steps

    def _refresh_if_needed(self) -> None:
        if self._statistics_stale or not self.training_statistics_fitted():
            self.refresh_training_statistics()

    def on_train_epoch_end(self) -> None:
        """After the last epoch, before the checkpoint callback saves the model."""
        if self._statistics_stale and self._last_training_epoch():
            self.refresh_training_statistics()

    def on_train_end(self) -> None:
        """Training stopped mid-epoch (``max_steps``, interruption)."""
        if self._statistics_stale:
            self.refresh_training_statistics()

    def on_validation_start(self) -> None:
        """By default validation runs once, after the last epoch
        (:class:`ValidateAfterLastEpoch`); validating more often costs one refresh each time."""
        self._refresh_if_needed()

    def on_test_start(self) -> None:
        self._refresh_if_needed()

    def on_predict_start(self) -> None:
        self._refresh_if_needed()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint carries its statistics: nothing is stale after loading one."""
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
        self._statistics_stale = False


_ENTRY_POINT_GROUP = "anomalib_3d.models"


# ``from anomalib_3d.models import IMRNet``: every registered model plugin, imported on access.
__getattr__, __dir__ = lazy_exports(__name__, {}, _ENTRY_POINT_GROUP)


__all__ = ["FeatureBankModule", "PointCloudModelMixin", "PointScores", "TrainingStatisticsMixin", "ValidateAfterLastEpoch"]
