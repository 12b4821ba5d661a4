"""Argument checks and colormap-range checks shared by the visualizer callbacks.

:class:`~anomalib_3d.visualization.visualizer.PointCloudVisualizer` and
:class:`~anomalib_3d.visualization.scenes.SceneVisualizer` take the same kind of arguments (a
fixed colormap range, a number of views, a cap on the pictures written) and warn the same way when
the scores they draw fall outside that range; the rules live here once so both apply the same ones.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch


def check_visualizer_args(
    score_range: tuple[float, float],
    count_name: str,
    count: int,
    limit_name: str,
    limit: int | None,
) -> None:
    """Validate a visualizer's constructor arguments (checked in this order).

    Args:
        score_range: ``(low, high)`` fixed colormap range; needs ``high > low``.
        count_name: name of the views argument in the messages (``"num_views"``, ``"max_views"``).
        count: views per picture; needs ``>= 1``.
        limit_name: name of the cap argument in the messages (``"max_samples"``, ``"max_scenes"``).
        limit: pictures written at most per run; ``None`` or ``>= 0``.

    Raises:
        ValueError: the first argument that breaks its rule.
    """
    if not score_range[1] > score_range[0]:
        msg = f"score_range must be (low, high) with high > low, got {score_range}."
        raise ValueError(msg)
    if count < 1:
        msg = f"{count_name} must be >= 1, got {count}."
        raise ValueError(msg)
    if limit is not None and limit < 0:
        msg = f"{limit_name} must be None or >= 0, got {limit}."
        raise ValueError(msg)


class ScoreRangeWarning:
    """Mixin of the visualizers: warn once when the drawn scores leave the fixed colormap range.

    The host sets ``score_range`` and ``_warned_range = False`` in its ``__init__`` and names its
    own wording in :attr:`_RANGE_WARNING`.
    """

    #: ``str.format`` template with ``lo``, ``hi`` (the scores' extremes) and ``score_range``.
    _RANGE_WARNING: ClassVar[str]
    score_range: tuple[float, float]
    _warned_range: bool

    def _check_range(self, scores: torch.Tensor) -> None:
        """Warn (once per instance) when ``scores`` (any shape) leave ``score_range`` by > 5% of its span.

        The 5% margin keeps rounding at the edges (e.g. a sigmoid's 1.0000001) quiet; past it the
        colours saturate.
        """
        if self._warned_range or scores.numel() == 0:
            return
        lo, hi = float(scores.min()), float(scores.max())
        low, high = self.score_range
        span = high - low
        if lo < low - 0.05 * span or hi > high + 0.05 * span:
            self._warned_range = True
            # stacklevel 3: the warning points at whoever called the visualizer's drawing method.
            warnings.warn(self._RANGE_WARNING.format(lo=lo, hi=hi, score_range=self.score_range), stacklevel=3)


def _item(values: object, index: int) -> Any:  # noqa: ANN401
    """``values[index]``, or ``None`` when ``values`` is ``None`` or has no such entry."""
    if values is None:
        return None
    try:
        return values[index]
    except (IndexError, TypeError):
        return None
