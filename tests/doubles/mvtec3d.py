"""Organized scans in the MVTec 3D-AD layout, written with tifffile and PIL (none of our writers).

* :func:`write_mvtec3d_sample`: one sample's files (``xyz`` TIFF, ``rgb`` PNG, ``gt`` PNG);
* :func:`noisy_plane_scan`: a flat, noisy scan with random colours (format and label tests);
* :func:`write_dome_mvtec3d`: a dome on a plane seen from above; a defective scan carries a smooth
  bump whose pixels are its ground-truth mask and are also blue in the RGB image (a colour cue a
  stand-in backbone can see).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: ``(split, defect folder) -> scans`` of :func:`write_dome_mvtec3d` by default.
LAYOUT = {("train", "good"): 2, ("validation", "good"): 1, ("test", "good"): 2, ("test", "crack"): 2}


def write_mvtec3d_sample(base: Path, index: int, xyz: np.ndarray, rgb: np.ndarray, mask: np.ndarray | None = None) -> None:
    """``base/xyz/NNN.tiff`` (float32 ``(H, W, 3)``), ``base/rgb/NNN.png`` and, when ``mask`` is given,
    ``base/gt/NNN.png`` (255 where ``mask``), ``NNN`` = ``index``; ``base`` = ``<root>/<category>/<split>/<defect>``."""
    import tifffile
    from PIL import Image

    for sub in ("xyz", "rgb") + (("gt",) if mask is not None else ()):
        (base / sub).mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(base / "xyz" / f"{index:03d}.tiff", xyz)
    Image.fromarray(rgb).save(base / "rgb" / f"{index:03d}.png")
    if mask is not None:
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(base / "gt" / f"{index:03d}.png")


def noisy_plane_scan(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(xyz (H, W, 3) float32, rgb (H, W, 3) uint8)``: the plane ``z = 0.5`` over ``[0, 1)²`` with
    up to 1 cm of noise in z, and random colours."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    xyz = np.stack([xx / width, yy / height, 0.5 + 0.01 * rng.random((height, width))], axis=-1).astype(np.float32)
    rgb = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    return xyz, rgb


def dome_scan(size: int, defect: bool, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xyz (size, size, 3) float32, rgb (size, size, 3) uint8, mask (size, size) bool)`` of a
    dome on a plane (camera above, 2 mm pixels), with a random bump when ``defect``."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    x = (cols - size / 2) * 0.002
    y = (rows - size / 2) * 0.002
    radius = 0.3 * size * 0.002
    d2 = x**2 + y**2
    height = np.sqrt(np.clip(radius**2 - d2, 0, None))
    mask = np.zeros((size, size), dtype=bool)
    if defect:
        cx, cy = rng.uniform(-0.3, 0.3, size=2) * radius
        bump = 0.012 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (0.15 * radius) ** 2))
        bump[d2 > radius**2] = 0
        height = height + bump
        mask = bump > 0.002
    z = 0.5 - height
    xyz = np.stack([x, y, z], axis=-1).astype(np.float32)
    shade = np.clip(0.3 + 0.7 * height / radius, 0, 1)
    rgb = np.stack([shade * 0.9, shade * 0.7, shade * 0.4], axis=-1)
    rgb[mask] = [0.2, 0.2, 0.9]  # the defect is also visible in colour
    return xyz, (rgb * 255).astype(np.uint8), mask


def write_dome_mvtec3d(
    root: Path, category: str = "bagel", size: int = 48, layout: dict[tuple[str, str], int] | None = None
) -> Path:
    """``<root>/<category>/<split>/<defect>/{xyz,rgb}/NNN.{tiff,png}`` (+ ``gt/`` in ``test``) as
    :data:`LAYOUT` (or ``layout``) says; every scan has its own seed. Returns ``root``."""
    seed = 0
    for (split, defect), count in (layout or LAYOUT).items():
        for i in range(count):
            xyz, rgb, mask = dome_scan(size, defect != "good", seed)
            seed += 1
            write_mvtec3d_sample(root / category / split / defect, i, xyz, rgb, mask if split == "test" else None)
    return root
