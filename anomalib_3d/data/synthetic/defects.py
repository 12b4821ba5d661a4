"""The six Anomaly-ShapeNet defect types as real geometric edits of a dense mesh, with exact labels.

A defect moves vertices of the clean mesh (keeping their indices) and/or removes faces. Labels
are then exact by construction:

* a surface point is **anomalous when the defect moved it by more than** ``label_tolerance``
  (``LABEL_TOLERANCE_FRACTION * sqrt(surface area)``, i.e. 0.2 % of the part's size) - its
  displacement is interpolated with the same barycentric weights that place it on the mesh;
* for a **hole** (surface removed inside a ball of radius ``r`` around a surface point ``c``),
  the remaining points on the rim are anomalous when ``|p - c| <= r + rim_width`` with
  ``rim_width = max(0.35 r, 1.5 * mean edge length)``; no point remains inside the ball.

What each defect does (``l = sqrt(surface area)``; every size below is drawn per sample):

``bulge`` / ``concavity``
    All vertices within ``r`` of a surface point ``c`` move by ``+-a (1 - (d/r)^2)^2 n_c``
    (``n_c`` the surface normal at ``c``). Moving whole walls along one direction makes a dent
    in a thin wall dent both of its faces, as a real dent does. ``a`` is 20-35 % of ``r``.
``hole``
    Faces touching the ball ``|v - c| < r`` are deleted (a through hole in thin walls).
``break``
    A chunk is cut off by a plane near an extremity (a rim, a tooth, a corner): vertices beyond
    the plane are projected onto it, so the part keeps a flat cut face where the chunk was; the
    cut face is the labelled region.
``bending``
    The part beyond a hinge plane is rotated by 15-30 degrees about an axis lying in the plane,
    the angle ramping up smoothly over the first 30 % so the surface stays continuous; the bent
    part (everything that moved more than the tolerance) is labelled, the hinge start is not.
``crack``
    A long narrow jagged groove (width ~5 edge lengths, length 30-50 % of ``l``, sometimes with
    a branch): vertices in the band move inwards along their normals with a V profile whose
    depth stays below half the wall thickness.

Each defect is redrawn (up to a few times) until its labelled fraction of the surface area
lies in a per-type range within 1-10 % (crack: 0.8-5 %), like Anomaly-ShapeNet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anomalib_3d.data.synthetic.shapes import Mesh, _normalize, cross3, sample_surface

DEFECT_TYPES = ("bulge", "concavity", "hole", "break", "bending", "crack")
LABEL_TOLERANCE_FRACTION = 0.002
"""Label tolerance as a fraction of ``sqrt(surface area)``."""

# Labelled-area fraction each defect must reach (lower, upper), before point sampling.
_TARGET_FRACTION = {
    "bulge": (0.015, 0.10),
    "concavity": (0.015, 0.10),
    "hole": (0.01, 0.08),
    "break": (0.015, 0.09),
    "bending": (0.02, 0.10),
    "crack": (0.008, 0.05),
}
_MAX_ATTEMPTS = 12


@dataclass
class DefectResult:
    """A defective copy of a clean mesh.

    Attributes:
        defect: one of :data:`DEFECT_TYPES`.
        vertices: ``(V, 3)`` moved vertices, index-aligned with the clean mesh.
        displacement: ``(V, 3)`` ``vertices - clean vertices``.
        kept_faces: ``(F,) bool`` which clean faces remain (all but a hole's).
        faces: ``(F_kept, 3)`` the remaining faces.
        label_tolerance: displacement above which a point is anomalous.
        center: ``(3,)`` a point at the heart of the defect (for cameras and plots).
        hole_radius, rim_width: hole geometry (0 for other defects).
        cut_normal: ``(3,)`` outward normal of a break's cut face, else ``None``.
        thickness: thinnest wall of the clean part (copied through).
    """

    defect: str
    vertices: np.ndarray
    displacement: np.ndarray
    kept_faces: np.ndarray
    faces: np.ndarray
    label_tolerance: float
    center: np.ndarray
    hole_radius: float = 0.0
    rim_width: float = 0.0
    cut_normal: np.ndarray | None = None
    thickness: float = 1.0

    @property
    def mesh(self) -> Mesh:
        """The defective mesh (removed faces dropped; vertices kept so indices stay valid)."""
        return Mesh(self.vertices, self.faces, self.thickness)

    def displacement_at(self, faces: np.ndarray, face_index: np.ndarray, bary: np.ndarray) -> np.ndarray:
        """``(N,)`` displacement magnitude of surface points given by face + barycentrics."""
        corners = faces[face_index]
        moved = np.einsum("nk,nkd->nd", bary, self.displacement[corners])
        return np.linalg.norm(moved, axis=1)

    def point_labels(self, face_index: np.ndarray, bary: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Exact labels of points sampled on :attr:`mesh`.

        Args:
            face_index: ``(N,)`` indices into :attr:`faces`.
            bary: ``(N, 3)`` barycentric coordinates.
            points: ``(N, 3)`` the points (defective-mesh coordinates).

        Returns:
            ``(N,) bool``, True = anomalous.
        """
        labels = self.displacement_at(self.faces, face_index, bary) > self.label_tolerance
        if self.hole_radius > 0:
            labels |= np.linalg.norm(points - self.center, axis=1) <= self.hole_radius + self.rim_width
        return labels

    def clean_surface_changed(self, clean_faces: np.ndarray, face_index: np.ndarray, bary: np.ndarray) -> np.ndarray:
        """Whether points of the *clean* surface were altered or removed by the defect.

        Used for organized scans: a pixel whose ray would have hit removed or moved surface of
        the good part is anomalous even when the defective part shows something else there.

        Args:
            clean_faces: ``(F, 3)`` faces of the clean mesh.
            face_index: ``(N,)`` indices into ``clean_faces``.
            bary: ``(N, 3)`` barycentric coordinates.
        """
        removed = ~self.kept_faces[face_index]
        return removed | (self.displacement_at(clean_faces, face_index, bary) > self.label_tolerance)


def no_defect(mesh: Mesh) -> DefectResult:
    """The identity edit (a good sample), so good and defective samples share one code path."""
    return DefectResult(
        defect="good",
        vertices=mesh.vertices,
        displacement=np.zeros_like(mesh.vertices),
        kept_faces=np.ones(len(mesh.faces), dtype=bool),
        faces=mesh.faces,
        label_tolerance=label_tolerance(mesh),
        center=mesh.vertices.mean(axis=0),
        thickness=mesh.thickness,
    )


def label_tolerance(mesh: Mesh) -> float:
    """Displacement above which a surface point counts as anomalous."""
    return LABEL_TOLERANCE_FRACTION * float(np.sqrt(mesh.area))


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _pick_anchor(
    mesh: Mesh, rng: np.random.Generator, anchors: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """A surface point and its normal: from ``anchors`` (e.g. the visible points of a scan)
    when given, else area-uniform on the mesh."""
    if anchors is not None and len(anchors[0]):
        k = int(rng.integers(len(anchors[0])))
        return np.asarray(anchors[0][k], dtype=np.float64), _normalize(np.asarray(anchors[1][k], dtype=np.float64))
    points, face_index, _ = sample_surface(mesh.vertices, mesh.faces, 1, rng)
    return points[0], mesh.face_normals[face_index[0]]


def _random_direction(rng: np.random.Generator, preferred: np.ndarray | None, max_angle_deg: float) -> np.ndarray:
    """Unit vector within ``max_angle_deg`` of ``preferred`` (uniform on that spherical cap)."""
    preferred = np.array([0.0, 0.0, 1.0]) if preferred is None else _normalize(np.asarray(preferred, dtype=np.float64))
    cos_max = np.cos(np.radians(max_angle_deg))
    cos_t = rng.uniform(cos_max, 1.0)
    phi = rng.uniform(0.0, 2 * np.pi)
    helper = np.array([1.0, 0.0, 0.0]) if abs(preferred[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = _normalize(np.cross(preferred, helper))
    e2 = np.cross(preferred, e1)
    sin_t = np.sqrt(1 - cos_t**2)
    return cos_t * preferred + sin_t * (np.cos(phi) * e1 + np.sin(phi) * e2)


def _tangent(normal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    helper = _normalize(rng.normal(size=3))
    t = np.cross(normal, helper)
    while np.linalg.norm(t) < 1e-6:
        t = np.cross(normal, _normalize(rng.normal(size=3)))
    return _normalize(t)


def _rotate(points: np.ndarray, axis: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rodrigues rotation of ``points (N, 3)`` about unit ``axis`` by per-point ``angles``."""
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
    cross = cross3(np.broadcast_to(axis, points.shape), points)
    dot = points @ axis
    return points * cos + cross * sin + np.outer(dot, axis) * (1 - cos)


def _labelled_area_fraction(result: DefectResult, mesh: Mesh) -> float:
    """Area fraction of the defective surface that is labelled (face-centroid estimate).

    Only faces touching moved vertices (or near a hole) can be labelled, so the full-mesh work
    is a few vectorized passes over vertices; the binary searches call this many times.
    """
    touched = np.abs(result.displacement).max(axis=1) > 0
    if result.hole_radius > 0:
        reach = result.hole_radius + result.rim_width + 2 * mesh.mean_edge_length
        touched |= np.linalg.norm(mesh.vertices - result.center, axis=1) < reach
    candidates = np.flatnonzero(touched[mesh.faces].any(axis=1) & result.kept_faces)
    kept_area = float(mesh.face_areas[result.kept_faces].sum())
    if len(candidates) == 0:
        return 0.0
    corners = result.vertices[mesh.faces[candidates]]
    areas = 0.5 * np.linalg.norm(cross3(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    third = np.full((len(candidates), 3), 1.0 / 3.0)
    labels = result.displacement_at(mesh.faces, candidates, third) > result.label_tolerance
    if result.hole_radius > 0:
        labels |= np.linalg.norm(corners.mean(axis=1) - result.center, axis=1) <= result.hole_radius + result.rim_width
    total = kept_area - float(mesh.face_areas[candidates].sum()) + float(areas.sum())
    return float(areas[labels].sum() / max(total, 1e-12))


def _result(mesh: Mesh, defect: str, vertices: np.ndarray, center: np.ndarray, **kwargs) -> DefectResult:
    kept = kwargs.pop("kept_faces", np.ones(len(mesh.faces), dtype=bool))
    return DefectResult(
        defect=defect,
        vertices=vertices,
        displacement=vertices - mesh.vertices,
        kept_faces=kept,
        faces=mesh.faces[kept],
        label_tolerance=label_tolerance(mesh),
        center=np.asarray(center, dtype=np.float64),
        thickness=mesh.thickness,
        **kwargs,
    )


# ----------------------------------------------------------------------------------------------
# Defects
# ----------------------------------------------------------------------------------------------


def _bump(mesh: Mesh, rng: np.random.Generator, anchors, preferred, scale: float, sign: float, defect: str) -> DefectResult:
    center, normal = _pick_anchor(mesh, rng, anchors)
    fraction = scale * rng.uniform(0.025, 0.06)
    radius = np.sqrt(fraction * mesh.area / np.pi)
    height = sign * rng.uniform(0.2, 0.35) * radius
    q2 = np.sum((mesh.vertices - center) ** 2, axis=1) / radius**2
    weight = np.where(q2 < 1.0, (1.0 - np.minimum(q2, 1.0)) ** 2, 0.0)
    vertices = mesh.vertices + height * weight[:, None] * normal
    return _result(mesh, defect, vertices, center)


def _hole(mesh: Mesh, rng: np.random.Generator, anchors, preferred, scale: float) -> DefectResult:
    center, _ = _pick_anchor(mesh, rng, anchors)
    fraction = scale * rng.uniform(0.015, 0.04)
    radius = np.sqrt(fraction * mesh.area / np.pi)
    inside = np.linalg.norm(mesh.vertices - center, axis=1) < radius
    kept = ~inside[mesh.faces].any(axis=1)
    rim = max(0.35 * radius, 1.5 * mesh.mean_edge_length)
    return _result(mesh, "hole", mesh.vertices.copy(), center, kept_faces=kept, hole_radius=float(radius), rim_width=float(rim))


def _extremity(mesh: Mesh, rng: np.random.Generator, preferred) -> tuple[np.ndarray, np.ndarray, float]:
    """A direction toward an extremity of the part and the vertices' heights along it."""
    direction = _random_direction(rng, preferred, 75.0)
    heights = mesh.vertices @ direction
    return direction, heights, float(heights.max())


def _break(mesh: Mesh, rng: np.random.Generator, anchors, preferred, scale: float) -> DefectResult:
    direction, heights, top = _extremity(mesh, rng, preferred)
    target = scale * rng.uniform(0.025, 0.06)
    extent = top - heights.min()

    def cut(depth: float) -> DefectResult:
        plane = top - depth
        beyond = np.maximum(heights - plane, 0.0)
        vertices = mesh.vertices - beyond[:, None] * direction
        moved = beyond > 0
        center = vertices[moved].mean(axis=0) if moved.any() else mesh.vertices[np.argmax(heights)]
        return _result(mesh, "break", vertices, center, cut_normal=direction)

    # Binary search on the cut depth for the labelled (flattened) area; it grows with depth.
    # Only faces reaching beyond the plane change, so each step works on those alone.
    face_top = heights[mesh.faces].max(axis=1)
    tolerance = label_tolerance(mesh)
    total_area = mesh.area

    def labelled_fraction(depth: float) -> float:
        plane = top - depth
        candidates = np.flatnonzero(face_top > plane)
        corners = mesh.vertices[mesh.faces[candidates]]
        beyond = np.maximum(heights[mesh.faces[candidates]] - plane, 0.0)
        moved = corners - beyond[..., None] * direction
        areas = 0.5 * np.linalg.norm(cross3(moved[:, 1] - moved[:, 0], moved[:, 2] - moved[:, 0]), axis=1)
        labelled = beyond.mean(axis=1) > tolerance
        total = total_area - mesh.face_areas[candidates].sum() + areas.sum()
        return float(areas[labelled].sum() / total)

    low, high = 0.0, 0.5 * extent
    for _ in range(16):
        middle = 0.5 * (low + high)
        if labelled_fraction(middle) < target:
            low = middle
        else:
            high = middle
    return cut(high)


def _bending(mesh: Mesh, rng: np.random.Generator, anchors, preferred, scale: float) -> DefectResult:
    direction, heights, top = _extremity(mesh, rng, preferred)
    target = scale * rng.uniform(0.035, 0.08)
    # Area attributed to vertices, to size the bent part by surface fraction.
    vertex_area = np.bincount(mesh.faces.ravel(), weights=np.repeat(mesh.face_areas / 3.0, 3), minlength=len(mesh.vertices))
    order = np.argsort(-heights)
    cumulative = np.cumsum(vertex_area[order]) / vertex_area.sum()
    hinge = float(heights[order[min(np.searchsorted(cumulative, target), len(order) - 1)]])
    depth = max(top - hinge, 1e-6)
    # Bend about a horizontal axis across the direction (a neck tilts, a plate corner lifts).
    axis = np.cross(direction, [0.0, 0.0, 1.0])
    if np.linalg.norm(axis) < 0.3:
        axis = np.cross(direction, _tangent(direction, rng))
    axis = _normalize(axis)
    beyond = heights > hinge
    pivot_source = mesh.vertices[beyond].mean(axis=0) if beyond.any() else mesh.vertices[order[0]]
    pivot = pivot_source - ((pivot_source @ direction) - hinge) * direction
    angle = np.radians(rng.uniform(15.0, 30.0)) * rng.choice([-1.0, 1.0])
    ramp = np.clip((heights - hinge) / (0.3 * depth), 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)
    vertices = mesh.vertices.copy()
    vertices[beyond] = pivot + _rotate(mesh.vertices[beyond] - pivot, axis, angle * ramp[beyond])
    return _result(mesh, "bending", vertices, pivot_source)


def _crack(mesh: Mesh, rng: np.random.Generator, anchors, preferred, scale: float) -> DefectResult:
    # A crack is already thin; its length does not shrink with ``scale``.
    center, normal = _pick_anchor(mesh, rng, anchors)
    scale = np.sqrt(mesh.area)
    width = rng.uniform(4.5, 6.0) * mesh.mean_edge_length
    depth = min(0.45 * mesh.thickness, 0.7 * width) * rng.uniform(0.75, 1.0)
    vertex_normals = mesh.vertex_normals
    offset = mesh.vertices - center
    facing = np.clip((vertex_normals @ normal - 0.4) / 0.3, 0.0, 1.0)
    near_plane = np.abs(offset @ normal) < 0.3 * scale
    profile = np.zeros(len(mesh.vertices))
    segments = [(center, _tangent(normal, rng), rng.uniform(0.3, 0.5) * scale)]
    if rng.random() < 0.5:  # a branch leaving the main crack at an angle
        start, main_dir, length = segments[0]
        along = rng.uniform(-0.25, 0.25) * length
        turn = np.radians(rng.uniform(30.0, 60.0)) * rng.choice([-1.0, 1.0])
        branch = _rotate(main_dir[None], normal, np.array([turn]))[0]
        branch_length = rng.uniform(0.35, 0.55) * length
        segments.append((start + along * main_dir + 0.5 * branch_length * branch, branch, branch_length))
    for start, tangent, length in segments:
        across_dir = np.cross(normal, tangent)
        rel = mesh.vertices - start
        along = rel @ tangent
        phases = rng.uniform(0.0, 2 * np.pi, 2)
        wiggle = 0.5 * width * (
            np.sin(2 * np.pi * along / (0.35 * length) + phases[0]) + 0.5 * np.sin(2 * np.pi * along / (0.13 * length) + phases[1])
        )
        across = rel @ across_dir - wiggle
        v_shape = np.clip(1.0 - np.abs(across) / (0.5 * width), 0.0, 1.0)
        taper = np.clip((0.5 * length - np.abs(along)) / (0.15 * length), 0.0, 1.0)
        profile = np.maximum(profile, v_shape * taper)
    profile *= facing * near_plane
    vertices = mesh.vertices - depth * profile[:, None] * vertex_normals
    return _result(mesh, "crack", vertices, center)


_BUILDERS = {
    "bulge": lambda m, r, a, p, s: _bump(m, r, a, p, s, +1.0, "bulge"),
    "concavity": lambda m, r, a, p, s: _bump(m, r, a, p, s, -1.0, "concavity"),
    "hole": _hole,
    "break": _break,
    "bending": _bending,
    "crack": _crack,
}


def apply_defect(
    mesh: Mesh,
    defect: str,
    rng: np.random.Generator,
    anchors: tuple[np.ndarray, np.ndarray] | None = None,
    preferred_direction: np.ndarray | None = None,
    size_scale: float = 1.0,
) -> DefectResult:
    """Apply one defect to a clean mesh.

    Args:
        mesh: the clean part.
        defect: one of :data:`DEFECT_TYPES` (or ``"good"`` for no change).
        rng: seeded generator; the same seed gives the same defect.
        anchors: optional ``(points (K, 3), normals (K, 3))`` candidate defect centres on the
            surface, e.g. the points a camera sees, so the defect is visible in a scan.
        preferred_direction: optional ``(3,)`` direction around which break/bending pick the
            extremity to cut or bend (default ``+z``: tops, rims and upper edges).
        size_scale: multiplies the surface fraction a defect covers (all types but crack);
            organized scans use 0.5 since their defects are placed on the visible side.

    Returns:
        :class:`DefectResult` whose labelled area fraction lies in the defect's target range
        (the closest of several draws if none does).
    """
    if defect == "good":
        return no_defect(mesh)
    if defect not in _BUILDERS:
        raise ValueError(f"unknown defect {defect!r}; choose one of {DEFECT_TYPES}")
    low, high = _TARGET_FRACTION[defect]
    if defect != "crack":
        low, high = low * size_scale, high * size_scale
    best, best_gap = None, np.inf
    for _ in range(_MAX_ATTEMPTS):
        result = _BUILDERS[defect](mesh, rng, anchors, preferred_direction, size_scale)
        fraction = _labelled_area_fraction(result, mesh)
        gap = max(low - fraction, fraction - high, 0.0)
        if gap == 0.0:
            return result
        if gap < best_gap:
            best, best_gap = result, gap
    return best


__all__ = ["DEFECT_TYPES", "LABEL_TOLERANCE_FRACTION", "DefectResult", "apply_defect", "label_tolerance", "no_defect"]
