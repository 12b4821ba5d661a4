"""A simulated depth camera producing MVTec 3D-AD style organized scans.

The part stands on a finite grey ground plane (``z = 0``) and is seen by a pinhole camera tilted
``tilt_deg`` from vertical, so its top and one side are visible and the plane fills most of the
background (downstream background-plane removal has something to remove). Pixels whose ray hits
neither the part nor the plane hold ``(0, 0, 0)`` as in MVTec 3D-AD.

Ray casting is exact and pure numpy: every triangle is projected to the image, the pixel centres
inside it are found with edge functions, and depth/barycentrics come from perspective-correct
interpolation; the nearest hit per pixel wins. No GPU or Open3D is needed and results are
deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Camera:
    """Pinhole camera; camera frame: ``x`` right, ``y`` down, ``z`` forward (depth).

    Attributes:
        height, width: image size in pixels.
        focal: focal length in pixels (square pixels).
        rotation: ``(3, 3)`` world-to-camera rotation (rows are the camera axes in world).
        position: ``(3,)`` camera centre in world coordinates.
    """

    height: int
    width: int
    focal: float
    rotation: np.ndarray
    position: np.ndarray

    @property
    def center(self) -> tuple[float, float]:
        return 0.5 * self.width, 0.5 * self.height

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World ``(N, 3)`` -> camera frame ``(N, 3)``."""
        return (points - self.position) @ self.rotation.T

    def ray_directions(self) -> np.ndarray:
        """``(H, W, 3)`` camera-frame ray directions through pixel centres, with ``z = 1``."""
        cx, cy = self.center
        u = (np.arange(self.width) + 0.5 - cx) / self.focal
        v = (np.arange(self.height) + 0.5 - cy) / self.focal
        uu, vv = np.meshgrid(u, v)
        return np.stack([uu, vv, np.ones_like(uu)], axis=-1)


