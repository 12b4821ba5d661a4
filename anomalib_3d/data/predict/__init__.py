"""Predict on new scans: ``anomalib predict --model <Name> --ckpt_path <ckpt> --data <file, folder or glob>``.

* :mod:`.inputs` — which files a path names (scans, their RGB images, everything else rejected by name);
* :mod:`.options` — the reading options of the test data, as plain data (:func:`describe_preprocessing`);
* :mod:`.preprocessing` — those options recorded at fit in the model's pre-processor and its
  checkpoint (:class:`PointCloudPreProcessor`);
* :mod:`.dataset` — :class:`PointCloudPredictDataset`: the scans read as the test data was read,
  bad files set aside under their named errors;
* :mod:`.router` — sends ``Engine.predict(data_path=...)`` to that dataset when the path holds
  point clouds (anomalib's image dataset otherwise).

The outputs (``predictions.csv``, scored ``.ply`` files) are written by
:class:`anomalib_3d.visualization.PredictionWriter`.
"""

from anomalib_3d.data.predict.dataset import PointCloudPredictDataset
from anomalib_3d.data.predict.inputs import (
    SCAN_SUFFIXES,
    PredictInput,
    PredictInputs,
    holds_point_clouds,
    list_predict_inputs,
)
from anomalib_3d.data.predict.options import DEFAULT_PREPROCESSING, READ_OPTIONS, describe_preprocessing
from anomalib_3d.data.predict.preprocessing import PointCloudPreProcessor, predict_datasets
from anomalib_3d.data.predict.router import PointCloudPredictRoute, install_predict_route

__all__ = [
    "DEFAULT_PREPROCESSING",
    "READ_OPTIONS",
    "SCAN_SUFFIXES",
    "PointCloudPreProcessor",
    "PointCloudPredictDataset",
    "PointCloudPredictRoute",
    "PredictInput",
    "PredictInputs",
    "describe_preprocessing",
    "holds_point_clouds",
    "install_predict_route",
    "list_predict_inputs",
    "predict_datasets",
]
