"""Procedural "industrial part" shape families as dense, closed, consistently oriented meshes.

Every family builder takes a seeded ``numpy.random.Generator`` and returns a :class:`Mesh`
whose dimensions vary per sample (radii, heights, tooth counts, hole patterns ...). Parts stand
on the plane ``z = 0`` and are centred on the ``z`` axis; sizes are about one unit, so they look
like normalized Anomaly-ShapeNet objects (the organized scanner rescales them to ~10 cm).

Meshes are built from structured grids (surfaces of revolution, star-shaped extrusions, tiled
plates) with a target edge length :data:`DEFAULT_EDGE_LENGTH`, dense enough for defects to be
real geometric changes of the surface rather than moved labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

DEFAULT_EDGE_LENGTH = 0.015
"""Target triangle edge length in object units (objects are ~1 unit tall/wide)."""


@dataclass
class Mesh:
    """A closed triangle mesh.

    Attributes:
        vertices: ``(V, 3) float64``.
        faces: ``(F, 3) int64`` vertex indices, counter-clockwise seen from outside.
        thickness: thinnest wall of the part; bounds how deep an inward defect may go.
    """

    vertices: np.ndarray
    faces: np.ndarray
    thickness: float

    @cached_property
    def face_normals(self) -> np.ndarray:
        """``(F, 3)`` unit normals (zero for degenerate faces)."""
        return _normalize(self._face_cross)

    @cached_property
    def face_areas(self) -> np.ndarray:
        """``(F,)`` triangle areas."""
        return 0.5 * np.linalg.norm(self._face_cross, axis=1)

    @cached_property
    def vertex_normals(self) -> np.ndarray:
        """``(V, 3)`` area-weighted unit vertex normals (smooth across edges of welded meshes)."""
        accumulated = np.zeros_like(self.vertices)
        for corner in range(3):
            for axis in range(3):
                accumulated[:, axis] += np.bincount(
                    self.faces[:, corner], weights=self._face_cross[:, axis], minlength=len(self.vertices)
                )
        return _normalize(accumulated)

    @property
    def area(self) -> float:
        return float(self.face_areas.sum())

    @property
    def signed_volume(self) -> float:
        v0, v1, v2 = (self.vertices[self.faces[:, k]] for k in range(3))
        return float(np.einsum("ij,ij->i", v0, cross3(v1, v2)).sum() / 6.0)

    @cached_property
    def mean_edge_length(self) -> float:
        v = self.vertices[self.faces]
        return float(np.linalg.norm(v[:, 1] - v[:, 0], axis=1).mean())

    @cached_property
    def _face_cross(self) -> np.ndarray:
        return triangle_cross(self.vertices, self.faces)


def cross3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of ``(N, 3)`` arrays (several times faster than ``np.cross``)."""
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