def look_at_camera(
    image_size: tuple[int, int],
    target: np.ndarray,
    distance: float,
    tilt_deg: float = 35.0,
    azimuth_deg: float = -90.0,
    fov_deg: float = 32.0,
) -> Camera:
    """Camera looking at ``target`` from ``distance``, tilted ``tilt_deg`` from straight down.

    Args:
        image_size: ``(H, W)``.
        target: ``(3,)`` world point at the image centre.
        distance: camera-to-target distance.
        tilt_deg: angle between the viewing direction and the downward vertical.
        azimuth_deg: horizontal direction (from ``+x``, counter-clockwise) in which the camera is
            displaced from the target.
        fov_deg: field of view across the larger image side.
    """
    height, width = image_size
    tilt, azimuth = np.radians(tilt_deg), np.radians(azimuth_deg)
    offset = np.array([np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth), np.cos(tilt)])
    position = np.asarray(target, dtype=np.float64) + distance * offset
    forward = -offset
    # Image "up" points away from the camera's horizontal offset, so the far side is at the top.
    world_up = np.array([0.0, 0.0, 1.0])
    right = np.cross(forward, world_up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    focal = 0.5 * max(height, width) / np.tan(0.5 * np.radians(fov_deg))
    return Camera(height, width, float(focal), rotation, position)


@dataclass
class RayHits:
    """Nearest mesh hit per pixel.

    Attributes:
        face: ``(H, W) int64`` hit face index, -1 where the ray misses the mesh.
        depth: ``(H, W)`` ray parameter (= camera-frame ``z``), ``inf`` on misses.
        bary: ``(H, W, 3)`` barycentric coordinates of the hit in its face.
    """

    face: np.ndarray
    depth: np.ndarray
    bary: np.ndarray

    @property
    def hit(self) -> np.ndarray:
        return self.face >= 0


def raycast(camera: Camera, vertices: np.ndarray, faces: np.ndarray, cull_back_faces: bool = False) -> RayHits:
    """Exact nearest-hit ray casting of a triangle mesh through every pixel centre.

    A pinhole projection maps triangles to triangles, so the inside test is done with screen
    edge functions and the hit's depth and 3D barycentrics follow exactly from
    perspective-correct interpolation (``1/z`` is affine in screen space).

    Args:
        camera: the camera.
        vertices: ``(V, 3)`` world coordinates.
        faces: ``(F, 3)`` triangles, counter-clockwise seen from outside.
        cull_back_faces: skip faces seen from behind (exact for closed meshes, and faster).

    Returns:
        :class:`RayHits`.
    """
    h, w = camera.height, camera.width
    cx, cy = camera.center
    face_out = np.full(h * w, -1, dtype=np.int64)
    depth_out = np.full(h * w, np.inf)
    bary_out = np.zeros((h * w, 3))

    cam = camera.to_camera(vertices)
    z = cam[faces][:, :, 2]  # (F, 3)
    in_front = (z > 1e-6).all(axis=1)
    u_all = camera.focal * cam[:, 0] / np.maximum(cam[:, 2], 1e-6) + cx
    v_all = camera.focal * cam[:, 1] / np.maximum(cam[:, 2], 1e-6) + cy
    u, v = u_all[faces], v_all[faces]
    area2 = (u[:, 1] - u[:, 0]) * (v[:, 2] - v[:, 0]) - (u[:, 2] - u[:, 0]) * (v[:, 1] - v[:, 0])
    # Outward counter-clockwise faces turn clockwise on screen (y points down) when facing us.
    usable = in_front & (np.abs(area2) > 1e-12)
    if cull_back_faces:
        usable &= area2 < 0
    x0 = np.clip(np.ceil(u.min(axis=1) - 0.5 - 1e-9), 0, w).astype(np.int64)
    x1 = np.clip(np.floor(u.max(axis=1) - 0.5 + 1e-9), -1, w - 1).astype(np.int64)
    y0 = np.clip(np.ceil(v.min(axis=1) - 0.5 - 1e-9), 0, h).astype(np.int64)
    y1 = np.clip(np.floor(v.max(axis=1) - 0.5 + 1e-9), -1, h - 1).astype(np.int64)
    nx = np.maximum(x1 - x0 + 1, 0)
    counts = nx * np.maximum(y1 - y0 + 1, 0)
    tri_ids = np.flatnonzero(usable & (counts > 0))
    if len(tri_ids) == 0:
        return RayHits(face_out.reshape(h, w), depth_out.reshape(h, w), bary_out.reshape(h, w, 3))
    counts = counts[tri_ids]

    owner = np.repeat(tri_ids, counts)
    local = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    px = x0[owner] + local % nx[owner]
    py = y0[owner] + local // nx[owner]
    sx, sy = px + 0.5, py + 0.5
    uo, vo, inv_area = u[owner], v[owner], 1.0 / area2[owner]
    w0 = ((uo[:, 1] - sx) * (vo[:, 2] - sy) - (uo[:, 2] - sx) * (vo[:, 1] - sy)) * inv_area
    w1 = ((uo[:, 2] - sx) * (vo[:, 0] - sy) - (uo[:, 0] - sx) * (vo[:, 2] - sy)) * inv_area
    w2 = 1.0 - w0 - w1
    eps = 1e-9
    inside = (w0 >= -eps) & (w1 >= -eps) & (w2 >= -eps)
    owner, px, py = owner[inside], px[inside], py[inside]
    inv_z = 1.0 / z[owner]
    weighted = np.stack([w0[inside], w1[inside], w2[inside]], axis=1) * inv_z
    norm = weighted.sum(axis=1)
    depth = 1.0 / norm
    pixel = py * w + px

    order = np.lexsort((depth, pixel))  # per pixel, nearest first
    pixel_sorted = pixel[order]
    first = order[np.concatenate([[True], pixel_sorted[1:] != pixel_sorted[:-1]])]
    target = pixel[first]
    face_out[target] = owner[first]
    depth_out[target] = depth[first]
    bary_out[target] = weighted[first] / norm[first, None]
    return RayHits(face_out.reshape(h, w), depth_out.reshape(h, w), bary_out.reshape(h, w, 3))


def plane_hits(camera: Camera, half_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Ray hits on the square ground plane ``z = 0``, ``|x|, |y| <= half_size``.

    Returns:
        ``depth (H, W)`` (``inf`` where the ray misses the plane) and ``world points (H, W, 3)``.
    """
    rays_cam = camera.ray_directions()
    rays_world = rays_cam @ camera.rotation  # camera -> world for directions
    denominator = rays_world[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -camera.position[2] / denominator
    world = camera.position + t[..., None] * rays_world
    ok = (t > 0) & (np.abs(world[..., 0]) <= half_size) & (np.abs(world[..., 1]) <= half_size)
    return np.where(ok, t, np.inf), world


def shade(normals: np.ndarray, view: np.ndarray, light: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Lambert shading with an ambient term.

    Args:
        normals: ``(N, 3)`` unit normals (flipped here to face the viewer).
        view: ``(N, 3)`` unit ray directions (camera -> surface).
        light: ``(3,)`` unit direction towards the light.
        base: ``(3,)`` or ``(N, 3)`` base colour in [0, 1].

    Returns:
        ``(N, 3)`` colours in [0, 1].
    """
    facing = np.where((np.einsum("ij,ij->i", normals, view) > 0)[:, None], -normals, normals)
    diffuse = np.clip(facing @ light, 0.0, 1.0)[:, None]
    return np.clip(base * (0.3 + 0.7 * diffuse), 0.0, 1.0)


__all__ = ["Camera", "RayHits", "look_at_camera", "plane_hits", "raycast", "shade"]
