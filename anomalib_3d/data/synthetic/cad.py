"""Real CAD parts as a second shape source for Synthetic3D (categories ``cad_<part>``).

The procedural families of :mod:`.shapes` are all built from the same few construction tools
(lathes, extrusions, tiled plates). To test a method on geometry it was not designed around,
this module takes real mechanical parts drawn in CAD programs: the triangle meshes that the
``pybullet`` wheel ships in its ``pybullet_data`` folder (a differential's gears and housing,
robot-arm links, servo brackets). The meshes are read from the installed package, never copied.

Each curated part (:data:`CAD_PARTS`) is turned into a :class:`~.mesh.Mesh` the defect generator
can edit:

1. read the binary STL, merge coincident corners (STL stores every triangle on its own), drop
   zero-area and repeated triangles, and check that the surface is closed (every edge shared by
   exactly two triangles) and consistently wound; flip it when it encloses negative volume;
2. place it like the procedural parts: largest extent 1 unit, bounding box centred on the ``z``
   axis, standing on ``z = 0`` in the file's own frame;
3. split every edge longer than :data:`CAD_MAX_EDGE_LENGTH` at its midpoint (conforming
   red-green refinement, repeated until none is longer), so that a defect moves many vertices
   and is a real change of the surface, as on the procedural meshes;
4. estimate the thinnest wall (which bounds how deep a crack may go) by casting rays inwards
   from the surface.

Every sample then gets manufacturing variation: an independent scale per axis within
:data:`CAD_SCALE_VARIATION` and a tilt of at most :data:`CAD_TILT_DEG` degrees about a random
horizontal axis, after which the part is placed on ``z = 0`` again. Scanner noise is the
dataset's ``noise_std``, as for the procedural families.

:data:`CAD_VALIDATION` and :data:`CAD_HELD_OUT` split the parts into a set a method may be tuned
on and a set that is only reported, fixed before any tuning.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anomalib_3d.data.synthetic.mesh import Mesh, sample_surface
from anomalib_3d.errors import CorruptFileError, MissingDependencyError, UnknownCategoryError

CAD_PREFIX = "cad_"
CAD_MAX_EDGE_LENGTH = 0.02
"""Longest triangle edge after refinement, in object units (parts are 1 unit at their largest)."""
CAD_SCALE_VARIATION = 0.02
"""Per-axis scale of a sample is drawn uniformly in ``1 +- CAD_SCALE_VARIATION``."""
CAD_TILT_DEG = 2.0
"""Largest tilt of a sample about a random horizontal axis, in degrees."""
CAD_COLOR = (0.7, 0.71, 0.74)
"""Colour of CAD parts in organized scans (machined metal)."""
_WELD_TOLERANCE = 1e-6
"""Corners closer than this (object units, after normalisation) are one vertex."""


@dataclass(frozen=True)
class CadPart:
    """One curated mesh of ``pybullet_data``.

    Attributes:
        file: path inside the ``pybullet_data`` folder.
        description: what the part is.
    """

    file: str
    description: str


CAD_PARTS: dict[str, CadPart] = {
    "cad_pinion": CadPart("differential/diff_pinion.stl", "bevel pinion of a differential"),
    "cad_ring_gear": CadPart("differential/diff_ring.stl", "flat crown (ring) gear of a differential"),
    "cad_side_gear": CadPart("differential/diff_side.stl", "bevel side gear with a splined hub"),
    "cad_spider_gear": CadPart("differential/diff_spider.stl", "bevel spider gear on a flange"),
    "cad_carrier": CadPart("differential/diff_carrier.stl", "differential carrier: ring with two uprights"),
    "cad_carrier_cover": CadPart("differential/diff_carrier_cover.stl", "cover of the differential carrier"),
    "cad_arm": CadPart("differential/diff_arm.stl", "L-shaped arm with a mounting foot"),
    "cad_stand": CadPart("differential/diff_stand.stl", "stand with a base plate and two bearing posts"),
    "cad_motor_cover": CadPart("differential/diff_motor_cover.stl", "folded motor cover"),
    "cad_arm_base": CadPart("xarm/xarm_description/meshes/xarm6/visual/base.stl", "robot-arm base housing"),
    "cad_arm_link1": CadPart("xarm/xarm_description/meshes/xarm6/visual/link1.stl", "robot-arm shoulder link"),
    "cad_arm_link3": CadPart("xarm/xarm_description/meshes/xarm6/visual/link3.stl", "robot-arm elbow link"),
    "cad_arm_link4": CadPart("xarm/xarm_description/meshes/xarm6/visual/link4.stl", "robot-arm forearm link"),
    "cad_flange": CadPart("xarm/xarm_description/meshes/xarm6/visual/link6.stl", "robot-arm tool flange"),
    "cad_servo_bracket": CadPart("quadruped/microtaur/fr12_h101.stl", "sheet-metal servo bracket"),
    "cad_side_bracket": CadPart("quadruped/microtaur/fr12_h103_lowres.stl", "sheet-metal side bracket"),
    "cad_hip_motor": CadPart("laikago/hip_motor.stl", "hip motor housing of a legged robot"),
    "cad_gripper_guide": CadPart("gripper/meshes/GUIDE_WSG50_110.stl", "guide block of a parallel gripper"),
}
"""Category name -> part. Chosen for being closed, single-piece mechanical parts (no terrain,
buildings, wheels with tyres or multi-body assemblies)."""

CAD_VALIDATION: tuple[str, ...] = ("cad_pinion", "cad_carrier", "cad_arm", "cad_arm_link3", "cad_servo_bracket", "cad_hip_motor")
"""Parts a method may be tuned on."""
CAD_HELD_OUT: tuple[str, ...] = tuple(name for name in CAD_PARTS if name not in CAD_VALIDATION)
"""Parts that are only reported, never tuned on."""


def list_cad_categories() -> list[str]:
    """Names of the CAD categories (:data:`CAD_PARTS`)."""
    return list(CAD_PARTS)


def is_cad_category(category: str) -> bool:
    """Whether ``category`` names a CAD part (known or not: anything starting with ``cad_``)."""
    return isinstance(category, str) and category.startswith(CAD_PREFIX)


def check_cad_category(category: str) -> None:
    """Raise :class:`UnknownCategoryError` for an unknown CAD part."""
    if category not in CAD_PARTS:
        raise UnknownCategoryError(
            f"unknown CAD category {category!r}.",
            fix=f"choose from {', '.join(CAD_PARTS)}.",
        )


def cad_data_folder() -> Path:
    """The ``pybullet_data`` folder that holds the meshes.

    Raises:
        MissingDependencyError: ``pybullet`` is not installed.
    """
    try:
        import pybullet_data  # noqa: PLC0415 - an optional dependency, imported when a CAD part is built
    except ImportError as exc:
        raise MissingDependencyError(
            "the CAD categories read meshes shipped by the pybullet package, which is not installed.",
            fix="pip install pybullet   (or: pip install 'anomalib-3d[cad]')",
        ) from exc
    return Path(pybullet_data.getDataPath())


# ----------------------------------------------------------------------------------------------
# Mesh preparation
# ----------------------------------------------------------------------------------------------


def read_binary_stl(path: str | Path) -> np.ndarray:
    """Triangles of a binary STL file.

    Returns:
        ``(F, 3, 3) float64`` corner coordinates per triangle.

    Raises:
        CorruptFileError: the size does not match the triangle count of the header (an ASCII
            or truncated file).
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 84:
        raise CorruptFileError("is too short for a binary STL file.", path)
    count = int(np.frombuffer(data, dtype="<u4", count=1, offset=80)[0])
    if len(data) != 84 + 50 * count:
        raise CorruptFileError(
            f"holds {len(data)} bytes, but a binary STL of {count} triangles has {84 + 50 * count}.",
            path,
            "give a binary STL file (ASCII STL is not read).",
        )
    record = np.dtype([("normal", "<f4", 3), ("corners", "<f4", (3, 3)), ("attribute", "<u2")])
    return np.frombuffer(data, dtype=record, count=count, offset=84)["corners"].astype(np.float64)


