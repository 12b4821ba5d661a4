"""Save -> load checks shared by the model tests."""

from __future__ import annotations

from typing import Any

import torch


def assert_reload_predicts_the_same(model: Any, loaded: Any, datamodule: Any) -> tuple[Any, Any]:  # noqa: ANN401
    """``model`` and ``loaded`` (its checkpoint read back) score the first test batch bitwise alike.

    Returns:
        ``(batch, scores)``: the batch and ``model``'s :class:`~anomalib_3d.models.PointScores` of it.
    """
    model.eval()
    loaded.eval()
    datamodule.setup("test")
    batch = next(iter(datamodule.test_dataloader()))
    first, second = model.predict_points(batch), loaded.predict_points(batch)
    assert torch.equal(first.anomaly_map, second.anomaly_map)
    assert torch.equal(first.pred_score, second.pred_score)
    return batch, first
