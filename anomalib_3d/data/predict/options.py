"""The reading options of a fitted model's test data, as the checkpoint records them.

``anomalib test`` reads scans through its datamodule, with that datamodule's reading options;
``anomalib predict`` on loose scans must read them the same way. :func:`describe_preprocessing`
states a datamodule's options as plain data (recorded at fit by
:class:`~anomalib_3d.data.predict.preprocessing.PointCloudPreProcessor`, read back by
:class:`~anomalib_3d.data.predict.dataset.PointCloudPredictDataset`).
"""

from __future__ import annotations

from typing import Any

#: Version of the recorded options (bumped when their meaning changes).
RECORD_FORMAT = 1
#: Reading options of :class:`~anomalib_3d.data.datasets.PointCloudDataset`, as recorded.
READ_OPTIONS = ("remove_background", "background_threshold", "keep_largest_cluster", "grid_size", "columns")
#: What scans are read with when the checkpoint records nothing: the file as it is (no support-plane
#: removal, native grid, text columns inferred) and no category.
DEFAULT_PREPROCESSING: dict[str, Any] = {
    "remove_background": False,
    "background_threshold": 0.005,
    "keep_largest_cluster": False,
    "grid_size": None,
    "columns": None,
    "categories": None,
}


def _plain(value: Any) -> Any:  # noqa: ANN401
    """Checkpoint-safe plain data (tuples become lists)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    return value


def describe_preprocessing(datamodule: Any) -> dict[str, Any] | None:  # noqa: ANN401
    """The reading options of ``datamodule``'s test split, as plain data.

    Args:
        datamodule: a set-up datamodule (``test_data`` built).

    Returns:
        ``{"format", "datamodule", "categories", <READ_OPTIONS>}``; for anomalib's own depth
        datamodules (``MVTec3D``, ``Folder3D``, ``ADAM3D``), whose batches the depth adapter turns
        into points without reading options, the defaults with ``"depth_batches": True``.
        ``None`` when there is no datamodule or no test split.
    """
    from anomalib_3d.data.datasets import PointCloudDataset

    dataset = getattr(datamodule, "test_data", None)
    if datamodule is None or dataset is None:
        return None
    record: dict[str, Any] = {"format": RECORD_FORMAT, "datamodule": type(datamodule).__name__}
    if isinstance(dataset, PointCloudDataset):
        record.update({key: _plain(getattr(dataset, key)) for key in READ_OPTIONS})
        categories = sorted({str(c) for c in dataset.samples.category}) if len(dataset.samples) else []
    else:
        record.update({key: DEFAULT_PREPROCESSING[key] for key in READ_OPTIONS})
        record["depth_batches"] = True
        category = getattr(datamodule, "category", None)
        categories = [str(category)] if category else []
    record["categories"] = categories or None
    return record


__all__ = ["DEFAULT_PREPROCESSING", "READ_OPTIONS", "RECORD_FORMAT", "describe_preprocessing"]
