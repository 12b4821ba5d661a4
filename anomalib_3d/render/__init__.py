"""Multi-view point-cloud rendering with exact point <-> pixel correspondence.

* :mod:`~anomalib_3d.render.cameras`: :class:`CameraRig`, :func:`rotation_rig`, :func:`pointad_rig`,
  :func:`rig_from_rotations` (any axes), :func:`rig_preset` (``pointad_mvtec``, ``pointad_real3d``,
  ``pointad_eyecandies``); :meth:`CameraRig.like_open3d` (Open3D's camera per view, a window size).
* :mod:`~anomalib_3d.render.splat`: :func:`render_points` (shaded z-buffered splats),
  :func:`render_mask` / :func:`render_mask_like` (ground-truth masks with the same geometry),
  :func:`open3d_phong` (Open3D's lighting); :mod:`~anomalib_3d.render.zbuffer`: the z-buffer of
  discs or squares and the visibility rules.
* :mod:`~anomalib_3d.render.open3d_reference`: Open3D's own pictures made the PointAD authors' way
  (a reference for parity checks; needs an X display).
* :mod:`~anomalib_3d.render.radius`: splat radii from a point count or from a cloud's own sampling.
* :mod:`~anomalib_3d.render.correspondence`: :func:`gather_to_points` (per-view maps -> points).
"""

from anomalib_3d.render.cameras import (
    EYECANDIES_SENSOR_TO_OBJECT,
    RIG_PRESETS,
    SENSOR_TO_OBJECT,
    CameraRig,
    fit_unit_sphere,
    pointad_angles,
    pointad_rig,
    rig_from_rotations,
    rig_preset,
    rotation_matrices,
    rotation_rig,
    view_rotations,
)
from anomalib_3d.render.correspondence import gather_to_points, upsample_maps
from anomalib_3d.render.radius import cloud_radii, radius_for_point_count, radius_from_sampling
from anomalib_3d.render.splat import (
    RenderOutput,
    open3d_phong,
    rasterize_points,
    render_mask,
    render_mask_like,
    render_points,
)
from anomalib_3d.render.zbuffer import default_depth_tolerance, disc_offsets, footprint_offsets
from anomalib_3d.render import volume as _volume
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
    "EYECANDIES_SENSOR_TO_OBJECT",
    "RIG_PRESETS",
    "SENSOR_TO_OBJECT",
    "CameraRig",
    "RenderOutput",
    "cloud_radii",
    "default_depth_tolerance",
    "disc_offsets",
    "fit_unit_sphere",
    "footprint_offsets",
    "gather_to_points",
    "open3d_phong",
    "pointad_angles",
    "pointad_rig",
    "radius_for_point_count",
    "radius_from_sampling",
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
    *_volume.__all__,
]