def triangle_cross(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``(F, 3)`` un-normalized face normals ``(v1 - v0) x (v2 - v0)`` (twice the area)."""
    v0 = vertices[faces[:, 0]]
    return cross3(vertices[faces[:, 1]] - v0, vertices[faces[:, 2]] - v0)


def _normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


# ----------------------------------------------------------------------------------------------
# 2D profile tools
# ----------------------------------------------------------------------------------------------


def rounded_polyline(corners: np.ndarray, radii: np.ndarray | list[float], arc_points: int = 12) -> np.ndarray:
    """Replace the interior corners of a 2D polyline by circular fillets.

    Args:
        corners: ``(K, 2)`` polyline vertices.
        radii: ``(K,)`` fillet radius per vertex (ends and zeros are kept sharp). A radius is
            shrunk when the neighbouring segments are too short for it.
        arc_points: points per fillet arc.

    Returns:
        ``(M, 2)`` dense polyline.
    """
    corners = np.asarray(corners, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    out = [corners[0]]
    for k in range(1, len(corners) - 1):
        p, a, b = corners[k], corners[k - 1], corners[k + 1]
        u1, u2 = a - p, b - p
        l1, l2 = np.linalg.norm(u1), np.linalg.norm(u2)
        u1, u2 = u1 / l1, u2 / l2
        half = 0.5 * np.arccos(np.clip(u1 @ u2, -1.0, 1.0))
        if radii[k] <= 0 or half > np.pi / 2 - 1e-6 or half < 1e-6:
            out.append(p)
            continue
        tangent_distance = min(radii[k] / np.tan(half), 0.45 * min(l1, l2))
        radius = tangent_distance * np.tan(half)
        t1, t2 = p + u1 * tangent_distance, p + u2 * tangent_distance
        bisector = (u1 + u2) / np.linalg.norm(u1 + u2)
        centre = p + bisector * radius / np.sin(half)
        a1 = np.arctan2(*(t1 - centre)[::-1])
        a2 = np.arctan2(*(t2 - centre)[::-1])
        sweep = (a2 - a1 + np.pi) % (2 * np.pi) - np.pi  # the short way round
        angles = a1 + sweep * np.linspace(0.0, 1.0, arc_points)
        out.extend(centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1))
    out.append(corners[-1])
    return np.asarray(out)


def fillet_dense(points: np.ndarray, index: int, distance: float, samples: int = 24) -> np.ndarray:
    """Round the corner ``points[index]`` of a (possibly dense) 2D polyline.

    The stretch within arc length ``distance`` on both sides of the corner is replaced by a
    cubic Bezier tangent to the polyline at both ends, so the corner's radius of curvature is
    about ``distance`` however finely the neighbouring curve is sampled (unlike
    :func:`rounded_polyline`, whose fillet is limited by the neighbouring segment lengths).
    """
    points = np.asarray(points, dtype=np.float64)
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    at = arc[index]
    start_s, end_s = max(at - distance, 0.0), min(at + distance, arc[-1])

    def point_at(s: float) -> tuple[np.ndarray, np.ndarray]:
        k = int(np.clip(np.searchsorted(arc, s, side="right") - 1, 0, len(points) - 2))
        t = (s - arc[k]) / max(seg[k], 1e-15)
        return points[k] + t * (points[k + 1] - points[k]), (points[k + 1] - points[k]) / max(seg[k], 1e-15)

    p0, d0 = point_at(start_s)
    p3, d3 = point_at(end_s - 1e-12)
    handle = 0.55 * distance
    p1, p2 = p0 + handle * d0, p3 - handle * d3
    t = np.linspace(0.0, 1.0, samples)[:, None]
    curve = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
    before = points[arc < start_s]
    after = points[arc > end_s]
    return np.concatenate([before, curve, after])


def resample_polyline(points: np.ndarray, spacing: float, closed: bool = False) -> np.ndarray:
    """Resample a dense 2D/3D polyline at (about) uniform arc-length ``spacing``.

    End points are kept exactly; for ``closed`` polylines the first point is not repeated.
    """
    pts = np.asarray(points, dtype=np.float64)
    if closed:
        pts = np.concatenate([pts, pts[:1]])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    count = max(3 if closed else 1, int(np.ceil(arc[-1] / spacing)))
    targets = np.linspace(0.0, arc[-1], count + 1)
    out = np.stack([np.interp(targets, arc, pts[:, d]) for d in range(pts.shape[1])], axis=1)
    out[0], out[-1] = pts[0], pts[-1]
    return out[:-1] if closed else out


def offset_polyline(points: np.ndarray, distance: float) -> np.ndarray:
    """Offset a dense 2D polyline to its left (tangent rotated by +90 degrees) by ``distance``."""
    tangent = np.gradient(points, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    left = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    return points + distance * left


# ----------------------------------------------------------------------------------------------
# Mesh builders
# ----------------------------------------------------------------------------------------------


def revolve(
    profile: np.ndarray,
    theta: np.ndarray,
    radius_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    closed: bool = False,
    thickness: float = 1.0,
) -> Mesh:
    """Sweep a profile around the ``z`` axis (a lathe), optionally with angle-dependent radius.

    Args:
        profile: ``(K, 2)`` ``(r, z)`` points. Open profiles must start and end on the axis
            (``r == 0``; they become poles, giving a closed sphere-like surface); closed profiles
            (``closed=True``) form a loop away from the axis (torus-like surface).
        theta: ``(M,)`` increasing angles in ``[0, 2 pi)``.
        radius_fn: maps ``(profile (K, 2), theta (M,))`` to radii ``(K, M)``; default ``r``.
        closed: whether the profile is a closed loop.
        thickness: recorded on the mesh (thinnest wall).

    Returns:
        A closed, outward-oriented :class:`Mesh`.
    """
    profile = np.asarray(profile, dtype=np.float64)
    theta = np.asarray(theta, dtype=np.float64)
    num_angles = len(theta)
    radii = np.repeat(profile[:, :1], num_angles, axis=1) if radius_fn is None else radius_fn(profile, theta)
    cos, sin = np.cos(theta), np.sin(theta)
    rings = range(len(profile)) if closed else range(1, len(profile) - 1)
    ring_list = list(rings)
    ring_vertices = np.stack(
        [
            (radii[ring_list] * cos).ravel(),
            (radii[ring_list] * sin).ravel(),
            np.repeat(profile[ring_list, 1], num_angles),
        ],
        axis=1,
    )
    num_rings = len(ring_list)
    j = np.arange(num_angles)
    j_next = (j + 1) % num_angles
    faces = []
    pairs = [(k, (k + 1) % num_rings) for k in range(num_rings if closed else num_rings - 1)]
    for a, b in pairs:
        base_a, base_b = a * num_angles, b * num_angles
        faces.append(np.stack([base_a + j, base_a + j_next, base_b + j_next], axis=1))
        faces.append(np.stack([base_a + j, base_b + j_next, base_b + j], axis=1))
    vertices = ring_vertices
    if not closed:
        bottom = len(vertices)
        top = bottom + 1
        vertices = np.concatenate([vertices, [[0.0, 0.0, profile[0, 1]], [0.0, 0.0, profile[-1, 1]]]])
        last = (num_rings - 1) * num_angles
        faces.append(np.stack([np.full(num_angles, bottom), j_next, j], axis=1))
        faces.append(np.stack([last + j, last + j_next, np.full(num_angles, top)], axis=1))
    mesh = Mesh(vertices, np.concatenate(faces).astype(np.int64), thickness)
    return _orient_outward(mesh)


def _orient_outward(mesh: Mesh) -> Mesh:
    """Flip all faces when the (consistently wound) mesh encloses negative volume."""
    if mesh.signed_volume < 0:
        return Mesh(mesh.vertices, mesh.faces[:, ::-1].copy(), mesh.thickness)
    return mesh


def lathe(
    profile: np.ndarray,
    edge_length: float,
    radius_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    closed: bool = False,
    thickness: float = 1.0,
    min_angles: int = 48,
) -> Mesh:
    """Surface of revolution of a dense ``(r, z)`` profile, resampled to ``edge_length``."""
    dense = resample_polyline(profile, edge_length, closed=closed)
    if not closed:
        dense[0, 0] = dense[-1, 0] = 0.0
    r_max = float(np.abs(profile[:, 0]).max())
    num_angles = max(min_angles, int(np.ceil(2 * np.pi * r_max / edge_length)))
    theta = 2 * np.pi * np.arange(num_angles) / num_angles
    return revolve(dense, theta, radius_fn=radius_fn, closed=closed, thickness=thickness)


def shell_of_revolution(outer: np.ndarray, wall: float, edge_length: float, min_angles: int = 48) -> Mesh:
    """Thin-walled open vessel (cup, bowl, vase) from its outer profile.

    Args:
        outer: dense ``(r, z)`` polyline from the bottom centre ``(0, 0)`` (leaving it
            horizontally) to the rim, smooth (fillet corners to radii above ``wall``).
        wall: wall thickness; the inner surface is the outer one offset inwards, joined to it at
            the rim by a half-round lip.
    """
    inner = offset_polyline(outer, wall)
    inner[0, 0] = 0.0
    rim_outer, rim_inner = outer[-1], inner[-1]
    centre = 0.5 * (rim_outer + rim_inner)
    direction = rim_outer - centre
    start = np.arctan2(direction[1], direction[0])
    # Sweep from the outer rim point over the top to the inner one (the side away from the body).
    tangent = outer[-1] - outer[-2]
    sign = 1.0 if direction[0] * tangent[1] - direction[1] * tangent[0] > 0 else -1.0
    angles = start + sign * np.linspace(0.0, np.pi, 14)[1:-1]
    lip = centre + 0.5 * wall * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    profile = np.concatenate([outer, lip, inner[::-1]])
    return lathe(profile, edge_length, thickness=wall, min_angles=min_angles)


def extrude_star(
    outer_radius: Callable[[np.ndarray], np.ndarray],
    bore_radius: float,
    height: float,
    edge_length: float,
    chamfer: float = 0.0,
    thickness: float | None = None,
) -> Mesh:
    """Prism with a star-shaped outline ``r = outer_radius(theta)`` and a round bore.

    Built as a generalized lathe whose closed profile runs bore wall -> top -> outer wall ->
    bottom; the outline radius depends on the angle, so teeth and flats come out exactly.

    Args:
        outer_radius: maps angles ``(M,)`` to outline radii ``(M,)`` (> ``bore_radius``).
        bore_radius: radius of the central through hole.
        height: extrusion height (``z`` from 0 to ``height``).
        chamfer: size of a conical chamfer on the top and bottom outer edges (like a nut's);
            the outline is clipped by a cone whose radius is ``max(outline) - chamfer`` at the
            faces and grows at 60 degrees from them.
    """
    dense_theta = np.linspace(0.0, 2 * np.pi, 8192, endpoint=False)
    dense_r = outer_radius(dense_theta)
    outline = np.stack([dense_r * np.cos(dense_theta), dense_r * np.sin(dense_theta)], axis=1)
    outline = resample_polyline(outline, edge_length, closed=True)
    theta = np.unwrap(np.arctan2(outline[:, 1], outline[:, 0]))
    theta = np.mod(theta - theta[0], 2 * np.pi) + theta[0]
    r_out = np.linalg.norm(outline, axis=1)
    r_ref = float(r_out.max())
    corners = np.array(
        [[bore_radius, 0.0], [bore_radius, height], [r_ref, height], [r_ref, 0.0], [bore_radius, 0.0]]
    )
    pieces = [resample_polyline(corners[k : k + 2], edge_length)[:-1] for k in range(4)]
    profile = np.concatenate(pieces)
    cone_base = r_ref - chamfer

    def radius_fn(prof: np.ndarray, th: np.ndarray) -> np.ndarray:
        lam = (prof[:, :1] - bore_radius) / (r_ref - bore_radius)
        limit = r_out[None, :]
        if chamfer > 0:
            from_face = np.minimum(prof[:, 1], height - prof[:, 1])[:, None]
            limit = np.minimum(limit, cone_base + from_face * np.tan(np.radians(60.0)))
        return bore_radius + lam * (limit - bore_radius)

    mesh = revolve(profile, theta, radius_fn=radius_fn, closed=True, thickness=thickness or height)
    return mesh


def weld(vertices: np.ndarray, faces: np.ndarray, tolerance: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices closer than ``tolerance`` (quantized positions); returns new arrays."""
    keys = np.round(vertices / tolerance).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # keep first-seen order so the output does not depend on sorting
    remap = np.empty_like(order)
    remap[order] = np.arange(len(order))
    return vertices[first[order]], remap[inverse.reshape(-1)][faces]


def _grid_faces(rows: int, cols: int, offset: int = 0, wrap_cols: bool = False) -> np.ndarray:
    """Two triangles per cell of a ``rows x cols`` vertex grid (row-major indices)."""
    c = cols if wrap_cols else cols - 1
    r_idx, c_idx = np.meshgrid(np.arange(rows - 1), np.arange(c), indexing="ij")
    a = r_idx * cols + c_idx
    b = r_idx * cols + (c_idx + 1) % cols
    d = a + cols
    e = b + cols
    tri = np.concatenate([np.stack([a, b, e], -1).reshape(-1, 3), np.stack([a, e, d], -1).reshape(-1, 3)])
    return tri + offset


def tiled_plate(
    tile_size: float,
    tiles_x: int,
    tiles_y: int,
    thickness: float,
    hole_radii: np.ndarray,
    edge_length: float,
) -> Mesh:
    """Rectangular plate of square tiles, each solid or pierced by a centred round hole.

    Args:
        tile_size: side of a square tile.
        tiles_x, tiles_y: number of tiles along ``x`` and ``y``.
        thickness: plate thickness (``z`` from 0 to ``thickness``).
        hole_radii: ``(tiles_x, tiles_y)`` hole radius per tile, 0 for a solid tile.
        edge_length: target triangle edge length.

    Returns:
        A closed, outward-oriented mesh with its corner at the origin.
    """
    m = max(4, int(np.ceil(tile_size / edge_length)))
    nz = max(2, int(np.ceil(thickness / edge_length)))
    step = tile_size / m
    z_levels = np.linspace(0.0, thickness, nz + 1)
    vertex_blocks: list[np.ndarray] = []
    face_blocks: list[np.ndarray] = []
    desired: list[np.ndarray] = []  # outward direction per face, used to fix winding
    count = 0

    def add(vertices: np.ndarray, faces: np.ndarray, outward: np.ndarray) -> None:
        nonlocal count
        vertex_blocks.append(vertices)
        face_blocks.append(faces + count)
        desired.append(np.broadcast_to(outward, (len(faces), 3)) if outward.ndim == 1 else outward)
        count += len(vertices)

    def perimeter(ix: int, iy: int) -> np.ndarray:
        """Lattice points of a tile boundary, counter-clockwise from its lower-left corner."""
        i0, j0 = ix * m, iy * m
        k = np.arange(m)
        sides = [
            np.stack([i0 + k, np.full(m, j0)], 1),
            np.stack([np.full(m, i0 + m), j0 + k], 1),
            np.stack([i0 + m - k, np.full(m, j0 + m)], 1),
            np.stack([np.full(m, i0), j0 + m - k], 1),
        ]
        return np.concatenate(sides).astype(np.float64) * step

    for ix in range(tiles_x):
        for iy in range(tiles_y):
            radius = float(hole_radii[ix, iy])
            if radius > 0:
                centre = np.array([(ix + 0.5) * tile_size, (iy + 0.5) * tile_size])
                outer = perimeter(ix, iy)
                direction = outer - centre
                circle = centre + radius * direction / np.linalg.norm(direction, axis=1, keepdims=True)
                layers = max(2, int(np.ceil((0.5 * tile_size - radius) / edge_length)))
                weights = np.linspace(0.0, 1.0, layers + 1)[:, None, None]
                ring_xy = (outer[None] * (1 - weights) + circle[None] * weights).reshape(-1, 2)
                ring_xy[: len(outer)] = outer  # keep lattice points bit-exact for welding
                faces = _grid_faces(layers + 1, len(outer), wrap_cols=True)
                for z, sign in ((thickness, 1.0), (0.0, -1.0)):
                    add(np.column_stack([ring_xy, np.full(len(ring_xy), z)]), faces, np.array([0, 0, sign]))
                wall = np.concatenate([np.column_stack([circle, np.full(len(circle), z)]) for z in z_levels])
                wall_faces = _grid_faces(nz + 1, len(circle), wrap_cols=True)
                centroid = wall[wall_faces].mean(axis=1)
                inward = np.column_stack([centre - centroid[:, :2], np.zeros(len(centroid))])
                add(wall, wall_faces, inward)
            else:
                gi, gj = np.meshgrid(np.arange(m + 1) + ix * m, np.arange(m + 1) + iy * m, indexing="ij")
                grid_xy = np.column_stack([gi.ravel(), gj.ravel()]).astype(np.float64) * step
                faces = _grid_faces(m + 1, m + 1)
                for z, sign in ((thickness, 1.0), (0.0, -1.0)):
                    add(np.column_stack([grid_xy, np.full(len(grid_xy), z)]), faces, np.array([0, 0, sign]))

    # Outer side walls along the plate boundary.
    total_x, total_y = tiles_x * m, tiles_y * m
    boundary = [
        (np.stack([np.arange(total_x + 1), np.zeros(total_x + 1)], 1), np.array([0.0, -1.0, 0.0])),
        (np.stack([np.arange(total_x + 1), np.full(total_x + 1, total_y)], 1), np.array([0.0, 1.0, 0.0])),
        (np.stack([np.zeros(total_y + 1), np.arange(total_y + 1)], 1), np.array([-1.0, 0.0, 0.0])),
        (np.stack([np.full(total_y + 1, total_x), np.arange(total_y + 1)], 1), np.array([1.0, 0.0, 0.0])),
    ]
    for lattice, outward in boundary:
        xy = lattice.astype(np.float64) * step
        wall = np.concatenate([np.column_stack([xy, np.full(len(xy), z)]) for z in z_levels])
        add(wall, _grid_faces(nz + 1, len(xy)), outward)

    vertices = np.concatenate(vertex_blocks)
    faces = np.concatenate(face_blocks)
    outward = np.concatenate(desired)
    v0, v1, v2 = (vertices[faces[:, k]] for k in range(3))
    flip = np.einsum("ij,ij->i", np.cross(v1 - v0, v2 - v0), outward) < 0
    faces[flip] = faces[flip][:, ::-1]
    vertices, faces = weld(vertices, faces, tolerance=step * 1e-6)
    return Mesh(vertices, faces, thickness)


def bend_up(vertices: np.ndarray, x_start: float, inner_radius: float, thickness: float, angle: float) -> np.ndarray:
    """Bend a flat plate (``z`` in ``[0, thickness]``) upward about a line parallel to ``y``.

    Points with ``x > x_start`` are wrapped around a cylinder of inner radius ``inner_radius``
    (axis at ``x = x_start``, ``z = thickness + inner_radius``) through ``angle`` radians and
    continue straight beyond it, as in sheet-metal bending. The bottom face keeps its length.
    """
    out = vertices.copy()
    axis_z = thickness + inner_radius
    reference = inner_radius + thickness  # the bottom surface is the unstretched fibre
    travel = vertices[:, 0] - x_start
    beyond = travel > 0
    phi = np.clip(travel / reference, 0.0, angle)
    straight = np.maximum(travel - reference * angle, 0.0)
    rho = axis_z - vertices[:, 2]
    x_new = x_start + rho * np.sin(phi) + straight * np.cos(phi)
    z_new = axis_z - rho * np.cos(phi) + straight * np.sin(phi)
    out[beyond, 0] = x_new[beyond]
    out[beyond, 2] = z_new[beyond]
    return out


def _center_on_axis(mesh: Mesh) -> Mesh:
    lo, hi = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
    shift = np.array([-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2]])
    return Mesh(mesh.vertices + shift, mesh.faces, mesh.thickness)


# ----------------------------------------------------------------------------------------------
# Families
# ----------------------------------------------------------------------------------------------


def build_bottle(rng: np.random.Generator, edge_length: float = DEFAULT_EDGE_LENGTH) -> Mesh:
    """Closed bottle: body, curved shoulder, neck, lip ring and a flat cap."""
    radius = rng.uniform(0.22, 0.32)
    height = rng.uniform(0.9, 1.15)
    neck = rng.uniform(0.08, 0.11)
    shoulder = rng.uniform(0.5, 0.65) * height
    neck_start = shoulder + rng.uniform(0.15, 0.22) * height
    lip_z = height - rng.uniform(0.03, 0.05)
    s = np.linspace(0.0, 1.0, 40)[1:-1]
    shoulder_r = neck + (radius - neck) * 0.5 * (1 + np.cos(np.pi * s))
    shoulder_curve = np.stack([shoulder_r, shoulder + (neck_start - shoulder) * s], 1)
    lip = neck + 0.018
    corners = np.concatenate(
        [
            [[0.0, 0.0], [radius, 0.0], [radius, shoulder]],
            shoulder_curve,
            [[neck, neck_start], [neck, lip_z - 0.04], [lip, lip_z - 0.03], [lip, lip_z]],
            [[neck, lip_z], [neck, height], [0.0, height]],
        ]
    )
    radii = np.zeros(len(corners))
    radii[1] = 0.05
    radii[-6:-1] = [0.006, 0.008, 0.005, 0.005, 0.01]
    profile = rounded_polyline(corners, radii)
    return lathe(profile, edge_length, thickness=2 * neck)


def build_cup(rng: np.random.Generator, edge_length: float = DEFAULT_EDGE_LENGTH) -> Mesh:
    """Open cup: flat base, slightly flared wall, rounded lip, hollow inside."""
    base = rng.uniform(0.24, 0.3)
    top = base + rng.uniform(0.04, 0.12)
    height = rng.uniform(0.65, 0.9)
    wall = rng.uniform(0.03, 0.045)
    corners = np.array([[0.0, 0.0], [base, 0.0], [top, height]])
    outer = rounded_polyline(corners, [0.0, max(0.06, 2 * wall), 0.0], arc_points=20)
    outer = resample_polyline(outer, edge_length / 4)
    return shell_of_revolution(outer, wall, edge_length)


def build_bowl(rng: np.random.Generator, edge_length: float = DEFAULT_EDGE_LENGTH) -> Mesh:
    """Bowl with a flat base and a rounded body flaring out to the rim."""
    rim = rng.uniform(0.5, 0.6)
    height = rng.uniform(0.28, 0.4)
    base = rng.uniform(0.2, 0.27)
    wall = rng.uniform(0.03, 0.04)
    s = np.linspace(0.0, 1.0, 120)[1:]
    exponent = rng.uniform(0.45, 0.65)
    body = np.stack([base + (rim - base) * (1 - (1 - s) ** 2) ** exponent, height * s], 1)
    outer = np.concatenate([[[0.0, 0.0], [base, 0.0]], body])
    outer = resample_polyline(fillet_dense(outer, 1, 2.5 * wall), edge_length / 4)
    outer[:, 1] = np.maximum(outer[:, 1], 0.0)  # the Bezier fillet may dip a hair below the base
    return shell_of_revolution(outer, wall, edge_length)


def build_vase(rng: np.random.Generator, edge_length: float = DEFAULT_EDGE_LENGTH) -> Mesh:
    """Tall vase: bulbous body, narrow neck, flared lip.

    The radius follows half-cosine easing between the foot, belly, neck and lip radii, so the
    profile is smooth with horizontal tangents exactly at the belly maximum and neck minimum.
    """
    height = rng.uniform(1.0, 1.25)
    foot = rng.uniform(0.17, 0.22)
    belly = rng.uniform(0.28, 0.36)
    neck = rng.uniform(0.1, 0.14)
    lip = neck + rng.uniform(0.05, 0.1)
    wall = rng.uniform(0.025, 0.035)
    knots_z = np.array([0.0, rng.uniform(0.3, 0.4), rng.uniform(0.72, 0.8), 1.0]) * height
    knots_r = np.array([foot, belly, neck, lip])

    def radius_of_z(z: np.ndarray) -> np.ndarray:
        k = np.clip(np.searchsorted(knots_z, z, side="right") - 1, 0, len(knots_z) - 2)
        s = (z - knots_z[k]) / (knots_z[k + 1] - knots_z[k])
        ease = 0.5 - 0.5 * np.cos(np.pi * s)
        return knots_r[k] + (knots_r[k + 1] - knots_r[k]) * ease

    z = np.linspace(0.0, height, 240)
    outer = np.concatenate([[[0.0, 0.0]], np.stack([radius_of_z(z), z], 1)])
    # The foot edge turns towards the wall; its radius must exceed the wall or the inner
    # (offset) surface would fold through the outer one.
    outer = resample_polyline(fillet_dense(outer, 1, 2.5 * wall), edge_length / 4)
    outer[:, 1] = np.maximum(outer[:, 1], 0.0)
    return shell_of_revolution(outer, wall, edge_length)


def build_knob(rng: np.random.Generator, edge_length: float = DEFAULT_EDGE_LENGTH) -> Mesh:
    """Control knob: fluted skirt, tapered waist and a domed top."""
    radius = rng.uniform(0.3, 0.4)
    skirt = rng.uniform(0.15, 0.22)
    waist = radius * rng.uniform(0.75, 0.88)
    height = skirt + rng.uniform(0.15, 0.25)
    flutes = int(rng.integers(14, 25))
    depth = rng.uniform(0.025, 0.04)
    s = np.linspace(0.0, 1.0, 30)[1:]
    dome_start = skirt + 0.5 * (height - skirt)
    dome = np.stack([waist * np.cos(0.5 * np.pi * s), dome_start + (height - dome_start) * np.sin(0.5 * np.pi * s)], 1)
    corners = np.concatenate([[[0.0, 0.0], [radius, 0.0], [radius, skirt], [waist, dome_start]], dome])
    corners[-1, 0] = 0.0
    radii = np.zeros(len(corners))
    radii[1:4] = [0.02, 0.04, 0.04]
    profile = rounded_polyline(corners, radii, arc_points=12)

    def radius_fn(prof: np.ndarray, theta: np.ndarray) -> np.ndarray:
        # Flutes fade out towards the base edge and the waist so the grooves end smoothly.
        z = prof[:, 1:2]
        fade = np.clip(np.minimum(z - 0.02, skirt - z) / 0.03, 0.0, 1.0)
        groove = (0.5 + 0.5 * np.cos(flutes * theta[None, :])) ** 4
        return np.maximum(prof[:, :1] - depth * fade * groove, 0.0)

    return lathe(profile, edge_length, radius_fn=radius_fn, thickness=2 * waist, min_angles=8 * flutes)


def build_gear(rng: np.random.Generator, edge_length: float = DEFAULT_EDGE_LENGTH) -> Mesh:
    """Spur gear: trapezoidal teeth on a disc with a bore, slightly chamfered tips."""
    teeth = int(rng.integers(14, 25))
    root = rng.uniform(0.36, 0.44)
    tooth_height = rng.uniform(0.06, 0.09)
    tip = root + tooth_height
    bore = rng.uniform(0.1, 0.16)
    height = rng.uniform(0.14, 0.24)
    tip_fraction = rng.uniform(0.18, 0.26)
    root_fraction = rng.uniform(0.3, 0.38)
    flank = (1.0 - tip_fraction - root_fraction) / 2

    def outer_radius(theta: np.ndarray) -> np.ndarray:
        u = np.mod(theta * teeth / (2 * np.pi), 1.0)
        rise = np.clip(u / flank, 0.0, 1.0)
        fall = np.clip((u - flank - tip_fraction) / flank, 0.0, 1.0)
        return root + tooth_height * (rise - fall)

    tooth_width = 2 * np.pi * tip / teeth * tip_fraction
    return _center_on_axis(
        extrude_star(outer_radius, bore, height, edge_length, chamfer=0.012, thickness=min(height, tooth_width))
    )


def build_nut(rng: np.random.Generator, edge_length: float = DEFAULT_EDGE_LENGTH) -> Mesh:
    """Hex nut with a chamfered (conical) top and bottom and a round bore."""
    corner = rng.uniform(0.35, 0.45)
    across_flats = corner * np.sqrt(3.0)
    height = across_flats * rng.uniform(0.45, 0.65)
    bore = corner * rng.uniform(0.45, 0.55)
    phase = rng.uniform(0.0, np.pi / 3)

    def outer_radius(theta: np.ndarray) -> np.ndarray:
        local = np.mod(theta - phase, np.pi / 3) - np.pi / 6
        return corner * np.cos(np.pi / 6) / np.cos(local)

    chamfer = corner * rng.uniform(0.06, 0.1)
    thinnest = min(height, corner * np.cos(np.pi / 6) - bore)
    return extrude_star(outer_radius, bore, height, edge_length, chamfer=chamfer, thickness=thinnest)


def build_ring(rng: np.random.Generator, edge_length: float = DEFAULT_EDGE_LENGTH) -> Mesh:
    """Ring / washer with a rounded-rectangle cross-section."""
    mean_radius = rng.uniform(0.32, 0.42)
    width = rng.uniform(0.08, 0.16)
    height = rng.uniform(0.07, 0.18)
    corner = 0.45 * min(width, height) * rng.uniform(0.3, 1.0)
    r0, r1 = mean_radius - width / 2, mean_radius + width / 2
    middle = 0.5 * (r0 + r1)
    loop = np.array([[middle, 0.0], [r1, 0.0], [r1, height], [r0, height], [r0, 0.0], [middle, 0.0]])
    dense = rounded_polyline(loop, [0, corner, corner, corner, corner, 0], arc_points=16)[:-1]
    return lathe(dense, edge_length, closed=True, thickness=min(width, height))


def _plate_holes(rng: np.random.Generator, tiles_x: int, tiles_y: int, tile: float) -> np.ndarray:
    holes = np.zeros((tiles_x, tiles_y))
    for ix in (0, tiles_x - 1):
        for iy in (0, tiles_y - 1):
            holes[ix, iy] = tile * rng.uniform(0.16, 0.24)
    extra = rng.random((tiles_x, tiles_y)) < 0.3
    holes[extra & (holes == 0)] = tile * rng.uniform(0.2, 0.34)
    return holes


def build_plate(rng: np.random.Generator, edge_length: float = DEFAULT_EDGE_LENGTH) -> Mesh:
    """Flat mounting plate with corner holes and sometimes a few more."""
    tiles_x = int(rng.integers(3, 5))
    tiles_y = int(rng.integers(2, 4))
    tile = rng.uniform(0.24, 0.3)
    thickness = rng.uniform(0.05, 0.08)
    holes = _plate_holes(rng, tiles_x, tiles_y, tile)
    return _center_on_axis(tiled_plate(tile, tiles_x, tiles_y, thickness, holes, edge_length))


def build_bracket(rng: np.random.Generator, edge_length: float = DEFAULT_EDGE_LENGTH) -> Mesh:
    """Sheet-metal L-bracket: a holed plate bent up by 90 degrees with a rounded bend."""
    base_tiles = int(rng.integers(2, 4))
    up_tiles = int(rng.integers(1, 3))
    tiles_x = base_tiles + 1 + up_tiles
    tiles_y = int(rng.integers(1, 3))
    tile = rng.uniform(0.22, 0.28)
    thickness = rng.uniform(0.04, 0.06)
    holes = np.zeros((tiles_x, tiles_y))
    holes[:base_tiles] = tile * rng.uniform(0.16, 0.24)
    holes[base_tiles + 1 :] = tile * rng.uniform(0.16, 0.24)
    if base_tiles > 2:  # leave room between holes like a real bracket
        holes[1::2] = 0.0
    flat = tiled_plate(tile, tiles_x, tiles_y, thickness, holes, edge_length)
    bend_radius = rng.uniform(0.03, 0.06)
    arc = 0.5 * np.pi * (bend_radius + thickness)
    x_start = base_tiles * tile + 0.5 * (tile - arc)
    bent = bend_up(flat.vertices, x_start, bend_radius, thickness, 0.5 * np.pi)
    return _center_on_axis(Mesh(bent, flat.faces, thickness))


SHAPE_FAMILIES: dict[str, Callable[..., Mesh]] = {
    "bottle": build_bottle,
    "cup": build_cup,
    "bowl": build_bowl,
    "vase": build_vase,
    "gear": build_gear,
    "bracket": build_bracket,
    "plate": build_plate,
    "ring": build_ring,
    "nut": build_nut,
    "knob": build_knob,
}
"""Family name -> builder ``(rng, edge_length=DEFAULT_EDGE_LENGTH) -> Mesh``."""


def build_shape(family: str, rng: np.random.Generator, edge_length: float = DEFAULT_EDGE_LENGTH) -> Mesh:
    """Build one random instance of ``family`` (see :data:`SHAPE_FAMILIES`)."""
    return SHAPE_FAMILIES[family](rng, edge_length)


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, num_points: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniform-area surface sampling, stratified along the face order for even coverage.

    Face choice uses one jittered sample per ``1/num_points`` stratum of the cumulative area
    (faces of our structured meshes are ordered spatially, so coverage is more even than
    i.i.d. sampling while each point is still area-uniform); positions inside a triangle are
    uniform.

    Returns:
        ``points (num_points, 3)``, ``face_index (num_points,)``, ``barycentric (num_points, 3)``.
    """
    v0, v1, v2 = (vertices[faces[:, k]] for k in range(3))
    areas = 0.5 * np.linalg.norm(cross3(v1 - v0, v2 - v0), axis=1)
    cumulative = np.cumsum(areas)
    targets = (np.arange(num_points) + rng.random(num_points)) / num_points * cumulative[-1]
    face_index = np.minimum(np.searchsorted(cumulative, targets, side="right"), len(faces) - 1)
    r1 = np.sqrt(rng.random(num_points))
    r2 = rng.random(num_points)
    bary = np.stack([1.0 - r1, r1 * (1.0 - r2), r1 * r2], axis=1)
    points = (
        bary[:, :1] * v0[face_index] + bary[:, 1:2] * v1[face_index] + bary[:, 2:3] * v2[face_index]
    )
    return points, face_index, bary


__all__ = [
    "DEFAULT_EDGE_LENGTH",
    "SHAPE_FAMILIES",
    "Mesh",
    "bend_up",
    "build_shape",
    "extrude_star",
    "fillet_dense",
    "lathe",
    "resample_polyline",
    "revolve",
    "rounded_polyline",
    "sample_surface",
    "shell_of_revolution",
    "tiled_plate",
    "weld",
]
