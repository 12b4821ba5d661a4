"""Multi-view point-cloud rendering with exact point <-> pixel correspondence.

* :mod:`~anomalib_3d.render.cameras`: :class:`CameraRig`, :func:`rotation_rig`, :func:`pointad_rig`,
  :func:`rig_from_rotations` (any axes), :func:`rig_preset` (``pointad_mvtec``, ``pointad_real3d``).
* :mod:`~anomalib_3d.render.splat`: :func:`render_points` (shaded z-buffered splats),
  :func:`render_mask` / :func:`render_mask_like` (ground-truth masks with the same geometry).
* :mod:`~anomalib_3d.render.correspondence`: :func:`gather_to_points` (per-view maps -> points).
"""

from anomalib_3d.render.cameras import (
    RIG_PRESETS,
    SENSOR_TO_OBJECT,
    CameraRig,
    normalize_clouds,
    pointad_angles,
    pointad_rig,
    rig_from_rotations,
    rig_preset,
    rotation_matrices,
    rotation_rig,
    view_rotations,
)
from anomalib_3d.render.correspondence import gather_to_points, upsample_maps
from anomalib_3d.render.splat import (
    RenderOutput,
    default_depth_tolerance,
    disc_offsets,
    rasterize_points,
    render_mask,
    render_mask_like,
    render_points,
)
from anomalib_3d.render.volume import (
    VolumeRender,
    VoxelGrid,
    backproject_features,
    camera_rays,
    crop_boxes,
    project_points,
    render_volume,
)

__all__ = [
    "RIG_PRESETS",
    "SENSOR_TO_OBJECT",
    "CameraRig",
    "RenderOutput",
    "default_depth_tolerance",
    "disc_offsets",
    "gather_to_points",
    "normalize_clouds",
    "pointad_angles",
    "pointad_rig",
    "rasterize_points",
    "render_mask",
    "render_mask_like",
    "render_points",
    "rig_from_rotations",
    "rig_preset",
    "rotation_matrices",
    "rotation_rig",
    "upsample_maps",
    "view_rotations",
    "VolumeRender",
    "VoxelGrid",
    "backproject_features",
    "camera_rays",
    "crop_boxes",
    "project_points",
    "render_volume",
]
