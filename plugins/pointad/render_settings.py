"""PointAD's render settings: which views a cloud is seen from, and how it is drawn.

Organized (sensor-frame) clouds and unorganized ones get different views by default, as in the
authors' code: organized scans are flipped into the object frame and seen by their MVTec 3D-AD rig
(``pointad_mvtec``), unorganized clouds by the paper's 9 rotations about X (``pointad_real3d``).

Two styles draw the views. ``"ours"`` (the default, for prompts trained here): a bounding sphere
per cloud, discs sized from the cloud's own sampling, Lambert shading, a depth-tolerant
visibility, straight at 336 px. ``"official"``: the pictures the authors' released prompts were
fitted on (:mod:`~anomalib_3d_plugins.pointad.official`), which a run with their prompt checkpoint
must use.
"""

from __future__ import annotations

from dataclasses import dataclass

from anomalib_3d.settings import check_choice

#: ``object_frame`` values: flip organized clouds only, every cloud, or none.
OBJECT_FRAMES = ("auto", "flip", "none")
#: ``style`` values: our fast pictures, or the authors' (Open3D's) pictures.
STYLES = ("ours", "official")


@dataclass(frozen=True)
class RenderSettings:
    """How clouds are turned into views.

    The views, by priority: ``views`` (any rotations) > ``view_angles`` (about ``view_axis``) >
    ``num_views`` / ``view_axis`` (the paper's Table 7 set about that axis) > ``preset`` >
    automatic: ``pointad_mvtec`` for organized clouds, ``pointad_real3d`` for unorganized ones.

    Attributes:
        preset: rig preset name (``"pointad_mvtec"``, ``"pointad_real3d"``, see
            :data:`anomalib_3d.render.RIG_PRESETS`), or ``None`` for the automatic choice.
        views: explicit rotations: ``(axis, degrees)`` pairs, lists of pairs (composed) or 3x3
            matrices (:func:`anomalib_3d.render.view_rotations`).
        num_views: Table 7 view count (angles ``k * 2 pi / (n + 1)`` about ``view_axis``).
        view_angles: explicit angles in radians about ``view_axis``.
        view_axis: axis of ``view_angles`` / ``num_views`` (default X); given alone it selects the
            9-view Table 7 set about that axis.
        object_frame: ``"auto"`` flips organized (sensor-frame: camera at the origin looking
            along +z, y down) clouds by pi about X before the views, as the authors do, and leaves
            unorganized clouds as they are; ``"flip"`` flips every cloud (the authors' Real3D-AD
            script flips too); ``"none"`` never flips. With the official style the turn is the
            preset's (:data:`~anomalib_3d_plugins.pointad.official.OFFICIAL_STYLES`: 3/4 pi about X
            for Eyecandies) and ``"auto"`` also turns unorganized clouds where the authors do (Real3D-AD).
        projection: ``"orthographic"`` or ``"pinhole"`` (Open3D's 60 degree perspective).
        image_size: render size; ``None`` = the backbone's input size (336 for ViT-L/14@336).
        point_radius_px: splat radius for every cloud; ``None`` = per cloud from its own sampling:
            the organized grid's pixel pitch, else its median nearest-neighbour distance
            (:func:`anomalib_3d.render.radius.radius_from_sampling`), so a cloud renders the same in any batch.
        shading: Lambert shading from normals (estimated when the cloud has none).
        use_colors: render with per-point colours (off: PointAD reads geometry only, RGB has its own branch).
        depth_tolerance: visibility tolerance of the renderer (``None`` = its default per radius).
        style: ``"ours"`` or ``"official"`` (the authors' Open3D pictures; overrides
            ``projection``, ``point_radius_px``, ``shading`` and ``depth_tolerance``).
        point_size_px: official style: square side of the points in window pixels for every
            cloud (``None`` = the preset's size for the cloud's category).
    """

    preset: str | None = None
    views: tuple | None = None
    num_views: int | None = None
    view_angles: tuple[float, ...] | None = None
    view_axis: str | None = None
    object_frame: str = "auto"
    projection: str = "orthographic"
    image_size: int | None = None
    point_radius_px: float | None = None
    shading: bool = True
    use_colors: bool = False
    depth_tolerance: float | None = None
    style: str = "ours"
    point_size_px: float | None = None

    def __post_init__(self) -> None:
        from anomalib_3d.render import RIG_PRESETS

        check_choice("object_frame", self.object_frame, OBJECT_FRAMES)
        if self.preset is not None and self.preset not in RIG_PRESETS:
            msg = f"unknown rig preset {self.preset!r}; choose one of {sorted(RIG_PRESETS)} or null (automatic)."
            raise ValueError(msg)
        if self.view_axis is not None and self.view_axis.lower() not in ("x", "y", "z"):
            msg = f"view_axis must be 'x', 'y' or 'z', got {self.view_axis!r}."
            raise ValueError(msg)
        check_choice("style", self.style, STYLES)
        if self.point_size_px is not None and not self.point_size_px >= 1:
            msg = f"point_size_px must be >= 1 (window pixels), got {self.point_size_px}."
            raise ValueError(msg)

    @property
    def official(self) -> bool:
        """Whether the views are drawn as the authors' Open3D scripts draw them."""
        return self.style == "official"

    def official_style(self, organized: bool) -> object:
        """The :class:`~anomalib_3d_plugins.pointad.official.OfficialStyle` of organized / unorganized
        clouds: the preset's, or for explicit views MVTec 3D-AD's (organized) / Real3D-AD's (unorganized)."""
        from anomalib_3d_plugins.pointad.official import OFFICIAL_STYLES, official_style

        name = self.rig_name(organized)
        if name in OFFICIAL_STYLES:
            return official_style(name)
        return official_style("pointad_mvtec" if organized else "pointad_real3d")

    def rig_name(self, organized: bool) -> str:
        """Which views apply: ``"views"``, ``"angles"``, ``"table7"`` or a preset name."""
        if self.views is not None:
            return "views"
        if self.view_angles is not None:
            return "angles"
        if self.num_views is not None or self.view_axis is not None:
            return "table7"
        if self.preset is not None:
            return self.preset
        return "pointad_mvtec" if organized else "pointad_real3d"

    def flips(self, organized: bool) -> bool:
        """Whether clouds are turned from the sensor frame into the object frame first (pi about X;
        the official Eyecandies style: 3/4 pi)."""
        if self.object_frame == "flip" or (self.object_frame == "auto" and organized):
            return True
        return self.object_frame == "auto" and self.official and self.official_style(organized).turn_unorganized

    def camera_rig(self, image_size: tuple[int, int], organized: bool = False) -> object:
        """The :class:`anomalib_3d.render.CameraRig` for organized / unorganized clouds at ``image_size``."""
        from anomalib_3d.render import (
            SENSOR_TO_OBJECT,
            pointad_angles,
            rig_from_rotations,
            rig_preset,
            rotation_rig,
        )

        name = self.rig_name(organized)
        axis = (self.view_axis or "x").lower()
        common = {"projection": self.projection, "image_size": image_size}
        if name == "views":
            rig = rig_from_rotations(list(self.views), **common)
        elif name == "angles":
            rig = rotation_rig(list(self.view_angles), axis=axis, **common)
        elif name == "table7":
            rig = rotation_rig(pointad_angles(self.num_views or 9), axis=axis, **common)
        else:
            rig = rig_preset(name, **common)
        if not self.official:
            return rig.with_pre_rotation(SENSOR_TO_OBJECT, "flip X") if self.flips(organized) else rig
        style = self.official_style(organized)
        if self.flips(organized):
            rig = rig.with_pre_rotation(style.sensor_turn, "sensor frame")
        return rig.like_open3d(window_size=style.window, recede_step=style.recede_step)


__all__ = ["OBJECT_FRAMES", "STYLES", "RenderSettings"]
