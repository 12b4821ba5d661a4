"""Procedural "industrial part" shape families as dense, closed, consistently oriented meshes.

Every family builder takes a seeded ``numpy.random.Generator`` and returns a :class:`Mesh`
whose dimensions vary per sample (radii, heights, tooth counts, hole patterns ...). Parts stand
on the plane ``z = 0`` and are centred on the ``z`` axis; sizes are about one unit, so they look
like normalized Anomaly-ShapeNet objects (the organized scanner rescales them to ~10 cm).

Meshes are built from structured grids (surfaces of revolution, star-shaped extrusions, tiled
plates) with a target edge length :data:`DEFAULT_EDGE_LENGTH`, dense enough for defects to be
real geometric changes of the surface rather than moved labels. The mesh type and surface
sampling are in :mod:`~anomalib_3d.data.synthetic.mesh`, the construction tools in
:mod:`~anomalib_3d.data.synthetic.mesh_builders`; both are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# _normalize is re-exported for the generator, defects and scenes, which import it from here
from anomalib_3d.data.synthetic.mesh import DEFAULT_EDGE_LENGTH, Mesh, _normalize, cross3, sample_surface, triangle_cross  # noqa: F401
from anomalib_3d.data.synthetic.mesh_builders import (
    bend_up,
    center_on_axis,
    extrude_star,
    fillet_dense,
    lathe,
    resample_polyline,
    revolve,
    rounded_polyline,
    shell_of_revolution,
    tiled_plate,
    weld,
)

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
    return center_on_axis(
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
    return center_on_axis(tiled_plate(tile, tiles_x, tiles_y, thickness, holes, edge_length))


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
    return center_on_axis(Mesh(bent, flat.faces, thickness))


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


__all__ = [
    "DEFAULT_EDGE_LENGTH",
    "SHAPE_FAMILIES",
    "Mesh",
    "bend_up",
    "build_shape",
    "cross3",
    "extrude_star",
    "fillet_dense",
    "lathe",
    "resample_polyline",
    "revolve",
    "rounded_polyline",
    "sample_surface",
    "shell_of_revolution",
    "tiled_plate",
    "triangle_cross",
    "weld",
]
