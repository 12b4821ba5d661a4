"""Camera rigs: the set of views a point cloud is rendered from.

Convention (shared by every module of :mod:`anomalib_3d.render`):

* Each cloud is first normalised on its own (see :func:`fit_unit_sphere`): centred at its
  bounding-box centre and scaled so that it fits in the unit sphere. Every view of a cloud uses
  the same normalisation, so renders of one cloud from different views are directly comparable
  and the object never leaves the frame, whatever the rotation.
* A view is a rotation ``R`` applied to the normalised *object* (as PointAD rotates the cloud
  and keeps Open3D's default camera): ``p_cam = R @ p``.
* The camera sits on the +Z axis and looks towards -Z; +X is image right (column ``u`` grows),
  +Y is image up (row ``v`` shrinks). Depth is the distance along the viewing axis,
  ``camera_distance - z_cam``, so nearer points have smaller depth.

PointAD's view angles (paper, Appendix B, Table 7 "Ablation study on the number of rendering
views"; rotations about the X axis):

====== ======================================================================
views  angles (multiples of pi)
====== ======================================================================
1      0
3      -1/2, 0, 1/2
5      -2/3, -1/3, 0, 1/3, 2/3
7      -3/4, -1/2, -1/4, 0, 1/4, 1/2, 3/4
9      -4/5, -3/5, -2/5, -1/5, 0, 1/5, 2/5, 3/5, 4/5   (the paper's default)
11     -5/6, -2/3, -1/2, -1/3, -1/6, 0, 1/6, 1/3, 1/2, 2/3, 5/6
====== ======================================================================

Every row is ``k * 2*pi/(n+1)`` for ``k = -(n-1)/2 .. (n-1)/2`` ("we set the rendering angles in
a circular manner, evenly distributing the angles between -pi to pi"). The 11-view row as
printed in the paper reads "-5/6, -2/3, -1/2, -1/2, 1/6, 0, 1/6, ..." which repeats -1/2 and
has +1/6 before 0; we take it as a typo for the evenly spaced set above (the only reading
consistent with the text and the other rows). For view counts outside the table the same
formula is used.

Rigs are not limited to one axis: :func:`rig_from_rotations` takes any list of rotations, each an
``(axis, degrees)`` pair (e.g. ``("y", -30)``), a sequence of such pairs applied left to right, or
a ``3 x 3`` matrix. Named presets (:data:`RIG_PRESETS`, :func:`rig_preset`):

* ``"pointad_mvtec"``: the authors' MVTec 3D-AD rig (``multiview_mvtec.py``): X at
  -45, -15, 0, 15, 45 degrees, then Y at -30, -15, 15, 30 degrees (9 views);
* ``"pointad_real3d"``: the paper's 9 X-angles (Table 7, ``k * 36`` degrees), the authors' Real3D-AD rig;
* ``"pointad_eyecandies"``: the authors' Eyecandies rig (``multiview_eyecandies.py``): X at -30,
  -15, 0, 10, 20 degrees, then Y at -30, -15, 15, 30 degrees (9 views).

Organized scans (MVTec 3D-AD xyz) are in the *sensor frame*: camera at the origin looking along
+z, image rows along +y (y down). The authors flip such clouds by pi about X before rendering
(:data:`SENSOR_TO_OBJECT`), which puts the sensor-facing side towards our camera (+Z) with the
image upright; :meth:`CameraRig.with_pre_rotation` composes that flip into a rig. Their Eyecandies
script turns sensor-frame clouds by 3/4 pi about X instead (:data:`EYECANDIES_SENSOR_TO_OBJECT`).

Framing. ``framing="sphere"`` (the default) fits each cloud's bounding sphere, with ``margin``, in
every view: one scale for all views of a cloud. ``framing="view_box"`` is Open3D's default camera
refitted to each rotated view, as the authors' per-view ``Visualizer`` windows do (their scripts
rotate the cloud and open a fresh window per view): the camera looks at the centre of the rotated
cloud's axis-aligned box from ``zoom * longest side / tan(fov / 2)`` away (Open3D: zoom 0.7,
60 degrees), so the longest side spans ``1 / (2 zoom)`` (71 %) of the frame at the box centre;
``recede_step`` then backs the camera off in steps of that many input units until every point is
in frame (at least one step), as their Eyecandies script does. ``window_size`` renders at the size
of their Open3D window (1024 or 1036 px, point sizes in its pixels) and resizes the images to
``image_size`` with an antialiased bicubic filter, as their PIL resize does
(:meth:`CameraRig.like_open3d` sets all of it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

Projection = Literal["orthographic", "pinhole"]
Framing = Literal["sphere", "view_box"]
FRAMINGS = ("sphere", "view_box")
#: Open3D's default camera (``ViewControl``): 60 degree field of view, zoom 0.7.
OPEN3D_FOV_DEG, OPEN3D_ZOOM = 60.0, 0.7

__all__ = [
    "EYECANDIES_SENSOR_TO_OBJECT",
    "FRAMINGS",
    "RIG_PRESETS",
    "SENSOR_TO_OBJECT",
    "CameraRig",
    "Projection",
    "fit_unit_sphere",
    "pointad_angles",
    "pointad_rig",
    "rig_from_rotations",
    "rig_preset",
    "rotation_matrices",
    "rotation_rig",
    "view_rotations",
]


def _as_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        height = width = image_size
    else:
        if len(image_size) != 2:
            msg = f"image_size must be an int or (height, width), got {image_size!r}."
            raise ValueError(msg)
        height, width = (int(s) for s in image_size)
    if height < 1 or width < 1:
        msg = f"image_size must be positive, got {image_size!r}."
        raise ValueError(msg)
    return height, width


@dataclass(frozen=True)
class CameraRig:
    """A fixed set of ``V`` views shared by every cloud of a batch.

    Attributes:
        rotations: ``(V, 3, 3)`` float rotations applied to the normalised object (``p_cam = R p``).
        projection: ``"orthographic"`` (parallel rays) or ``"pinhole"`` (perspective with
            vertical/horizontal field of view ``fov_deg``).
        image_size: ``(H, W)`` of every render, in pixels.
        fov_deg: field of view of the pinhole camera across the shorter image side, degrees.
        margin: fraction of the half-image left free around the unit sphere, ``0 <= margin < 1``.
        angles: the rotation angles (radians) the rig was built from, for captions; may be empty.
        axis: the rotation axis the angles refer to (``"x"``, ``"y"``, ``"z"``) or ``None``.
        labels: one caption per view (rigs mixing axes); overrides ``angles`` / ``axis`` in :meth:`captions`.
        framing: ``"sphere"`` (one bounding sphere per cloud for all views, ``margin``) or
            ``"view_box"`` (Open3D's camera refitted to each rotated view's box, ``zoom``).
        zoom: ``view_box``: half the frame at the box centre spans ``zoom`` times the box's longest side.
        recede_step: ``view_box``: back the camera off in steps of this many *input* units until
            every point projects into the frame (0 = never).
        window_size: ``(H, W)`` to rasterise at before the images are resized to ``image_size``
            (antialiased bicubic), or ``None`` to rasterise at ``image_size``; point sizes are in
            window pixels.
    """

    rotations: Tensor
    projection: Projection = "orthographic"
    image_size: tuple[int, int] = (336, 336)
    fov_deg: float = 60.0
    margin: float = 0.1
    angles: tuple[float, ...] = field(default=())
    axis: str | None = None
    labels: tuple[str, ...] = field(default=())
    framing: Framing = "sphere"
    zoom: float = OPEN3D_ZOOM
    recede_step: float = 0.0
    window_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        rotations = self.rotations
        if not isinstance(rotations, Tensor) or rotations.ndim != 3 or rotations.shape[1:] != (3, 3):
            shape = tuple(rotations.shape) if isinstance(rotations, Tensor) else type(rotations)
            msg = f"CameraRig.rotations must be a (V, 3, 3) tensor, got {shape}."
            raise ValueError(msg)
        if rotations.shape[0] == 0:
            msg = "CameraRig needs at least one view."
            raise ValueError(msg)
        if not torch.isfinite(rotations).all():
            msg = "CameraRig.rotations contains NaN/inf."
            raise ValueError(msg)
        if self.projection not in ("orthographic", "pinhole"):
            msg = f"projection must be 'orthographic' or 'pinhole', got {self.projection!r}."
            raise ValueError(msg)
        if not 0.0 < self.fov_deg < 180.0:
            msg = f"fov_deg must lie in (0, 180), got {self.fov_deg}."
            raise ValueError(msg)
        if not 0.0 <= self.margin < 1.0:
            msg = f"margin must lie in [0, 1), got {self.margin}."
            raise ValueError(msg)
        object.__setattr__(self, "image_size", _as_hw(self.image_size))
        if self.window_size is not None:
            object.__setattr__(self, "window_size", _as_hw(self.window_size))
        if self.framing not in FRAMINGS:
            msg = f"framing must be one of {FRAMINGS}, got {self.framing!r}."
            raise ValueError(msg)
        if not (math.isfinite(self.zoom) and self.zoom > 0):
            msg = f"zoom must be a finite number > 0, got {self.zoom}."
            raise ValueError(msg)
        if not (math.isfinite(self.recede_step) and self.recede_step >= 0):
            msg = f"recede_step must be a finite number >= 0, got {self.recede_step}."
            raise ValueError(msg)
        if self.angles and len(self.angles) != rotations.shape[0]:
            msg = f"{len(self.angles)} angles given for {rotations.shape[0]} rotations."
            raise ValueError(msg)
        if self.labels and len(self.labels) != rotations.shape[0]:
            msg = f"{len(self.labels)} labels given for {rotations.shape[0]} rotations."
            raise ValueError(msg)

    @property
    def num_views(self) -> int:
        """Number of views ``V``."""
        return int(self.rotations.shape[0])

    @property
    def camera_distance(self) -> float:
        """Distance from the camera centre to the object centre, in normalised units.

        For the pinhole camera it is chosen so the whole unit sphere (hence the object, from any
        view) fits the shorter image side with ``margin`` to spare. The orthographic camera has no
        centre; the same formula keeps its depths positive and on a comparable scale.
        """
        half_fov = math.radians(self.fov_deg) / 2.0
        # Angle under which the unit sphere's silhouette must appear to leave the margin free.
        half_angle = math.atan((1.0 - self.margin) * math.tan(half_fov))
        return 1.0 / math.sin(half_angle)

    @property
    def raster_size(self) -> tuple[int, int]:
        """``(H, W)`` the z-buffer is built at: ``window_size`` when set, else ``image_size``."""
        return self.window_size or self.image_size

    @property
    def focal_px(self) -> float:
        """Pinhole focal length in raster pixels (square pixels), from the shorter raster side."""
        return (min(self.raster_size) / 2.0) / math.tan(math.radians(self.fov_deg) / 2.0)

    @property
    def ortho_scale_px(self) -> float:
        """Orthographic raster pixels per normalised unit: the unit sphere spans ``1 - margin`` of the half-image."""
        return (1.0 - self.margin) * min(self.raster_size) / 2.0

    def like_open3d(self, window_size: int | Sequence[int] | None = 1024, recede_step: float = 0.0) -> CameraRig:
        """The same views seen the way the PointAD authors' Open3D scripts see them.

        Open3D's default camera (pinhole, 60 degrees, zoom 0.7) refitted to each rotated view
        (``framing="view_box"``), rasterised in a ``window_size`` window and resized to
        ``image_size``; ``recede_step`` as their Eyecandies script (see the module docstring).
        """
        return dataclasses.replace(
            self,
            projection="pinhole",
            fov_deg=OPEN3D_FOV_DEG,
            framing="view_box",
            zoom=OPEN3D_ZOOM,
            recede_step=float(recede_step),
            window_size=None if window_size is None else _as_hw(window_size),
        )

    def captions(self) -> list[str]:
        """Short human-readable label for each view (angle as a multiple of pi)."""
        if self.labels:
            return list(self.labels)
        if not self.angles:
            return [f"view {i}" for i in range(self.num_views)]
        axis = (self.axis or "?").upper()
        return [f"{axis} {_pi_fraction(a)}" for a in self.angles]

    def to(self, device: torch.device | str) -> CameraRig:
        """Copy of the rig with rotations on ``device``."""
        return dataclasses.replace(self, rotations=self.rotations.to(device))

    def with_pre_rotation(self, matrix: Tensor, label: str | None = None) -> CameraRig:
        """The rig seen from a rotated object frame: every view becomes ``R_v @ matrix``.

        Args:
            matrix: ``(3, 3)`` rotation applied to the (normalised) object before each view's
                own rotation, e.g. :data:`SENSOR_TO_OBJECT` for sensor-frame scans.
            label: suffix of the captions (e.g. ``"flip X"``).

        Returns:
            A new :class:`CameraRig` with the same views, projection and size.
        """
        matrix = torch.as_tensor(matrix, dtype=self.rotations.dtype, device=self.rotations.device)
        if matrix.shape != (3, 3):
            msg = f"pre-rotation must be a (3, 3) matrix, got {tuple(matrix.shape)}."
            raise ValueError(msg)
        captions = self.captions()
        if label:
            captions = [f"{c} ∘ {label}" for c in captions]
        return dataclasses.replace(self, rotations=self.rotations @ matrix, labels=tuple(captions))


def _pi_fraction(angle: float, max_denominator: int = 24) -> str:
    from fractions import Fraction

    frac = Fraction(angle / math.pi).limit_denominator(max_denominator)
    if abs(float(frac) * math.pi - angle) > 1e-6:
        return f"{math.degrees(angle):.1f}°"
    if frac == 0:
        return "0"
    sign = "-" if frac < 0 else ""
    num, den = abs(frac.numerator), frac.denominator
    top = "π" if num == 1 else f"{num}π"
    return f"{sign}{top}" if den == 1 else f"{sign}{top}/{den}"


def rotation_matrices(angles: Tensor | Sequence[float], axis: str = "x") -> Tensor:
    """Right-handed rotations by ``angles`` (radians) about a coordinate axis.

    Args:
        angles: ``(V,)`` angles in radians.
        axis: ``"x"``, ``"y"`` or ``"z"``.

    Returns:
        ``(V, 3, 3)`` float32 rotation matrices (``R @ p`` rotates column vectors ``p``); the same
        matrices as ``open3d.geometry.get_rotation_matrix_from_xyz`` with a single non-zero angle.
    """
    theta = torch.as_tensor(angles, dtype=torch.float64).reshape(-1)
    axis = axis.lower()
    if axis not in ("x", "y", "z"):
        msg = f"axis must be 'x', 'y' or 'z', got {axis!r}."
        raise ValueError(msg)
    cos, sin = torch.cos(theta), torch.sin(theta)
    one, zero = torch.ones_like(theta), torch.zeros_like(theta)
    if axis == "x":
        rows = [[one, zero, zero], [zero, cos, -sin], [zero, sin, cos]]
    elif axis == "y":
        rows = [[cos, zero, sin], [zero, one, zero], [-sin, zero, cos]]
    else:
        rows = [[cos, -sin, zero], [sin, cos, zero], [zero, zero, one]]
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2).to(torch.float32)


def rotation_rig(
    angles: Tensor | Sequence[float],
    axis: str = "x",
    *,
    projection: Projection = "orthographic",
    image_size: int | Sequence[int] = 336,
    fov_deg: float = 60.0,
    margin: float = 0.1,
) -> CameraRig:
    """Rig whose views rotate the object by each of ``angles`` (radians) about ``axis``.

    Args:
        angles: ``(V,)`` rotation angles in radians.
        axis: ``"x"``, ``"y"`` or ``"z"``.
        projection: ``"orthographic"`` or ``"pinhole"``.
        image_size: render size, ``int`` or ``(H, W)``.
        fov_deg: pinhole field of view (ignored for orthographic).
        margin: free border around the unit sphere, as a fraction of the half-image.

    Returns:
        The :class:`CameraRig`.
    """
    angle_list = tuple(float(a) for a in torch.as_tensor(angles, dtype=torch.float64).reshape(-1).tolist())
    if not angle_list:
        msg = "rotation_rig needs at least one angle."
        raise ValueError(msg)
    return CameraRig(
        rotations=rotation_matrices(angle_list, axis),
        projection=projection,
        image_size=_as_hw(image_size),
        fov_deg=fov_deg,
        margin=margin,
        angles=angle_list,
        axis=axis.lower(),
    )


def pointad_angles(num_views: int = 9) -> list[float]:
    """PointAD's rotation angles about X for ``num_views`` views (Table 7 of the paper).

    ``k * 2*pi/(num_views+1)`` for ``k = -(num_views-1)/2, ..., (num_views-1)/2``: evenly spread
    over ``(-pi, pi)`` and symmetric about 0 (0 itself is a view when ``num_views`` is odd).

    Args:
        num_views: number of views, ``>= 1``.

    Returns:
        The angles in radians, ascending.
    """
    if int(num_views) != num_views or num_views < 1:
        msg = f"num_views must be a positive integer, got {num_views!r}."
        raise ValueError(msg)
    step = 2.0 * math.pi / (num_views + 1)
    half = (num_views - 1) / 2.0
    return [(k - half) * step for k in range(int(num_views))]


def pointad_rig(
    num_views: int = 9,
    *,
    projection: Projection = "orthographic",
    image_size: int | Sequence[int] = 336,
    fov_deg: float = 60.0,
    margin: float = 0.1,
) -> CameraRig:
    """PointAD's multi-view rig: rotations about X at :func:`pointad_angles` (default 9 views, 336 px).

    The authors render with Open3D's default (perspective, 60 degree) camera; we default to an
    orthographic camera so an object's apparent size does not change with depth. Pass
    ``projection="pinhole"`` to mimic Open3D's perspective more closely.
    """
    return rotation_rig(
        pointad_angles(num_views),
        axis="x",
        projection=projection,
        image_size=image_size,
        fov_deg=fov_deg,
        margin=margin,
    )


def fit_unit_sphere(points: Tensor, batch: Tensor, num_clouds: int) -> tuple[Tensor, Tensor, Tensor]:
    """Centre every cloud at its bounding-box centre and scale it into the unit sphere.

    Args:
        points: ``(N, 3)`` float coordinates.
        batch: ``(N,)`` long cloud index of each point.
        num_clouds: ``B``.

    Returns:
        ``(normalised (N, 3), centre (B, 3), scale (B,))`` with ``normalised = (points - centre) / scale``;
        ``scale`` is the largest distance from the centre (1 for a single-point cloud).
    """
    if num_clouds == 1:
        lows, highs = points.aminmax(dim=0)
        centre = ((lows + highs) / 2.0).unsqueeze(0)
        centred = points - centre
        radius = centred.norm(dim=1).max().reshape(1)
        scale = torch.where(radius > 0, radius, torch.ones_like(radius))
        return centred / scale, centre, scale
    index = batch.unsqueeze(1).expand(-1, 3)
    lows = points.new_full((num_clouds, 3), math.inf).scatter_reduce(0, index, points, "amin")
    highs = points.new_full((num_clouds, 3), -math.inf).scatter_reduce(0, index, points, "amax")
    # Clouds without points (allowed in a batch) get a neutral centre instead of NaN.
    centre = torch.where(torch.isfinite(lows), (lows + highs) / 2.0, torch.zeros_like(lows))
    centred = points - centre[batch]
    radius = points.new_zeros(num_clouds).scatter_reduce(0, batch, centred.norm(dim=1), "amax")
    scale = torch.where(radius > 0, radius, torch.ones_like(radius))
    return centred / scale[batch].unsqueeze(1), centre, scale


# ----------------------------------------------------------------------------------------------
# rigs from any list of rotations, and the named presets

#: Sensor frame (camera at the origin looking along +z, y down) -> the authors' object frame: a
#: rotation by pi about X, ``(x, y, z) -> (x, -y, -z)``. The sensor-facing side then faces our
#: camera (+Z) and the image stays upright.
SENSOR_TO_OBJECT = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])

#: The authors' Eyecandies frame (``multiview_eyecandies.py``): the axis swap ``(x, y, z) ->
#: (x, -z, y)`` (a quarter turn about X; their 0.1 scale does not change the pictures) and then
#: their 45 degree tilt about X: 3/4 pi about X in all. We apply it to camera-frame clouds, the
#: only reading under which the candy's scanned side faces the camera (their script reads PLY
#: files made by a tool not in their repository).
EYECANDIES_SENSOR_TO_OBJECT = torch.tensor(
    [[1.0, 0.0, 0.0], [0.0, -math.sqrt(0.5), -math.sqrt(0.5)], [0.0, math.sqrt(0.5), -math.sqrt(0.5)]]
)

#: Named rigs, as ``(axis, degrees)`` rotations of the object.
RIG_PRESETS: dict[str, tuple[tuple[str, float], ...]] = {
    # The authors' MVTec 3D-AD rig (multiview_mvtec.py): X tilts, then Y tilts.
    "pointad_mvtec": (
        ("x", -45.0), ("x", -15.0), ("x", 0.0), ("x", 15.0), ("x", 45.0),
        ("y", -30.0), ("y", -15.0), ("y", 15.0), ("y", 30.0),
    ),
    # The paper's 9 views (Table 7) and the authors' Real3D-AD rig (multiview_real3d.py).
    "pointad_real3d": tuple(("x", 36.0 * k) for k in range(-4, 5)),
    # The authors' Eyecandies rig (multiview_eyecandies.py): X tilts, then Y tilts.
    "pointad_eyecandies": (
        ("x", -30.0), ("x", -15.0), ("x", 0.0), ("x", 10.0), ("x", 20.0),
        ("y", -30.0), ("y", -15.0), ("y", 15.0), ("y", 30.0),
    ),
}

RotationSpec = Tensor | Sequence[float] | Sequence[Sequence[float]] | tuple[str, float] | Sequence[tuple[str, float]]


def _is_axis_pair(spec: object) -> bool:
    return (
        isinstance(spec, (tuple, list))
        and len(spec) == 2
        and isinstance(spec[0], str)
        and isinstance(spec[1], (int, float))
        and not isinstance(spec[1], bool)
    )


def _one_rotation(spec: object) -> tuple[Tensor, str]:
    """``(3, 3)`` float64 matrix and caption of one rotation spec."""
    if _is_axis_pair(spec):
        axis, degrees = spec[0].lower(), float(spec[1])
        return rotation_matrices([math.radians(degrees)], axis)[0].double(), f"{axis.upper()} {degrees:g}°"
    if isinstance(spec, str) or spec is None:
        msg = f"a rotation must be an (axis, degrees) pair, a list of them or a 3x3 matrix, got {spec!r}."
        raise ValueError(msg)
    if isinstance(spec, (tuple, list)) and spec and all(_is_axis_pair(s) for s in spec):
        matrix = torch.eye(3, dtype=torch.float64)
        parts = []
        for part in spec:  # applied left to right: the first pair acts first on the object
            step, caption = _one_rotation(part)
            matrix = step @ matrix
            parts.append(caption)
        return matrix, " then ".join(parts)
    matrix = torch.as_tensor(spec, dtype=torch.float64)
    if matrix.shape != (3, 3):
        msg = f"a rotation matrix must be 3x3, got shape {tuple(matrix.shape)} from {spec!r}."
        raise ValueError(msg)
    if not torch.allclose(matrix @ matrix.T, torch.eye(3, dtype=torch.float64), atol=1e-4) or abs(
        float(torch.linalg.det(matrix)) - 1.0
    ) > 1e-4:
        msg = f"not a rotation matrix (R R^T != I or det != 1): {matrix.tolist()}."
        raise ValueError(msg)
    return matrix, "matrix"


def view_rotations(views: Tensor | Sequence[RotationSpec]) -> tuple[Tensor, tuple[str, ...]]:
    """``(V, 3, 3)`` float32 rotations and captions of a list of rotation specs.

    Args:
        views: a ``(V, 3, 3)`` tensor, or a list whose items are each an ``(axis, degrees)`` pair
            (``("y", -30)``), a list of pairs composed left to right (``[("x", 180), ("y", 15)]``:
            X first), or a ``3 x 3`` rotation matrix (nested lists or a tensor).

    Returns:
        ``(rotations (V, 3, 3), captions)``.
    """
    if isinstance(views, Tensor) and views.ndim == 3:
        return torch.stack([_one_rotation(m)[0] for m in views]).float(), tuple(f"view {i}" for i in range(len(views)))
    if _is_axis_pair(views):
        views = [views]
    items = [_one_rotation(v) for v in views]
    if not items:
        msg = "a rig needs at least one view."
        raise ValueError(msg)
    return torch.stack([m for m, _ in items]).float(), tuple(c for _, c in items)


def rig_from_rotations(
    views: Tensor | Sequence[RotationSpec],
    *,
    projection: Projection = "orthographic",
    image_size: int | Sequence[int] = 336,
    fov_deg: float = 60.0,
    margin: float = 0.1,
) -> CameraRig:
    """Rig of any list of rotations (any axes, composed pairs or matrices; see :func:`view_rotations`).

    Example:
        ``rig_from_rotations([("x", -45), ("x", 0), ("y", 30)])`` — three views, two tilted about
        X, one about Y.
    """
    rotations, captions = view_rotations(views)
    return CameraRig(
        rotations=rotations,
        projection=projection,
        image_size=_as_hw(image_size),
        fov_deg=fov_deg,
        margin=margin,
        labels=captions,
    )


def rig_preset(
    name: str,
    *,
    projection: Projection = "orthographic",
    image_size: int | Sequence[int] = 336,
    fov_deg: float = 60.0,
    margin: float = 0.1,
) -> CameraRig:
    """The named rig of :data:`RIG_PRESETS` (``"pointad_mvtec"``, ``"pointad_real3d"``, ``"pointad_eyecandies"``)."""
    if name not in RIG_PRESETS:
        msg = f"unknown rig preset {name!r}; choose one of {sorted(RIG_PRESETS)} or pass explicit rotations."
        raise ValueError(msg)
    return rig_from_rotations(
        RIG_PRESETS[name], projection=projection, image_size=image_size, fov_deg=fov_deg, margin=margin
    )
