"""Benchmark: our torch point-splat renderer vs the Open3D Visualizer pipeline PointAD uses.

PointAD (Appendix B) renders each cloud with Open3D at 336 x 336 from 9 rotations about X. The
reference here reproduces that pipeline: rotate the cloud, open an offscreen
``open3d.visualization.Visualizer`` window per view, ``capture_screen_float_buffer``. A second
Open3D variant reuses one window for all views (cheaper; not what a per-view script does). Open3D
needs an X display: if ``DISPLAY`` is unset we start ``Xvfb :99`` and stop it afterwards. Open3D
runs in a child process so a crash there cannot take the benchmark down.

Note that Open3D gives images only; our renderer also returns the exact point <-> pixel map and
per-view visibility that PointAD needs to project 2D scores back to 3D.

Usage::

    python benchmarks/render.py              # timing table
    python benchmarks/render.py --save-png   # also docs/images/render_9views.png
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
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


_OPEN3D_WORKER = r"""
import json, sys, time
import numpy as np
import open3d as o3d

data = np.load(sys.argv[1])
angles = [float(a) for a in sys.argv[2].split(",")]
size, repeats = int(sys.argv[3]), int(sys.argv[4])
cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(data["points"].astype(np.float64)))
cloud.normals = o3d.utility.Vector3dVector(data["normals"].astype(np.float64))

def render(rotated):
    vis = o3d.visualization.Visualizer()
    if not vis.create_window(width=size, height=size, visible=False):
        raise RuntimeError("open3d could not create a window")
    vis.add_geometry(rotated)
    vis.poll_events()
    vis.update_renderer()
    image = np.asarray(vis.capture_screen_float_buffer(do_render=True))
    vis.destroy_window()
    return image

def window_per_view():
    images = []
    for angle in angles:
        rotated = o3d.geometry.PointCloud(cloud)
        rotated.rotate(o3d.geometry.get_rotation_matrix_from_xyz((angle, 0.0, 0.0)), center=(0, 0, 0))
        images.append(render(rotated))
    return images

def one_window():
    vis = o3d.visualization.Visualizer()
    if not vis.create_window(width=size, height=size, visible=False):
        raise RuntimeError("open3d could not create a window")
    rotated = o3d.geometry.PointCloud(cloud)
    vis.add_geometry(rotated)
    images, current = [], np.eye(3)
    for angle in angles:
        target = o3d.geometry.get_rotation_matrix_from_xyz((angle, 0.0, 0.0))
        rotated.rotate(target @ current.T, center=(0, 0, 0))
        current = target
        vis.update_geometry(rotated)
        vis.poll_events()
        vis.update_renderer()
        images.append(np.asarray(vis.capture_screen_float_buffer(do_render=True)))
    vis.destroy_window()
    return images

result = {}
for name, fn in (("window_per_view", window_per_view), ("one_window", one_window)):
    images = fn()  # warm-up and sanity check
    times = []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - start, time.process_time() - start_cpu))
    result[name] = {"times": times, "shape": list(images[0].shape), "mean_pixel": float(np.mean(images[0]))}
