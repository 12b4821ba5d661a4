"""Benchmark: PointAD inference per sample, split into render / encode / score, and peak memory.

For each backbone (random weights: timing does not depend on their values) one cloud at a time
(batch size 1, as the paper's Table 17) goes through:

* **render** — the per-cloud splat radius, then ``anomalib_3d.render.render_points``: normals,
  z-buffer, shading, correspondence;
* **encode** — the frozen CLIP on the ``V`` renders (V-V stream + multi-layer tokens);
* **score** — prompts (cached), similarities, bilinear upsampling, gather to points, smoothing
  (organized input: the 2D Gaussian on the grid; unorganized: the radius Gaussian on the points),
  object score.

``--input organized`` (default) scores a 336 x 336 sensor-frame scan (a dome on the grid, ~50 000
points like an MVTec 3D-AD scan after background removal) with the authors' MVTec rig;
``--input unorganized`` scores a synthetic part of ``--points`` points with the Real3D-AD rig.
``--render-style official`` renders the authors' pictures instead (Open3D's camera per view, square
points in a 1024 / 1036 px window resized to the backbone's size, Open3D's lighting; unorganized
clouds resampled to 112,896 points first).

References in the table: ``encode / CLIP`` compares our encoder with open_clip's plain
``encode_image`` on the same renders (the cost of the parallel V-V stream and the extra tokens);
``total / paper`` compares with the paper's 0.40 s per sample (ViT-L/14@336 on an RTX 3090,
Table 17; meaningful for ViT-L on a GPU only). A second table times one training step on a batch
of 4 with the frozen-feature cache cold (render + encode) and warm (rasterise only).

Each configuration runs in its own process, so the peak resident memory (CPU) is its own.

Usage::

    python benchmarks/pointad.py                                   # CPU: tiny + ViT-B-16
    python benchmarks/pointad.py --device cuda --backbones ViT-L-14-336
    python benchmarks/pointad.py --input unorganized --points 20000 --repeats 3 --threads 2
    python benchmarks/pointad.py --render-style official --backbones pointad-tiny-vit
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from _common import synchronize

PAPER_SECONDS = 0.40


def _cloud(num_points: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, None]:
    from anomalib_3d.data.synthetic import make_sample

    sample = make_sample("gear", "bulge", seed=seed, num_points=num_points)
    return torch.from_numpy(sample.points), torch.from_numpy(sample.labels.astype(bool)), None


def _scan(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sensor-frame organized scan: a dome with a pit on a ``size x size`` grid (points, labels, grid index)."""
    generator = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    x, y = (cols - size / 2) / size, (rows - size / 2) / size
    radius = 0.45
    d2 = x**2 + y**2
    centre = (torch.rand(2, generator=generator) - 0.5) * 0.4
    pit = 0.03 * torch.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * 0.04**2))
    z = 1.0 - (radius**2 - d2).clamp(min=0).sqrt() + pit
    inside = (d2 < radius**2).reshape(-1)
    points = torch.stack([x, y, z], dim=-1).reshape(-1, 3)[inside].float()
    return points, (pit.reshape(-1) > 0.01)[inside], inside.nonzero().squeeze(1)


