"""Mesh construction for the synthetic parts: 2D profile tools (rounded corners, fillets,
resampling, offsets) and structured-grid builders (surfaces of revolution, star-shaped
extrusions, tiled plates with holes, sheet bending).

Every builder returns a closed, consistently oriented :class:`~anomalib_3d.data.synthetic.mesh.Mesh`
with a target edge length, dense enough for defects to be real geometric changes of the surface.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from anomalib_3d.data.synthetic.mesh import Mesh

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


def center_on_axis(mesh: Mesh) -> Mesh:
    lo, hi = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
    shift = np.array([-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2]])
    return Mesh(mesh.vertices + shift, mesh.faces, mesh.thickness)