def _edges(faces: np.ndarray) -> np.ndarray:
    """``(F, 3, 2)`` directed edges ``(f[k], f[k+1])`` of every face."""
    return np.stack([faces, np.roll(faces, -1, axis=1)], axis=-1)


def check_closed_and_oriented(faces: np.ndarray) -> tuple[bool, bool]:
    """Whether a mesh is closed (each undirected edge in exactly two faces) and consistently
    wound (each directed edge once, so the two faces of an edge traverse it in opposite senses)."""
    directed = _edges(faces).reshape(-1, 2)
    undirected = np.sort(directed, axis=1)
    _, counts = np.unique(undirected, axis=0, return_counts=True)
    _, directed_counts = np.unique(directed, axis=0, return_counts=True)
    return bool((counts == 2).all()), bool((directed_counts == 1).all())


def subdivide_to_edge_length(vertices: np.ndarray, faces: np.ndarray, max_edge: float) -> tuple[np.ndarray, np.ndarray]:
    """Halve long edges at their midpoints until no edge is longer than ``max_edge``.

    One pass marks the longest edge of every face whose longest edge is too long (longest-edge
    bisection: marking every long edge instead would quadruple thin slivers, which CAD exports
    are full of, at every pass) and replaces each face by 1, 2, 3 or 4 faces according to how
    many of its edges are marked, its own or a neighbour's (one: halve; two: a corner triangle
    and the remaining quad cut along its shorter diagonal; three: four similar triangles). An
    edge is shared, so both of its faces agree: the mesh stays conforming (no T-junctions) and
    keeps its winding.

    Args:
        vertices: ``(V, 3)``.
        faces: ``(F, 3)`` vertex indices.
        max_edge: longest edge allowed.

    Returns:
        ``(vertices (V', 3), faces (F', 3))``; the first ``V`` vertices are the input's.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    while True:
        edges = np.sort(_edges(faces), axis=-1).reshape(-1, 2)
        # One integer key per undirected edge: a 1-D unique is much faster than unique rows.
        keys, inverse = np.unique(edges[:, 0] * len(vertices) + edges[:, 1], return_inverse=True)
        unique = np.stack([keys // len(vertices), keys % len(vertices)], axis=1)
        lengths = np.linalg.norm(vertices[unique[:, 0]] - vertices[unique[:, 1]], axis=1)
        edge_of_face = inverse.reshape(-1, 3)
        longest = edge_of_face[np.arange(len(faces)), np.argmax(lengths[edge_of_face], axis=1)]
        long = np.zeros(len(unique), dtype=bool)
        long[longest[lengths[longest] > max_edge]] = True
        if not long.any():
            return vertices, faces
        midpoint_index = np.full(len(unique), -1, dtype=np.int64)
        midpoint_index[long] = len(vertices) + np.arange(int(long.sum()))
        vertices = np.concatenate([vertices, 0.5 * (vertices[unique[long, 0]] + vertices[unique[long, 1]])])
        mid = midpoint_index[inverse.reshape(-1)].reshape(-1, 3)  # mid[f, k]: midpoint of edge (f[k], f[k+1])
        split = mid >= 0
        count = split.sum(axis=1)
        pieces = [faces[count == 0]]

        one = np.flatnonzero(count == 1)
        k = np.argmax(split[one], axis=1)  # rotate so that the split edge is (a, b)
        a, b, c = (faces[one, (k + s) % 3] for s in range(3))
        ab = mid[one, k]
        pieces += [np.stack([a, ab, c], 1), np.stack([ab, b, c], 1)]

        two = np.flatnonzero(count == 2)
        u = np.argmin(split[two], axis=1)  # the unsplit edge becomes (c, a): edges (a, b), (b, c) split
        a, b, c = (faces[two, (u + s) % 3] for s in range(1, 4))
        ab, bc = mid[two, (u + 1) % 3], mid[two, (u + 2) % 3]
        pieces.append(np.stack([ab, b, bc], 1))
        # The quad (a, ab, bc, c): cut along its shorter diagonal for better-shaped triangles.
        diagonal_a = np.linalg.norm(vertices[a] - vertices[bc], axis=1)
        diagonal_ab = np.linalg.norm(vertices[ab] - vertices[c], axis=1)
        from_a = diagonal_a <= diagonal_ab
        pieces += [
            np.stack([a, ab, bc], 1)[from_a],
            np.stack([a, bc, c], 1)[from_a],
            np.stack([a, ab, c], 1)[~from_a],
            np.stack([ab, bc, c], 1)[~from_a],
        ]

        three = np.flatnonzero(count == 3)
        a, b, c = (faces[three, s] for s in range(3))
        ab, bc, ca = (mid[three, s] for s in range(3))
        pieces += [np.stack(t, 1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))]
        faces = np.concatenate(pieces)


def _weld(corners: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Merge triangle corners closer than ``tolerance``: ``(F, 3, 3)`` -> vertices, faces."""
    keys = np.round(corners.reshape(-1, 3) / tolerance).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # vertex order follows the file, not the sort
    remap = np.empty_like(order)
    remap[order] = np.arange(len(order))
    vertices = corners.reshape(-1, 3)[first[order]]
    faces = remap[inverse.reshape(-1)].reshape(-1, 3)
    distinct = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    faces = faces[distinct]
    # Repeated triangles (same three corners, any order) would make edges look non-manifold.
    _, keep = np.unique(np.sort(faces, axis=1), axis=0, return_index=True)
    return vertices, faces[np.sort(keep)]