def run_one(args: argparse.Namespace) -> dict:
    """Time one backbone in this process; returns a JSON-able row."""
    from anomalib_3d_plugins.pointad.clip_backbone import FrozenCLIP
    from anomalib_3d_plugins.pointad.prompts import PromptLearner
    from anomalib_3d_plugins.pointad import FeatureCache, PointADModel, RenderSettings
    from anomalib_3d_plugins.pointad.scoring import segment_max

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    backbone = FrozenCLIP(args.backbone, None).to(device)
    render = RenderSettings(num_views=args.views, style=args.render_style)
    model = PointADModel(backbone, PromptLearner(backbone).to(device), render=render,
                         smoothing_k=args.smoothing_k, feature_cache=FeatureCache()).to(device).eval()
    organized = args.input == "organized"
    clouds = [_scan(args.grid, seed) if organized else _cloud(args.points, seed) for seed in range(args.repeats + 1)]
    grid_shape = (args.grid, args.grid)
    stages: dict[str, list[float]] = {"render": [], "encode": [], "score": [], "clip": []}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    from anomalib_3d.render import gather_to_points

    with torch.no_grad():
        for index, (points, _, grid_index) in enumerate(clouds):
            points = points.to(device)
            grid = {"grid_index": grid_index.to(device), "grid_shape": grid_shape} if organized else {}
            batch = torch.zeros(points.shape[0], dtype=torch.long, device=device)
            synchronize(device)
            t0 = time.perf_counter()
            resampled = model.resample_official(points, batch, 1, organized)
            if resampled is not None:
                points, batch = resampled[:2]
            output = model.render(points, batch, 1, **grid)
            synchronize(device)
            t1 = time.perf_counter()
            glob, patch = model.encode_views(output.images)
            synchronize(device)
            t2 = time.perf_counter()
            text = model._per_cloud_text(None, 1)  # noqa: SLF001
            scores = model.score_views(glob, patch, text)
            view_probs = scores.logits.softmax(-1)[..., 1]
            maps = torch.stack([p[:, :, 1] for p in scores.patch_probs]).mean(0)
            point_map = model.smooth(points, gather_to_points(maps, output, fallback="nearest"), batch, 1, **grid)
            score = 0.5 * (view_probs.mean(1) + segment_max(point_map, batch, 1))
            float(score[0])
            synchronize(device)
            t3 = time.perf_counter()
            flat = backbone.prepare_images(output.images.flatten(0, 1))
            with backbone._autocast(device):  # noqa: SLF001 - same precision as ours
                backbone.clip.encode_image(flat)
            synchronize(device)
            t4 = time.perf_counter()
            if index == 0:
                continue  # warm-up (allocator, kernels, text cache)
            stages["render"].append(t1 - t0)
            stages["encode"].append(t2 - t1)
            stages["score"].append(t3 - t2)
            stages["clip"].append(t4 - t3)
        # Training step on a batch of 4, cold then warm cache.
        points = torch.cat([c[0] for c in clouds[:4]]).to(device)
        labels = torch.cat([c[1] for c in clouds[:4]]).to(device)
        counts = torch.tensor([c[0].shape[0] for c in clouds[:4]])
        batch = torch.repeat_interleave(torch.arange(len(counts)), counts).to(device)
        object_labels = torch.ones(len(counts), dtype=torch.long, device=device)
        paths = [f"bench/{i}" for i in range(len(counts))]
        grid = ({"grid_index": torch.cat([c[2] for c in clouds[:4]]).to(device), "grid_shape": grid_shape}
                if organized else {})
    model.train()
    step = {}
    for name in ("cold", "warm"):
        synchronize(device)
        t0 = time.perf_counter()
        loss = model.compute_loss(points, batch, object_labels, labels, paths=paths, **grid)["loss"]
        loss.backward()
        synchronize(device)
        step[name] = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    median = {k: statistics.median(v) for k, v in stages.items()}
    return {
        "backbone": args.backbone,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "image_size": backbone.image_size[0],
        "points": int(clouds[1][0].shape[0]),
        "views": model.rig_for(organized).num_views,
        **median,
        "total": median["render"] + median["encode"] + median["score"],
        "peak_mb": peak,
        "train_cold": step["cold"],
        "train_warm": step["warm"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbones", nargs="+", default=None,
                        help="default: pointad-tiny-vit ViT-B-16 on CPU; + ViT-L-14-336 on CUDA")
    parser.add_argument("--points", type=int, default=50000, help="points per cloud (MVTec 3D-AD at 336 px: ~50k)")
    parser.add_argument("--input", choices=("organized", "unorganized"), default="organized")
    parser.add_argument("--grid", type=int, default=336, help="organized grid side (the paper resizes to 336)")
    parser.add_argument("--views", type=int, default=None, help="Table 7 view count (default: the preset rig, 9)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoothing-k", type=int, default=None, help="kNN smoothing (default: radius Gaussian)")
    parser.add_argument("--render-style", choices=("ours", "official"), default="ours",
                        help="our pictures or the authors' (Open3D's) pictures")
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        args.backbone = args.single
        print(json.dumps(run_one(args)))
        return
    backbones = args.backbones or (["pointad-tiny-vit", "ViT-B-16"] + (["ViT-L-14-336"] if args.device == "cuda" else []))
    rows = []
    for name in backbones:
        command = [sys.executable, __file__, "--single", name, "--device", args.device, "--points", str(args.points),
                   "--input", args.input, "--grid", str(args.grid), "--repeats", str(args.repeats),
                   "--threads", str(args.threads), "--render-style", args.render_style]
        command += ["--views", str(args.views)] if args.views is not None else []
        command += ["--smoothing-k", str(args.smoothing_k)] if args.smoothing_k is not None else []
        out = subprocess.run(command, capture_output=True, text=True, check=False,
                             env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode or not lines:
            print(f"{name}: failed\n{out.stderr[-2000:]}")
            continue
        rows.append(json.loads(lines[-1]))
    if rows:
        print(f"\nPointAD inference per sample (batch 1, {args.input} input, {rows[0]['points']} points, "
              f"{rows[0]['views']} views, {args.render_style} render style), median of {args.repeats}, "
              f"device {args.device}, {args.threads} threads\n")
    header = ("| backbone | px | render s | encode s | score s | total s | encode / CLIP | total / paper 0.40 s "
              "| peak MB | train step cold s | warm s | cold / warm |")
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backbone']} | {r['image_size']} | {r['render']:.3f} | {r['encode']:.3f} | {r['score']:.3f} "
              f"| {r['total']:.3f} | {r['encode'] / r['clip']:.2f} | {r['total'] / PAPER_SECONDS:.2f} "
              f"| {r['peak_mb']:.0f} | {r['train_cold']:.2f} | {r['train_warm']:.2f} "
              f"| {r['train_cold'] / r['train_warm']:.1f} |")
    if rows:
        print(f"\ndevice: {rows[0]['device']}; peak MB = max resident memory (CPU) or max CUDA allocation (GPU).")


if __name__ == "__main__":
    main()
