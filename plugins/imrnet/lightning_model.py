"""IMRNet as an anomalib model (Lightning module).

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_3d.data.datamodules.synthetic import Synthetic3D
    >>> from anomalib_3d_plugins.imrnet import IMRNet
    >>> model = IMRNet.small()
    >>> engine = Engine(max_epochs=20)
    >>> engine.fit(model, datamodule=Synthetic3D())
    >>> engine.test(model, datamodule=Synthetic3D())

Training is self-supervised on normal clouds (masked-patch reconstruction). After the last
training epoch, and before any evaluation that follows training, the DFC statistics (feature
template, δ and score scales) are computed from the training set (:meth:`IMRNetModel.calibrate`);
they are buffers, so every checkpoint carries them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from anomalib import LearningType
from anomalib.models.components import AnomalibModule
from lightning.pytorch.utilities.types import STEP_OUTPUT

from anomalib_3d.models import PointCloudModelMixin

from .torch_model import PAPER_LITERAL, IMRNetModel, IMRNetPrediction

logger = logging.getLogger(__name__)

#: CPU-sized configuration (the ``imrnet_small`` preset).
SMALL_PRESET: dict[str, Any] = {
    "num_points": 2048,
    "num_groups": 64,
    "group_size": 32,
    "embed_dim": 128,
    "tokenizer_width": 128,
    "encoder_depth": 4,
    "decoder_depth": 2,
    "num_heads": 4,
    "drop_path_rate": 0.0,
    "feature_layers": (1, 2),
    "template_size": 4096,
}


class IMRNet(PointCloudModelMixin, AnomalibModule):
    """IMRNet: iterative mask reconstruction for 3D anomaly detection.

    Sizes default to the paper's (Point-MAE sizes, GPS 256 × 64 patches, mask 0.4, 3 iterations,
    decoder layers 1-3). The scoring departs from the paper where measurements showed it fails
    (plugin README, "Diagnosis"): feature score against the training template, a geometric residual
    in the registered template frame, random test masks over two passes. :meth:`paper_literal`
    (or the switches in :data:`PAPER_LITERAL`) gives the paper read literally. Use :meth:`small` or
    ``configs/models/imrnet_small.yaml`` on a CPU.

    Args:
        num_points ... seed: see :class:`~anomalib_3d_plugins.imrnet.torch_model.IMRNetModel`.
        learning_rate: AdamW learning rate (cosine-annealed over ``max_epochs``).
        weight_decay: AdamW weight decay.
        pretrained_path: Point-MAE ``pretrain.pth`` to start from (loaded when a fresh fit
            starts, not when resuming); None trains from scratch.
        pre_processor, post_processor, evaluator, visualizer: as in anomalib.
    """

    def __init__(
        self,
        num_points: int = 8192,
        num_groups: int = 256,
        group_size: int = 64,
        sampler: str = "gps",
        gps_k: int = 16,
        gps_threshold: float = 0.3,
        gps_salient_density: float = 2.0,
        subsample: str = "fps",
        embed_dim: int = 384,
        tokenizer_width: int = 256,
        encoder_depth: int = 12,
        decoder_depth: int = 4,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        mask_ratio: float = 0.4,
        num_iterations: int = 3,
        iterative_reconstruction: bool = True,
        use_point_score: bool = False,
        use_feature_score: bool = True,
        feature_layers: Sequence[int] = (1, 2, 3),
        feature_reference: str = "template",
        template_regularization: bool = True,
        template_threshold: float | None = None,
        template_quantile: float = 0.95,
        template_size: int = 4096,
        point_score_weight: float = 1.0,
        feature_score_weight: float = 1.0,
        point_aggregation: str = "mean",
        point_score_mode: str = "patch",
        object_score: str = "max",
        object_topk: float = 0.01,
        interpolation_k: int = 3,
        smoothing_k: int = 0,
        smoothing_sigma: float = 0.05,
        cache_training_patches: bool = True,
        seed: int = 0,
        test_masks: str = "random",
        test_mask_passes: int = 2,
        geometric_score_weight: float = 0.5,
        registration: str = "icp",
        registration_templates: int = 4,
        registration_points: int = 1024,
        template_points: int | None = 4096,
        template_selection: str = "first",
        learning_rate: float = 1e-3,
        weight_decay: float = 0.05,
        pretrained_path: str | None = None,
        pre_processor: torch.nn.Module | bool = True,
        post_processor: torch.nn.Module | bool = True,
        evaluator: Any = True,  # noqa: ANN401 - anomalib's Evaluator | bool
        visualizer: Any = True,  # noqa: ANN401 - anomalib's Visualizer | bool
    ) -> None:
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.model = IMRNetModel(
            num_points=num_points,
            num_groups=num_groups,
            group_size=group_size,
            sampler=sampler,
            gps_k=gps_k,
            gps_threshold=gps_threshold,
            gps_salient_density=gps_salient_density,
            subsample=subsample,
            embed_dim=embed_dim,
            tokenizer_width=tokenizer_width,
            encoder_depth=encoder_depth,
            decoder_depth=decoder_depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate,
            mask_ratio=mask_ratio,
            num_iterations=num_iterations,
            iterative_reconstruction=iterative_reconstruction,
            use_point_score=use_point_score,
            use_feature_score=use_feature_score,
            feature_layers=feature_layers,
            feature_reference=feature_reference,
            template_regularization=template_regularization,
            template_threshold=template_threshold,
            template_quantile=template_quantile,
            template_size=template_size,
            point_score_weight=point_score_weight,
            feature_score_weight=feature_score_weight,
            point_aggregation=point_aggregation,
            point_score_mode=point_score_mode,
            object_score=object_score,
            object_topk=object_topk,
            interpolation_k=interpolation_k,
            smoothing_k=smoothing_k,
            smoothing_sigma=smoothing_sigma,
            cache_training_patches=cache_training_patches,
            seed=seed,
            test_masks=test_masks,
            test_mask_passes=test_mask_passes,
            geometric_score_weight=geometric_score_weight,
            registration=registration,
            registration_templates=registration_templates,
            registration_points=registration_points,
            template_points=template_points,
            template_selection=template_selection,
        )
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.pretrained_path = pretrained_path
        # Set by every training step, cleared by calibration: the DFC statistics must be recomputed
        # with the final weights before scores are trusted.
        self._statistics_stale = False

    @classmethod
    def small(cls, **overrides: Any) -> IMRNet:  # noqa: ANN401
        """The CPU preset (width 128, 4 / 2 blocks, 4 heads, 64 patches × 32 points, 2048 points, lr 2e-3)."""
        return cls(**{**SMALL_PRESET, "learning_rate": 2e-3, **overrides})

    @classmethod
    def paper_literal(cls, **overrides: Any) -> IMRNet:  # noqa: ANN401
        """The paper read literally (:data:`PAPER_LITERAL`: DFC against the reconstruction, no
        geometric residual, no registration, one pass of window masks); other sizes as given."""
        return cls(**{**PAPER_LITERAL, **overrides})

    # ----------------------------------------------------------------------------------------
    # anomalib interface
    # ----------------------------------------------------------------------------------------
    @property
    def learning_type(self) -> LearningType:
        """IMRNet trains on normal samples only."""
        return LearningType.ONE_CLASS

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No sanity validation: scores before training are meaningless and cost a full pass."""
        return {"num_sanity_val_steps": 0}

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW, cosine-annealed over ``max_epochs`` when that is known."""
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        max_epochs = getattr(self._trainer, "max_epochs", None) if self._trainer is not None else None
        if not max_epochs or max_epochs < 1:
            return {"optimizer": optimizer}
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ----------------------------------------------------------------------------------------
    # pretrained weights
    # ----------------------------------------------------------------------------------------
    def load_pretrained(self, path: str | Path | None = None) -> tuple[list[str], list[str]]:
        """Load Point-MAE weights (``pretrained_path`` by default); see :meth:`IMRNetModel.load_point_mae`.

        Raises:
            MissingWeightsError: the file does not exist (the message says what to download).
        """
        path = path if path is not None else self.pretrained_path
        if path is None:
            msg = "no pretrained_path given."
            raise ValueError(msg)
        loaded, skipped = self.model.load_point_mae(path)
        logger.info("IMRNet: %d tensors loaded from %s, %d skipped.", len(loaded), path, len(skipped))
        for line in skipped:
            logger.info("  skipped %s", line)
        return loaded, skipped

    def on_fit_start(self) -> None:
        """Start a fresh fit from Point-MAE weights when asked (never over resumed weights)."""
        if self.pretrained_path and getattr(self.trainer, "ckpt_path", None) is None:
            self.load_pretrained()

    # ----------------------------------------------------------------------------------------
    # steps
    # ----------------------------------------------------------------------------------------
    def training_step(self, batch: Any, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Masked-patch reconstruction loss of a batch of normal clouds."""
        del args, kwargs
        point_batch = self.as_point_batch(batch)
        self.check_normal(point_batch, "learns from normal samples only")
        loss = self.model.training_loss(point_batch.points, point_batch.batch_index, paths=point_batch.point_path)
        self._statistics_stale = True
        self.log("train_loss", loss, prog_bar=True, batch_size=point_batch.batch_size)
        return {"loss": loss}

    def _predict(self, batch: Any) -> Any:  # noqa: ANN401
        point_batch = self.as_point_batch(batch)
        prediction: IMRNetPrediction = self.model(
            point_batch.points, point_batch.batch_index, paths=point_batch.point_path
        )
        return self.write_predictions(batch, point_batch, prediction.anomaly_map, prediction.pred_score)

    def validation_step(self, batch: Any, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Batch with per-point ``anomaly_map`` and object ``pred_score``."""
        del args, kwargs
        return self._predict(batch)

    def test_step(self, batch: Any, batch_idx: int, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Batch with per-point ``anomaly_map`` and object ``pred_score``."""
        del args, kwargs, batch_idx
        return self._predict(batch)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> STEP_OUTPUT:  # noqa: ANN401
        """Batch with per-point ``anomaly_map`` and object ``pred_score``."""
        del batch_idx, dataloader_idx
        return self._predict(batch)

    def forward(self, batch: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        """Predictions for a point batch (or ``DepthBatch``), post-processed when configured."""
        del args, kwargs
        batch = self._predict(batch)
        return self.post_processor(batch) if self.post_processor else batch

    # ----------------------------------------------------------------------------------------
    # training-set statistics
    # ----------------------------------------------------------------------------------------
    def _training_clouds(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        trainer = self._trainer
        loader = None
        if trainer is not None:
            datamodule = getattr(trainer, "datamodule", None)
            if datamodule is not None and getattr(datamodule, "train_data", None) is not None:
                loader = datamodule.train_dataloader()
            elif trainer.train_dataloader is not None:
                loader = trainer.train_dataloader
        if loader is None:
            return
        # Under DDP every rank takes its own share of the batches; the model gathers the
        # statistics over ranks (all_gather_cat), so each cloud counts once.
        from anomalib_3d.distributed import world_size

        ranks = world_size()
        rank = getattr(trainer, "global_rank", 0) if trainer is not None else 0
        dataset = getattr(loader, "dataset", None)
        if ranks > 1 and dataset is not None:
            # Every rank must see the same batches in the same order before taking its share: the
            # training loader shuffles with each rank's own generator.
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=loader.batch_size or 1, shuffle=False, collate_fn=loader.collate_fn
            )
        batches = list(loader)
        if ranks > 1:
            # Fewer batches than ranks: a rank repeats one rather than skipping the collectives.
            mine = batches[rank::ranks] or batches[rank % max(len(batches), 1) :][:1]
            batches = mine
        for batch in batches:
            point_batch = self.as_point_batch(batch)
            self.check_normal(point_batch, "learns from normal samples only")
            yield point_batch.points.to(self.device), point_batch.batch_index.to(self.device)

    def calibrate(self) -> dict[str, float] | None:
        """Recompute the DFC statistics from the training data the trainer knows of.

        Returns:
            The statistics, or None (with a warning) when no training data is reachable.
        """
        was_training = self.model.training
        self.model.eval()
        try:
            clouds = list(self._training_clouds())
            if not clouds:
                logger.warning(
                    "IMRNet: no training data reachable to compute the feature template and score scales; "
                    "scores use the last statistics (or none).",
                )
                return None
            stats = self.model.calibrate(clouds)
        finally:
            self.model.train(was_training)
        self._statistics_stale = False
        logger.info("IMRNet statistics: %s", stats)
        return stats

    def _last_training_epoch(self) -> bool:
        trainer = self.trainer
        if trainer.should_stop:
            return True
        max_epochs = trainer.max_epochs
        if max_epochs is not None and max_epochs > 0 and trainer.current_epoch + 1 >= max_epochs:
            return True
        max_steps = trainer.max_steps
        return max_steps is not None and max_steps > 0 and trainer.global_step >= max_steps

    def on_train_epoch_end(self) -> None:
        """Calibrate after the last epoch, before the checkpoint callback saves the model."""
        if self._statistics_stale and self._last_training_epoch():
            self.calibrate()

    def on_train_end(self) -> None:
        """Training stopped mid-epoch (``max_steps``, interruption): calibrate now."""
        if self._statistics_stale:
            self.calibrate()

    def on_validation_start(self) -> None:
        """Validation scores with statistics of the current weights. By default it runs once, after
        the last epoch (:class:`~anomalib_3d.models.ValidateAfterLastEpoch`); a user who asks for
        validation every few epochs pays one calibration per validation."""
        if self._statistics_stale or not bool(self.model.calibrated):
            self.calibrate()

    def on_test_start(self) -> None:
        if self._statistics_stale or not bool(self.model.calibrated):
            self.calibrate()

    def on_predict_start(self) -> None:
        if self._statistics_stale or not bool(self.model.calibrated):
            self.calibrate()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint carries its statistics: nothing is stale after loading one."""
        super().on_load_checkpoint(checkpoint)
        self._statistics_stale = False


__all__ = ["SMALL_PRESET", "IMRNet"]
