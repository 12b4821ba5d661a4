"""Visualization of 3D anomaly predictions.

* :class:`PointCloudVisualizer` — anomalib ``Visualizer`` (Lightning callback) writing multi-view
  3D heatmaps next to the ground truth (plus 2D heatmaps for organized data) per test sample;
* :class:`SceneVisualizer` / :func:`draw_scene` — multi-view scenes: 3D boxes projected into every
  view, coloured by object score, next to the ground truth;
* :class:`PredictionWriter` — ``predictions.csv`` and one scored ``.ply`` per scan of a predict run;
* :mod:`~anomalib_3d.visualization.colormap` — score → RGB with a fixed range, GT colours.
"""

from anomalib_3d.visualization.colormap import gt_to_rgb, normalize_scores, overlay_heatmap, score_to_rgb
from anomalib_3d.visualization.predictions import PredictionWriter
from anomalib_3d.visualization.scenes import SceneVisualizer, draw_scene
from anomalib_3d.visualization.visualizer import (
    DEFAULT_VIEWS_ORGANIZED,
    DEFAULT_VIEWS_UNORGANIZED,
    PointCloudVisualizer,
    relative_output_path,
    view_rig,
)

__all__ = [
    "DEFAULT_VIEWS_ORGANIZED",
    "DEFAULT_VIEWS_UNORGANIZED",
    "PointCloudVisualizer",
    "PredictionWriter",
    "SceneVisualizer",
    "draw_scene",
    "gt_to_rgb",
    "normalize_scores",
    "overlay_heatmap",
    "relative_output_path",
    "score_to_rgb",
    "view_rig",
]