print("RESULT " + json.dumps(result))
"""


def _start_display() -> subprocess.Popen | None:
    """Start ``Xvfb :99`` when no display is set; returns the process we started (or None)."""
    if os.environ.get("DISPLAY"):
        return None
    if shutil.which("Xvfb") is None:
        return None
    xvfb = subprocess.Popen(
        ["Xvfb", ":99", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.5)
    if xvfb.poll() is not None:
        return None
    os.environ["DISPLAY"] = ":99"
    return xvfb


def time_open3d(points: torch.Tensor, normals: torch.Tensor, angles: list[float], size: int, repeats: int):
    """Seconds per 9-view render for both Open3D variants, or the reason it could not run."""
    try:
        import open3d  # noqa: F401
    except ImportError as error:
        return None, f"open3d is not importable ({error})"
    xvfb = _start_display()
    if not os.environ.get("DISPLAY"):
        return None, "no X display and Xvfb could not be started"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cloud_file = Path(tmp) / "cloud.npz"
            np.savez(cloud_file, points=points.numpy(), normals=normals.numpy())
            script = Path(tmp) / "o3d_worker.py"
            script.write_text(_OPEN3D_WORKER)
            env = {**os.environ, "XDG_RUNTIME_DIR": tmp}
            run = subprocess.run(
                [sys.executable, str(script), str(cloud_file), ",".join(map(repr, angles)), str(size), str(repeats)],
                capture_output=True,
                text=True,
                timeout=900,
                env=env,
            )
        lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        if run.returncode != 0 or not lines:
            return None, f"open3d worker failed (exit {run.returncode}): {run.stderr.strip()[-400:]}"
        return json.loads(lines[-1][len("RESULT ") :]), None
    except subprocess.TimeoutExpired:
        return None, "open3d worker timed out"
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(timeout=10)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=336)
    parser.add_argument("--views", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--open3d-repeats", type=int, default=2)
    parser.add_argument("--skip-open3d", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--save-png", action="store_true", help="write docs/images/render_9views.png")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    points, normals, labels = make_gear(args.points)
    rig = pointad_rig(args.views, image_size=args.size)
    print(f"cloud: {args.points} points; {args.views} views at {args.size}x{args.size}; "
          f"torch threads {torch.get_num_threads()}")
    if args.save_png:
        save_png(REPO / "docs/images/render_9views.png", points, normals, labels)

    rows = []  # (name, device, seconds per 9 views)
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
        try:
            from anomalib_3d.ops import estimate_normals

            rows.append(("ours: render_points + estimate_normals(k=30)", device.type,
                         time_call(lambda: render_points(p, rig=rig), max(1, args.repeats // 2), device)))
            del estimate_normals
        except ImportError:
            pass

    open3d_result, why = (None, "skipped") if args.skip_open3d else time_open3d(
        points, normals, pointad_rig(args.views).angles, args.size, args.open3d_repeats
    )
    if open3d_result is not None:
        per_view, one_window = open3d_result["window_per_view"]["times"], open3d_result["one_window"]["times"]
        rows.append(("open3d: Visualizer window per view (PointAD-style)", "cpu/llvmpipe", per_view))
        rows.append(("open3d: one Visualizer window, 9 captures", "cpu/llvmpipe", one_window))
    else:
        print(f"Open3D reference not run: {why}")

    def medians(times):
        return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)

    ours_wall, ours_cpu = medians(rows[0][2])
    print()
    print(f"{'method':58s} {'device':13s} {'wall ms':>9s} {'cpu ms':>9s} {'wall/ours':>10s} {'cpu/ours':>9s}")
    for name, device, times in rows:
        wall, cpu = medians(times)
        print(f"{name:58s} {device:13s} {wall * 1e3:9.1f} {cpu * 1e3:9.1f} "
              f"{wall / ours_wall:10.2f} {cpu / ours_cpu:9.2f}")
    print("(medians; cpu = process CPU time over all threads; Open3D's excludes the X server)")
    if open3d_result is not None:
        ref_wall, ref_cpu = medians(open3d_result["window_per_view"]["times"])
        print(f"\nspeed-up of ours (cpu, shaded) over Open3D window-per-view: "
              f"{ref_wall / ours_wall:.1f}x wall, {ref_cpu / ours_cpu:.1f}x CPU time")
        for name, device, times in rows:
            if device == "cuda" and name.startswith("ours: render_points (shaded"):
                speed_up = ref_wall / medians(times)[0]
                print(f"speed-up of ours (cuda, shaded) over Open3D window-per-view: {speed_up:.1f}x wall")
    try:
        print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    except OSError:
        pass
    visible = rasterize_points(points, rig=rig).visible
    print(f"points visible in >= 1 view: {visible.any(1).float().mean().item():.1%}; "
          f"mean views per point: {visible.sum(1).float().mean().item():.2f}")


if __name__ == "__main__":
    main()
