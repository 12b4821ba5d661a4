"""Small clouds known in closed form, and the ASCII PCD third-party tools write (none of our writers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def write_ascii_pcd(path: Path, points: np.ndarray) -> None:
    """``points (N, 3)`` as an ASCII PCD v0.7 file, the way PCL and Open3D write one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\n"
        f"COUNT 1 1 1\nWIDTH {len(points)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(points)}\nDATA ascii\n"
    )
    body = "\n".join(f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in points)
    path.write_text(header + body + "\n")


def sphere(n: int, seed: int) -> np.ndarray:
    """``(n, 3) float32`` points uniform on the unit sphere."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 3))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def random_cube_cloud(num_points: int, seed: int) -> torch.Tensor:
    """``(num_points, 3) float32`` points uniform in ``[-1, 1]³``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(num_points, 3, generator=generator) * 2 - 1
