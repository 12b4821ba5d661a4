"""What the classical (training-free) baselines share as anomalib modules.

BTF, PatchCore3D and Reg3DAD learn nothing by gradient: one pass over the normal training clouds
collects features (or templates), anomalib's :class:`MemoryBankMixin` calls :meth:`fit` at the end
of that epoch (and before any validation that finds the model unfitted), and every evaluation step
scores a batch. The torch model of each plugin provides ``collect(point_batch)`` (what one batch
contributes), ``fit(list_of_collected)`` and ``forward(point_batch) -> (anomaly_map, pred_score)``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from anomalib import LearningType
from lightning.pytorch.utilities.types import STEP_OUTPUT

from anomalib_3d.data.errors import PointCloudError

logger = logging.getLogger(__name__)

__all__ = ["FeatureBankModule"]


class FeatureBankModule:
    """Shared steps of the memory-bank baselines. Mix in after ``PointCloudModelMixin`` and before
    anomalib's ``MemoryBankMixin`` / ``AnomalibModule``; the class sets ``self.model``."""

    model: torch.nn.Module

    def _init_bank_state(self) -> None:
        self._collected: list[Any] = []

    @property
    def learning_type(self) -> LearningType:
        """Fitted on normal samples only."""
        return LearningType.ONE_CLASS

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """One pass over the training data, no gradients to clip, no sanity validation."""
        return {"gradient_clip_val": 0, "max_epochs": 1, "num_sanity_val_steps": 0}

    @staticmethod
    def configure_optimizers() -> None:
        """Nothing to optimise."""
        return

    @staticmethod
    def _check_normal(point_batch: Any, model_name: str) -> None:  # noqa: ANN401
        labels = point_batch.gt_label
        if labels is None or not bool(labels.any()):
            return
        bad = labels.nonzero().flatten().tolist()
        paths = point_batch.point_path or []
        names = [paths[i] if i < len(paths) else f"cloud {i}" for i in bad]
        raise PointCloudError(
            f"the training split holds anomalous clouds ({len(bad)} in this batch: {names[:3]}); {model_name} "
            "builds its memory from normal samples only.",
            fix="move anomalous samples to the test split (anomalib's datamodules do this by construction)",
        )

    def training_step(self, batch: Any, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Collect what this batch of normal clouds contributes to the memory."""
        del args, kwargs
        point_batch = self.as_point_batch(batch)  # type: ignore[attr-defined]
        self._check_normal(point_batch, type(self).__name__)
        self._collected.append(self.model.collect(point_batch))  # type: ignore[operator]
        # Lightning needs a loss-like value; nothing is optimised.
        return torch.tensor(0.0, requires_grad=True, device=point_batch.points.device)

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

    def _predict(self, batch: Any) -> Any:  # noqa: ANN401
        point_batch = self.as_point_batch(batch)  # type: ignore[attr-defined]
        anomaly_map, pred_score = self.model(point_batch)
        return self.write_predictions(batch, point_batch, anomaly_map, pred_score)  # type: ignore[attr-defined]

    def validation_step(self, batch: Any, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Batch with per-point ``anomaly_map`` and object ``pred_score``."""
        del args, kwargs
        return self._predict(batch)

    def test_step(self, batch: Any, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Batch with per-point ``anomaly_map`` and object ``pred_score``."""
        del args, kwargs
        return self._predict(batch)

    def predict_step(self, batch: Any, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Batch with per-point ``anomaly_map`` and object ``pred_score``."""
        del args, kwargs
        return self._predict(batch)

    def forward(self, batch: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        """Predictions for a point batch (or ``DepthBatch``), post-processed when configured."""
        del args, kwargs
        batch = self._predict(batch)
        return self.post_processor(batch) if self.post_processor else batch  # type: ignore[attr-defined]
