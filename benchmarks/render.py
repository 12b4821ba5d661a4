"""Benchmark: our torch point-splat renderer vs the Open3D pipeline of PointAD's authors.

PointAD's authors render each cloud with Open3D (``multi_view/*.py``): normals estimated by
Open3D, then per view the rotated cloud in an offscreen ``open3d.visualization.Visualizer``
window (1024 px, square points), ``capture_screen_float_buffer``, a PIL bicubic resize to 336 px,
and the point -> pixel correspondence and visibility computed from Open3D's camera. The reference
here is that pipeline (:func:`anomalib_3d.render.open3d_reference.render_like_pointad`), on the
paper's 9 rotations about X. Open3D needs an X display: without ``DISPLAY`` an ``Xvfb`` is started
for the run (``apt-get install xvfb libgl1-mesa-dri``).

Ours, two ways: the default style (one bounding sphere per cloud, discs, Lambert, straight at
336 px) and PointAD's official style (the authors' pictures: Open3D's camera per view, 7 px
squares in a 1024 px window resized to 336, Open3D's lighting with normals from 50 neighbours,
nearest-point visibility), which does the same work as the reference. Both return the exact point
<-> pixel map and the visibility with the images.

Usage::

    python benchmarks/render.py                 # timing table and the speed ratios
    python benchmarks/render.py --save-png      # also docs/images/render_9views.png
    python benchmarks/render.py --parity-png    # also docs/images/pointad_open3d_parity.png
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import numpy as np
import torch

from _common import time_call

from anomalib_3d.render import (
    gather_to_points,
    pointad_rig,
    rasterize_points,
    render_mask_like,
    render_points,
)

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# a procedural test object: a spur gear with a raised hub, a bore and a bump defect


def _outline(theta: np.ndarray, teeth: int = 14, root: float = 0.82, tip: float = 1.0) -> np.ndarray:
    """Gear outline radius: trapezoidal teeth (flanks take a quarter of the pitch each)."""
    phase = (theta * teeth / (2 * np.pi)) % 1.0
    ramp = np.clip(np.minimum(phase, 1.0 - phase) * 4.0 - 0.5, 0.0, 1.0)  # 0 root, 1 tip
    return root + (tip - root) * ramp


def _sample_polyline_wall(xy: np.ndarray, z_low: float, z_high: float, count: int, rng, outward: bool):
    """Points on the vertical wall swept by a closed polyline ``xy (M, 2)`` from z_low to z_high."""
    start, end = xy, np.roll(xy, -1, axis=0)
    lengths = np.linalg.norm(end - start, axis=1)
    segment = rng.choice(len(xy), size=count, p=lengths / lengths.sum())
    t = rng.random(count)[:, None]
    planar = start[segment] * (1 - t) + end[segment] * t
    tangent = (end - start)[segment] / lengths[segment, None]
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)  # right of a counter-clockwise curve
    if not outward:
        normal = -normal
    z = z_low + (z_high - z_low) * rng.random(count)
    points = np.concatenate([planar, z[:, None]], axis=1)
    normals = np.concatenate([normal, np.zeros((count, 1))], axis=1)
    return points, normals


def _sample_cap(inner, outer, z: float, count: int, rng, up: bool):
    """Points on the flat ring ``inner(theta) <= r <= outer(theta)`` at height z (rejection sampling)."""
    r_max = float(outer(np.linspace(0, 2 * np.pi, 4096)).max())
    kept = []
    while sum(len(k) for k in kept) < count:
        theta = rng.random(count * 2) * 2 * np.pi
        r = np.sqrt(rng.random(count * 2)) * r_max
        ok = (r >= inner(theta)) & (r <= outer(theta))
        kept.append(np.stack([r[ok] * np.cos(theta[ok]), r[ok] * np.sin(theta[ok])], axis=1))
    planar = np.concatenate(kept)[:count]
    points = np.concatenate([planar, np.full((count, 1), z)], axis=1)
    normals = np.tile([0.0, 0.0, 1.0 if up else -1.0], (count, 1))
    return points, normals


def make_gear(num_points: int = 200_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A gear lying in the XY plane (axis +Z towards the default camera), with a defect.

    Returns:
        ``points (N, 3)``, unit ``normals (N, 3)`` and ``labels (N,)`` (1 on the bump defect).
    """
    rng = np.random.default_rng(seed)
    thickness, hub_radius, hub_height, bore = 0.25, 0.42, 0.18, 0.2
    z_top, z_bottom, z_hub = thickness / 2, -thickness / 2, thickness / 2 + hub_height
    theta = np.linspace(0, 2 * np.pi, 2800, endpoint=False)
    outer_xy = _outline(theta)[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    circle = np.stack([np.cos(theta), np.sin(theta)], axis=1)

    def const(r):
        return lambda t: np.full_like(t, r)

    # Surface areas decide how many points each part gets (uniform density overall).
    outer_perimeter = np.linalg.norm(np.roll(outer_xy, -1, 0) - outer_xy, axis=1).sum()
    ring_area = 0.5 * np.mean(_outline(theta) ** 2) * 2 * np.pi
    parts = {
        "outer wall": outer_perimeter * thickness,
        "bore wall": 2 * np.pi * bore * (thickness + hub_height),
        "hub wall": 2 * np.pi * hub_radius * hub_height,
        "top": ring_area - np.pi * hub_radius**2,
        "hub top": np.pi * (hub_radius**2 - bore**2),
        "bottom": ring_area - np.pi * bore**2,
    }
    total = sum(parts.values())
    counts = {name: int(round(num_points * area / total)) for name, area in parts.items()}
    counts["bottom"] += num_points - sum(counts.values())

    pieces = [
        _sample_polyline_wall(outer_xy, z_bottom, z_top, counts["outer wall"], rng, outward=True),
        _sample_polyline_wall(bore * circle, z_bottom, z_hub, counts["bore wall"], rng, outward=False),
        _sample_polyline_wall(hub_radius * circle, z_top, z_hub, counts["hub wall"], rng, outward=True),
        _sample_cap(const(hub_radius), _outline, z_top, counts["top"], rng, up=True),
        _sample_cap(const(bore), const(hub_radius), z_hub, counts["hub top"], rng, up=True),
        _sample_cap(const(bore), _outline, z_bottom, counts["bottom"], rng, up=False),
    ]
    points = np.concatenate([p for p, _ in pieces])
    normals = np.concatenate([n for _, n in pieces])

    # Defect: a smooth bump on the top face between hub and teeth.
    centre, radius, height = np.array([0.45, 0.45]), 0.12, 0.06
    distance = np.linalg.norm(points[:, :2] - centre, axis=1)
    on_bump = (distance < radius) & np.isclose(points[:, 2], z_top)
    profile = 1 - (distance[on_bump] / radius) ** 2
    points[on_bump, 2] += height * profile**2
    # Normal of z = h (1 - d^2/r^2)^2: (-dz/dx, -dz/dy, 1), with dz/dd = -4 h d (1 - d^2/r^2) / r^2.
    slope = -4 * height * distance[on_bump] * profile / radius**2
    direction = (points[on_bump, :2] - centre) / np.maximum(distance[on_bump], 1e-9)[:, None]
    bump_normals = np.concatenate([-slope[:, None] * direction, np.ones((on_bump.sum(), 1))], axis=1)
    normals[on_bump] = bump_normals / np.linalg.norm(bump_normals, axis=1, keepdims=True)
    labels = on_bump.astype(np.int64)

    order = rng.permutation(num_points)  # no spatial order, like a generic unorganised cloud
    as_tensor = lambda a, dtype: torch.as_tensor(a[order], dtype=dtype)  # noqa: E731
    return as_tensor(points, torch.float32), as_tensor(normals, torch.float32), as_tensor(labels, torch.long)


def time_open3d(points: torch.Tensor, normals: torch.Tensor, rotations: torch.Tensor, repeats: int, window: int,
                point_size: float) -> tuple[dict | None, str | None]:
    """Timings of the authors' Open3D pipeline on ``points`` (see the module docstring), with the
    given normals and with Open3D's own normal estimate, or the reason it could not run."""
    try:
        from anomalib_3d.render.open3d_reference import headless_display, render_like_pointad
    except ImportError as error:
        return None, f"open3d is not importable ({error})"
    cloud, views, given = points.double().numpy(), rotations.double().numpy(), normals.double().numpy()
    try:
        with headless_display():
            return {
                "given": time_call(lambda: render_like_pointad(cloud, views, window=window, point_size=point_size,
                                                               normals=given), repeats),
                "estimated": time_call(lambda: render_like_pointad(cloud, views, window=window,
                                                                   point_size=point_size), repeats),
            }, None
    except RuntimeError as error:
        return None, str(error)


# ---------------------------------------------------------------------------------------------
# docs picture


def save_png(path: Path, points: torch.Tensor, normals: torch.Tensor, labels: torch.Tensor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rig = pointad_rig(9)
    colors = torch.full((points.shape[0], 3), 0.82)
    colors[labels == 1] = torch.tensor([0.9, 0.25, 0.2])  # the defect, so masks can be compared by eye
    out = render_points(points, rig=rig, normals=normals, colors=colors)
    masks = render_mask_like(labels, out)
    fig, axes = plt.subplots(3, 3, figsize=(9, 9.6))
    for view, axis in enumerate(axes.flat):
        axis.imshow(out.images[0, view].permute(1, 2, 0).numpy())
        # Outline of the ground-truth mask rendered through the same z-buffer.
        if masks[0, view].any():
            axis.contour(masks[0, view].numpy(), levels=[0.5], colors=["#1f5fd0"], linewidths=0.8)
        axis.set_title(f"view {view}: rot {rig.captions()[view]}", fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    fig.suptitle(
        "anomalib_3d.render: PointAD 9-view rig (rotations about X), 336 px, 200k points\n"
        "Lambert-shaded splats; red = defect points, blue = rendered GT mask outline",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"saved {path}")


# ---------------------------------------------------------------------------------------------


def save_parity_png(path: Path) -> None:
    """Ours (official style) beside Open3D (the authors' way), every view of each dataset preset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from anomalib_3d.data.adapters import resize_organized
    from anomalib_3d.data.background import clean_organized_scan
    from anomalib_3d.data.synthetic.generator import make_sample, make_scan
    from anomalib_3d.render.open3d_reference import headless_display
    from anomalib_3d_plugins.pointad import PointAD
    from anomalib_3d_plugins.pointad.official import compare_with_open3d

    scan = make_scan("gear", seed=3, image_size=(400, 400))
    keep = clean_organized_scan(scan.xyz, largest_cluster=True)
    grid = resize_organized(torch.from_numpy(np.where(keep[..., None], scan.xyz, 0.0)).float(), (336, 336))
    grid_index = (grid != 0).any(-1).reshape(-1).nonzero().squeeze(1)
    organized = {"points": grid.reshape(-1, 3)[grid_index], "grid_index": grid_index, "grid_shape": (336, 336)}
    unorganized = {"points": torch.as_tensor(make_sample("vase", seed=2, num_points=40000).points).float()}
    cases = [("pointad_mvtec", organized, "cookie"), ("pointad_eyecandies", organized, None),
             ("pointad_real3d", unorganized, None)]
    fig, axes = plt.subplots(2 * len(cases), 9, figsize=(18, 4.4 * len(cases)))
    with headless_display():
        for row, (preset, cloud, category) in enumerate(cases):
            torch.manual_seed(0)
            model = PointAD(backbone="pointad-tiny-vit", pretrained=None, render_style="official", render_size=336,
                            rig=None if preset == "pointad_real3d" else preset, evaluator=False, visualizer=False).model
            parity = compare_with_open3d(model, **cloud, category=category)
            for view in range(9):
                for offset, (images, who) in enumerate(((parity.ours, "ours"), (parity.theirs, "Open3D"))):
                    axis = axes[2 * row + offset, view]
                    axis.imshow(images[view].numpy())
                    axis.set_xticks([])
                    axis.set_yticks([])
                    title = f"{who} v{view}" + (f"  IoU {parity.iou[view]:.3f}" if offset else "")
                    axis.set_title(title, fontsize=8)
            axes[2 * row, 0].set_ylabel(preset, fontsize=9)
            print(f"{preset}: silhouette IoU min {parity.iou.min():.4f}, box within "
                  f"{(parity.extent_ratio - 1).abs().max():.2%}, "
                  f"grey difference max {parity.grey_difference.max():.4f}")
    fig.suptitle("PointAD official style (ours, rows 1/3/5) vs Open3D the authors' way (rows 2/4/6): "
                 "synthetic gear scan (MVTec and Eyecandies presets), synthetic vase (Real3D-AD preset)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)
    plt.close(fig)
    print(f"saved {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=336)
    parser.add_argument("--views", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--open3d-repeats", type=int, default=2)
    parser.add_argument("--window", type=int, default=1024, help="Open3D window of the official pipeline")
    parser.add_argument("--point-size", type=float, default=7.0, help="square points of the official pipeline")
    parser.add_argument("--skip-open3d", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--save-png", action="store_true", help="write docs/images/render_9views.png")
    parser.add_argument("--parity-png", action="store_true", help="write docs/images/pointad_open3d_parity.png")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    points, normals, labels = make_gear(args.points)
    rig = pointad_rig(args.views, image_size=args.size)
    official = rig.like_open3d(window_size=args.window)
    print(f"cloud: {args.points} points; {args.views} views at {args.size}x{args.size} (official style: "
          f"{args.window} px window, {args.point_size:g} px squares); torch threads {torch.get_num_threads()}")
    if args.save_png:
        save_png(REPO / "docs/images/render_9views.png", points, normals, labels)
    if args.parity_png:
        save_parity_png(REPO / "docs/images/pointad_open3d_parity.png")

    official_args = {"point_radius_px": args.point_size / 2, "point_shape": "square", "visibility": "nearest",
                     "lighting": "open3d", "base_color": (0.7, 0.7, 0.7), "normal_k": 50}
    # (row name, the Open3D variant it is compared with)
    compared = {"ours: render_points (shaded, given normals)": "given",
                "ours: official style (given normals)": "given",
                "ours: official style + estimate_normals(k=50)": "estimated"}
    rows = []  # (name, device, timings)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        p, n = points.to(device), normals.to(device)
        rows.append(("ours: render_points (shaded, given normals)", device.type,
                     time_call(lambda: render_points(p, rig=rig, normals=n), args.repeats, device)))
        rows.append(("ours: rasterize_points (z-buffer + correspondence only)", device.type,
                     time_call(lambda: rasterize_points(p, rig=rig), args.repeats, device)))
        out = rasterize_points(p, rig=rig)
        maps = torch.rand(1, args.views, 24, 24, device=device)  # CLIP-like patch maps
        rows.append(("ours: gather_to_points (24x24 maps -> points)", device.type,
                     time_call(lambda: gather_to_points(maps, out), args.repeats, device)))
        rows.append(("ours: render_points + estimate_normals(k=30)", device.type,
                     time_call(lambda: render_points(p, rig=rig), max(1, args.repeats // 2), device)))
        rows.append(("ours: official style (given normals)", device.type,
                     time_call(lambda: render_points(p, rig=official, normals=n, **official_args), args.repeats,
                               device)))
        rows.append(("ours: official style + estimate_normals(k=50)", device.type,
                     time_call(lambda: render_points(p, rig=official, **official_args), max(1, args.repeats // 2),
                               device)))

    open3d_times, why = (None, "skipped") if args.skip_open3d else time_open3d(
        points, normals, rig.rotations, args.open3d_repeats, args.window, args.point_size)
    if open3d_times is not None:
        rows.append(("open3d: the authors' pipeline, given normals", "cpu/llvmpipe", open3d_times["given"]))
        rows.append(("open3d: the authors' pipeline, Open3D's normals", "cpu/llvmpipe", open3d_times["estimated"]))
    else:
        print(f"Open3D reference not run: {why}")

    def medians(times):
        return statistics.median(t.wall for t in times), statistics.median(t.cpu for t in times)

    ours_wall, ours_cpu = medians(rows[0][2])
    print()
    print(f"{'method':58s} {'device':13s} {'wall ms':>9s} {'cpu ms':>9s} {'wall/ours':>10s} {'cpu/ours':>9s}")
    for name, device, times in rows:
        wall, cpu = medians(times)
        print(f"{name:58s} {device:13s} {wall * 1e3:9.1f} {cpu * 1e3:9.1f} "
              f"{wall / ours_wall:10.2f} {cpu / ours_cpu:9.2f}")
    print("(medians; cpu = process CPU time over all threads, Open3D's software OpenGL included; Xvfb excluded)")
    if open3d_times is not None:
        for name, device, times in rows:
            if name in compared:
                ref_wall, ref_cpu = medians(open3d_times[compared[name]])
                wall, cpu = medians(times)
                print(f"speed-up of {name[6:]} ({device}) over the Open3D pipeline ({compared[name]} normals): "
                      f"{ref_wall / wall:.1f}x wall, {ref_cpu / cpu:.1f}x CPU time")
    try:
        print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    except OSError:
        pass
    visible = rasterize_points(points, rig=rig).visible
    print(f"points visible in >= 1 view: {visible.any(1).float().mean().item():.1%}; "
          f"mean views per point: {visible.sum(1).float().mean().item():.2f}")


if __name__ == "__main__":
    main()