def estimate_thickness(mesh: Mesh, num_rays: int = 4000, quantile: float = 0.05) -> float:
    """Thinnest wall of a closed, outward-wound mesh: a low quantile of how far rays cast
    inwards (against the surface normal) from surface points travel before leaving the solid.

    Args:
        mesh: the part.
        num_rays: surface points to cast from (area-uniform, fixed seed).
        quantile: which quantile of the hit distances counts as the thinnest wall; a low one
            rather than the minimum, so rays grazing an edge do not decide it.
    """
    import open3d as o3d  # noqa: PLC0415 - heavy; only needed while preparing a CAD part

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(mesh.vertices.astype(np.float32)), o3d.core.Tensor(mesh.faces.astype(np.uint32))
    )
    points, face_index, _ = sample_surface(mesh.vertices, mesh.faces, num_rays, np.random.default_rng(0))
    inward = -mesh.face_normals[face_index]
    start = points + 1e-4 * inward
    rays = o3d.core.Tensor(np.concatenate([start, inward], axis=1).astype(np.float32))
    hits = scene.cast_rays(rays)["t_hit"].numpy()
    hits = hits[np.isfinite(hits)]
    if len(hits) == 0:
        return 0.05
    return float(np.quantile(hits, quantile)) + 1e-4


@functools.lru_cache(maxsize=None)
def load_cad_part(category: str) -> Mesh:
    """The prepared, normalised mesh of a curated part (cached per process).

    Raises:
        UnknownCategoryError: ``category`` is not in :data:`CAD_PARTS`.
        MissingDependencyError: ``pybullet`` is not installed.
        CorruptFileError: the file is not a closed, consistently wound binary STL.
    """
    check_cad_category(category)
    path = cad_data_folder() / CAD_PARTS[category].file
    corners = read_binary_stl(path)
    low, high = corners.reshape(-1, 3).min(axis=0), corners.reshape(-1, 3).max(axis=0)
    scale = float((high - low).max())
    centre = np.array([0.5 * (low[0] + high[0]), 0.5 * (low[1] + high[1]), low[2]])
    vertices, faces = _weld((corners - centre) / scale, _WELD_TOLERANCE)
    closed, oriented = check_closed_and_oriented(faces)
    if not (closed and oriented):
        raise CorruptFileError(
            f"is not a closed, consistently wound surface (closed: {closed}, oriented: {oriented}).",
            path,
            "pick a closed mesh for a CAD category (the defect generator needs one).",
        )
    vertices, faces = subdivide_to_edge_length(vertices, faces, CAD_MAX_EDGE_LENGTH)
    mesh = Mesh(vertices, faces, thickness=1.0)
    if mesh.signed_volume < 0:
        faces = faces[:, ::-1].copy()
        mesh = Mesh(vertices, faces, thickness=1.0)
    return Mesh(vertices, faces, thickness=estimate_thickness(mesh))


