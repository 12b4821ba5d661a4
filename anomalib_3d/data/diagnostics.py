"""Checks of a dataset's conventions, run on downloaded data (not part of training).

:func:`pose_convention_report` decides the direction of the Eyecandies ``pose.txt`` matrices
(see :mod:`anomalib_3d.data.io.eyecandies`) from the data itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anomalib_3d.data.eyecandies import scan_eyecandies
from anomalib_3d.data.io.eyecandies import FOCAL_LENGTH, depth_to_xyz, read_depth_png, read_pose


def _fit_plane(points: np.ndarray) -> tuple[np.ndarray, float]:
    centre = points.mean(axis=0)
    normal = np.linalg.svd(points - centre, full_matrices=False)[2][-1]
    if normal[np.argmax(np.abs(normal))] < 0:
        normal = -normal
    return normal, float(normal @ centre)


def pose_convention_report(
    root: str | Path,
    category: str,
    split: str = "train",
    num_samples: int = 10,
    border: int = 16,
    focal_length: float = FOCAL_LENGTH,
) -> dict[str, float]:
    """How well each pose direction puts the belt of every sample on one world plane.

    The border of every image shows the conveyor belt only. For each direction the belt pixels
    of ``num_samples`` samples are back-projected to the world, a plane is fitted per sample, and
    the spread of those planes is measured: the largest angle (degrees) between their normals
    plus the spread of their offsets (metres). The belt does not move, so the right direction
    gives ~0; the wrong one gives as much as the camera poses vary.

    Returns:
        ``{"camera_to_world": spread, "world_to_camera": spread}`` (smaller is right).
    """
    frame = scan_eyecandies(root, category, splits=(split,)).head(num_samples)
    planes: dict[str, list[tuple[np.ndarray, float]]] = {"camera_to_world": [], "world_to_camera": []}
    for row in frame.itertuples():
        depth = read_depth_png(row.image_path, row.info_path)
        pose = read_pose(row.pose_path)
        ring = np.ones(depth.shape, dtype=bool)
        ring[border:-border, border:-border] = False
        for name, matrix in (("camera_to_world", pose), ("world_to_camera", np.linalg.inv(pose))):
            xyz = depth_to_xyz(depth, focal_length, matrix)
            planes[name].append(_fit_plane(xyz[ring & (depth > 0)]))
    report = {}
    for name, fitted in planes.items():
        normals = np.stack([n for n, _ in fitted])
        offsets = np.array([o for _, o in fitted])
        cosines = np.clip(np.abs(normals @ normals.T), -1.0, 1.0)
        report[name] = float(np.degrees(np.arccos(cosines.min()))) + float(offsets.max() - offsets.min())
    return report


__all__ = ["pose_convention_report"]
