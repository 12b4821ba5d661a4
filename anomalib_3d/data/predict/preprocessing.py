"""The input preprocessing a model was fitted with: recorded in its checkpoint, applied at predict.

``anomalib test`` reads its scans through the datamodule, with that datamodule's reading options
(support-plane removal, the organized grid size, the text column layout, ...). ``anomalib predict``
on loose scans has no datamodule, so the options travel with the model instead, in anomalib's own
component for that job, the pre-processor: :class:`PointCloudPreProcessor`

* records the options of the test split at ``fit`` start
  (:func:`~anomalib_3d.data.predict.options.describe_preprocessing`);
* saves them in the checkpoint with its configuration (``anomalib_pre_processor_config``) and
  reads them back when a checkpoint is loaded;
* hands them to every :class:`~anomalib_3d.data.predict.PointCloudPredictDataset` of a predict run
  before the first scan is read.

A checkpoint written before the options were recorded reads scans with
:data:`~anomalib_3d.data.predict.options.DEFAULT_PREPROCESSING` (one log line says so).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from anomalib.pre_processing import PreProcessor

from anomalib_3d.data.predict.dataset import PointCloudPredictDataset
from anomalib_3d.data.predict.options import describe_preprocessing

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule, Trainer

logger = logging.getLogger(__name__)

#: Where the checkpoint keeps the recorded options (inside the pre-processor's configuration).
_CHECKPOINT_KEY = "point_cloud_inputs"


def predict_datasets(trainer: Trainer) -> list[PointCloudPredictDataset]:
    """The :class:`~anomalib_3d.data.predict.PointCloudPredictDataset` objects of a predict run."""
    loaders = getattr(trainer, "predict_dataloaders", None)
    if loaders is None:
        return []
    loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
    datasets = [getattr(loader, "dataset", None) for loader in loaders]
    return [d for d in datasets if isinstance(d, PointCloudPredictDataset)]


class PointCloudPreProcessor(PreProcessor):
    """anomalib's pre-processor for point models: no image transform, plus the input record.

    Images are never resized (that would break the point ↔ pixel correspondence); what the model
    needs to read new scans as its test data was read lives in :attr:`input_preprocessing`.

    Attributes:
        input_preprocessing: the recorded options (:func:`describe_preprocessing`), ``None`` until
            a fit or a checkpoint provides them.
    """

    def __init__(self) -> None:
        super().__init__(transform=None)
        self.input_preprocessing: dict[str, Any] | None = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Record the reading options of the datamodule being fitted (its test split)."""
        del pl_module
        record = describe_preprocessing(getattr(trainer, "datamodule", None))
        if record is None:
            logger.info("No datamodule with a test split to record input preprocessing from; predict will read "
                        "scans with the defaults unless the checkpoint already records them.")
            return
        self.input_preprocessing = record

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Give every point-cloud predict dataset the recorded options (before its first scan)."""
        for dataset in predict_datasets(trainer):
            dataset.configure(self.input_preprocessing, pl_module)

    def checkpoint_config(self) -> dict[str, Any]:
        """anomalib's configuration plus the recorded input options."""
        config = super().checkpoint_config()
        config[_CHECKPOINT_KEY] = None if self.input_preprocessing is None else dict(self.input_preprocessing)
        return config

    def load_checkpoint_config(self, config: dict[str, Any]) -> None:
        """Restore anomalib's configuration and the recorded options (``None`` for older checkpoints)."""
        super().load_checkpoint_config(config)
        record = config.get(_CHECKPOINT_KEY)
        self.input_preprocessing = dict(record) if record is not None else None


__all__ = ["PointCloudPreProcessor", "predict_datasets"]
