"""Speed and label statistics of the synthetic dataset generator (anomalib_3d.data.synthetic).

Tables:

1. Generation time per layout and number of categories (40 samples per category: 4 train,
   6 good test, 5 per defect type; real3d clouds of 8192 points, mvtec3d scans of 256 x 256),
   serial and with the default worker processes. ``CPU s`` is the process time of the parent plus
   its workers; ``x target`` = wall time / 60 s (the real3d goal: 10 categories well under a
   minute on 2 cores).
2. Anomalous fraction per defect type, read back from the written files (gt txt labels for
   real3d, gt masks over part pixels for mvtec3d).
3. Our numpy ray caster against Open3D's ``RaycastingScene`` (Embree) on the same 256 x 256 scan:
   time and the share of pixels where the two disagree on hit / miss.

Run ``python benchmarks/synthetic.py`` (``--quick`` for fewer categories; ``--gallery PATH``
also renders the gallery image, e.g. ``docs/images/synthetic_gallery.png``).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import cpu_seconds

from anomalib_3d.data.io import read_gt_txt, read_mask_png, read_organized_xyz
from anomalib_3d.data.synthetic import (
    DEFECT_TYPES,
    default_camera,
    generate_synthetic_dataset,
    list_categories,
    make_mesh,
    make_sample,
)
from anomalib_3d.data.synthetic.generator import SCENE_SCALE
from anomalib_3d.data.synthetic.scanner import raycast

TARGET_SECONDS = 60.0


def timing_table(work: Path, quick: bool) -> dict[str, Path]:
    categories = list_categories()
    plans = [("real3d", 1), ("real3d", 5), ("real3d", 10), ("mvtec3d", 1), ("mvtec3d", 10)]
    if quick:
        plans = [("real3d", 1), ("real3d", 10), ("mvtec3d", 1)]
    print("\n## Generation time (40 samples per category)\n")
    print("| layout | categories | samples | workers | wall s | CPU s | ms / sample (wall) | x target |")
    print("|---|---|---|---|---|---|---|---|")
    kept: dict[str, Path] = {}
    for layout, count in plans:
        for workers in (0, None):
            root = work / f"{layout}_{count}_{workers}"
            shutil.rmtree(root, ignore_errors=True)
            cpu0, wall0 = cpu_seconds(), time.perf_counter()
            generate_synthetic_dataset(root, categories=categories[:count], layout=layout, progress=False, num_workers=workers)
            wall = time.perf_counter() - wall0
            cpu = cpu_seconds() - cpu0
            samples = 40 * count + (2 * count if layout == "mvtec3d" else 0)
            label = "serial" if workers == 0 else "auto"
            print(
                f"| {layout} | {count} | {samples} | {label} | {wall:.1f} | {cpu:.1f} | "
                f"{1000 * wall / samples:.0f} | {wall / TARGET_SECONDS:.2f} |",
                flush=True,
            )
            kept[layout] = root
    return kept


def fraction_table(roots: dict[str, Path]) -> None:
    print("\n## Anomalous fraction per defect type (from the written files)\n")
    print("| layout | defect | samples | mean % | min % | max % |")
    print("|---|---|---|---|---|---|")
    if "real3d" in roots:
        for defect in DEFECT_TYPES:
            fractions = [read_gt_txt(p)[1].mean() for p in sorted(roots["real3d"].glob(f"*/gt/*_{defect}.txt"))]
            _row("real3d (points)", defect, fractions)
    if "mvtec3d" in roots:
        camera = default_camera((256, 256))
        for defect in DEFECT_TYPES:
            fractions = []
            for mask_path in sorted(roots["mvtec3d"].glob(f"*/test/{defect}/gt/*.png")):
                xyz = read_organized_xyz(mask_path.parent.parent / "xyz" / (mask_path.stem + ".tiff"))
                hit = (xyz != 0).any(axis=2)
                world_z = (xyz[hit] @ camera.rotation + camera.position)[:, 2]
                part = np.zeros(hit.shape, bool)
                part[hit] = world_z > 1e-6
                mask = read_mask_png(mask_path)
                fractions.append(mask.sum() / max(part.sum(), 1))
            _row("mvtec3d (of part pixels)", defect, fractions)


def _row(layout: str, defect: str, fractions: list[float]) -> None:
    if not fractions:
        return
    values = 100 * np.asarray(fractions)
    print(f"| {layout} | {defect} | {len(values)} | {values.mean():.2f} | {values.min():.2f} | {values.max():.2f} |")


def raycast_table() -> None:
    print("\n## Ray casting 256 x 256 (ours: numpy; reference: Open3D RaycastingScene)\n")
    try:
        import open3d as o3d
    except ImportError:
        print("open3d not installed: skipped")
        return
    camera = default_camera((256, 256))
    print("| part | triangles | ours ms | open3d ms | x open3d | hit/miss disagreement |")
    print("|---|---|---|---|---|---|")
    for category in ("gear", "cup", "bracket"):
        mesh = make_mesh(category, 0)
        vertices = SCENE_SCALE * mesh.vertices
        ours_times, theirs_times = [], []
        directions = camera.ray_directions() @ camera.rotation
        rays = np.concatenate([np.broadcast_to(camera.position, directions.shape), directions], axis=-1).astype(np.float32)
        for _ in range(5):
            start = time.perf_counter()
            hits = raycast(camera, vertices, mesh.faces)
            ours_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            scene = o3d.t.geometry.RaycastingScene()
            scene.add_triangles(vertices.astype(np.float32), mesh.faces.astype(np.uint32))
            answer = scene.cast_rays(o3d.core.Tensor(rays))
            theirs_times.append(time.perf_counter() - start)
        reference_hit = np.isfinite(answer["t_hit"].numpy())
        ours_ms, theirs_ms = 1000 * np.median(ours_times), 1000 * np.median(theirs_times)
        print(
            f"| {category} | {len(mesh.faces)} | {ours_ms:.1f} | {theirs_ms:.1f} | {ours_ms / theirs_ms:.2f} | "
            f"{np.mean(reference_hit != hits.hit):.5f} |"
        )


def render_gallery(path: Path) -> None:
    """One picture per family (good) and one per defect, anomalous points in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
    for category in list_categories():
        sample = make_sample(category, None, seed=1)
        panels.append((category, sample.points, sample.normals, sample.labels))
    showcase = {"bulge": "bottle", "concavity": "vase", "hole": "cup", "break": "gear", "bending": "bracket", "crack": "bowl"}
    for defect, category in showcase.items():
        # Pick the seed whose defect faces the gallery camera most.
        best = max((make_sample(category, defect, seed=s) for s in range(6)), key=lambda s: _facing_share(s))
        panels.append((f"{category}: {defect}", best.points, best.normals, best.labels))
    images = _render(panels)
    fig, axes = plt.subplots(4, 4, figsize=(12, 12.6))
    for ax, (title, *_), image in zip(axes.ravel(), panels, images):
        ax.imshow(image)
        ax.set_title(title, fontsize=11)
        ax.set_axis_off()
    fig.suptitle("anomalib-3d synthetic parts (top: 10 families) and defects (red = labelled anomalous)", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    print(f"\ngallery written to {path}")


def _view_rotation() -> np.ndarray:
    """Object (z up) -> camera (x right, y up, z to the viewer): 3/4 view from 35 deg above."""
    yaw, pitch = np.radians(-35.0), np.radians(-55.0)
    rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    return rx @ rz


def _facing_share(sample) -> float:
    labels = sample.labels.astype(bool)
    if not labels.any():
        return 0.0
    towards_viewer = (sample.normals[labels] @ _view_rotation().T)[:, 2]
    return float(np.mean(towards_viewer > 0.3))


def _render(panels) -> list[np.ndarray]:
    colors_for = lambda labels: np.where(labels[:, None] > 0, [0.9, 0.1, 0.1], [0.62, 0.68, 0.78])  # noqa: E731
    try:
        import torch

        from anomalib_3d.render.cameras import CameraRig
        from anomalib_3d.render.splat import render_points

        rig = CameraRig(rotations=torch.tensor(_view_rotation()[None], dtype=torch.float32), image_size=(320, 320))
        out = []
        for _, points, normals, labels in panels:
            result = render_points(
                torch.tensor(points),
                rig=rig,
                colors=torch.tensor(colors_for(labels), dtype=torch.float32),
                normals=torch.tensor(normals),
                point_radius_px=2.0,
            )
            out.append(result.images[0, 0].permute(1, 2, 0).numpy())
        return out
    except ImportError:  # the renderer is optional here: fall back to matplotlib scatter
        import matplotlib.pyplot as plt

        out = []
        for _, points, _, labels in panels:
            fig = plt.figure(figsize=(4, 4))
            ax = fig.add_subplot(projection="3d")
            ax.scatter(*points.T, s=1, c=colors_for(labels))
            ax.set_axis_off()
            fig.canvas.draw()
            out.append(np.asarray(fig.canvas.buffer_rgba())[..., :3])
            plt.close(fig)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer categories")
    parser.add_argument("--gallery", type=Path, default=None, help="also write the gallery PNG here")
    parser.add_argument("--gallery-only", action="store_true", help="only write the gallery")
    args = parser.parse_args()
    if args.gallery is not None:
        render_gallery(args.gallery)
    if args.gallery_only:
        return
    with tempfile.TemporaryDirectory() as tmp:
        roots = timing_table(Path(tmp), args.quick)
        fraction_table(roots)
    raycast_table()


if __name__ == "__main__":
    main()