def _tilt(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """Rotation by an angle uniform in ``[0, max_deg]`` about a random horizontal axis."""
    phi = rng.uniform(0.0, 2 * np.pi)
    axis = np.array([np.cos(phi), np.sin(phi), 0.0])
    angle = np.radians(rng.uniform(0.0, max_deg))
    skew = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew


def build_cad_part(category: str, rng: np.random.Generator) -> Mesh:
    """One manufactured instance of a CAD part: per-axis scale and a small tilt, on ``z = 0``.

    Args:
        category: a name from :data:`CAD_PARTS`.
        rng: seeded generator (the sample's shape stream).

    Returns:
        :class:`Mesh` with the base part's faces (vertex indices unchanged).
    """
    base = load_cad_part(category)
    scale = 1.0 + rng.uniform(-CAD_SCALE_VARIATION, CAD_SCALE_VARIATION, size=3)
    rotation = _tilt(rng, CAD_TILT_DEG)
    centroid = base.vertices.mean(axis=0)
    vertices = ((base.vertices - centroid) * scale) @ rotation.T
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    vertices = vertices - np.array([0.5 * (low[0] + high[0]), 0.5 * (low[1] + high[1]), low[2]])
    return Mesh(vertices, base.faces, thickness=base.thickness * float(scale.min()))


__all__ = [
    "CAD_COLOR",
    "CAD_HELD_OUT",
    "CAD_MAX_EDGE_LENGTH",
    "CAD_PARTS",
    "CAD_PREFIX",
    "CAD_SCALE_VARIATION",
    "CAD_TILT_DEG",
    "CAD_VALIDATION",
    "CadPart",
    "build_cad_part",
    "cad_data_folder",
    "check_cad_category",
    "check_closed_and_oriented",
    "estimate_thickness",
    "is_cad_category",
    "list_cad_categories",
    "load_cad_part",
    "read_binary_stl",
    "subdivide_to_edge_length",
]
