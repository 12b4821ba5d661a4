"""Speed of the multi-view scene stack: synthetic scene generation, loading, voxel back-projection and
volume rendering.

Tables:

1. Generating a synthetic scene set with the default parameters (12 views of 128 x 128, 3-6
   instances of 6000 points) serially and with 2 worker processes: wall / CPU seconds, ms per
   scene, disk use; ``x target`` = wall time / 180 s for 200 scenes (the goal: "a few minutes on
   2 cores").
2. Where one scene's time goes (make_scene / render_scene / write_scene), as shares of the total.
3. Reading scenes back: one scene (5 views, masks, depth) and one DataLoader batch, against the
   time it took to generate the scene.
4. Voxel operations on the paper's grid (96 x 96 x 16, 4 cm) for one scene of 5 views: back-projection
   of 32-channel stride-4 features and volume rendering (32 channels, 64 x 64 rays, 128 samples;
   density filling the objects' boxes), forward and forward + backward, exact and with the sparse
   feature sampling (``min_weight=1e-4``), with the peak resident memory; ratios against the
   back-projection.

Run ``OMP_NUM_THREADS=1 python benchmarks/scenes.py`` (``--quick``: 40 scenes instead of 200).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch
from _common import cpu_seconds

from anomalib_3d.data.datamodules.multiview_scenes import MultiViewScenes
from anomalib_3d.data.scenes import load_scene
from anomalib_3d.data.synthetic.scenes import (
    generate_scene_dataset,
    make_scene,
    render_scene,
    scene_dataset_params,
    write_scene,
)
from anomalib_3d.render.volume import VoxelGrid, backproject_features, render_volume

TARGET_SECONDS_PER_200 = 180.0


def _disk_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20


def generation_table(work: Path, num_scenes: int) -> tuple[Path, float]:
    print(f"\n## Generating {num_scenes} scenes (default parameters)\n")
    print("| workers | wall s | CPU s | ms / scene | MB on disk | x target |")
    print("|---|---|---|---|---|---|")
    params = {"num_train": num_scenes - 2 * (num_scenes // 5), "num_test": num_scenes // 5,
              "num_test_unseen": num_scenes // 5}
    root = work / "serial"
    per_scene = 0.0
    for workers in (0, 2):
        root = work / f"workers{workers}"
        cpu, start = cpu_seconds(), time.perf_counter()
        generate_scene_dataset(root, num_workers=workers, **params)
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        per_scene = per_scene or wall / num_scenes
        target = TARGET_SECONDS_PER_200 * num_scenes / 200
        print(f"| {workers} | {wall:.1f} | {cpu:.1f} | {1000 * wall / num_scenes:.0f} | {_disk_mb(root):.0f} | "
              f"{wall / target:.2f} |")
    return root, per_scene


def stage_table() -> None:
    print("\n## One scene, stage by stage (median of 5 scenes)\n")
    params = scene_dataset_params()
    times: dict[str, list[float]] = {"make_scene": [], "render_scene": [], "write_scene": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(5):
            start = time.perf_counter()
            scene = make_scene("cup", seed, num_views=params["num_views"], image_size=params["image_size"],
                               points_per_object=params["points_per_object"])
            times["make_scene"].append(time.perf_counter() - start)
            start = time.perf_counter()
            render = render_scene(scene)
            times["render_scene"].append(time.perf_counter() - start)
            start = time.perf_counter()
            write_scene(scene, Path(tmp) / f"s{seed}", render)
            times["write_scene"].append(time.perf_counter() - start)
    medians = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    total = sum(medians.values())
    print("| stage | ms | share |")
    print("|---|---|---|")
    for name, value in medians.items():
        print(f"| {name} | {1000 * value:.0f} | {value / total:.2f} |")
    print(f"| total | {1000 * total:.0f} | 1.00 |")


def loading_table(root: Path, generate_seconds: float) -> None:
    print("\n## Reading scenes back\n")
    scene_dir = next(p for p in sorted(root.iterdir()) if p.is_dir())
    start = time.perf_counter()
    for _ in range(5):
        load_scene(scene_dir, [0, 3, 6, 9, 11], load_depth=True)
    one = (time.perf_counter() - start) / 5
    dm = MultiViewScenes(root=root, split_file=root / "synthetic-split.json", train_batch_size=4, load_depth=True)
    dm.setup()
    start = time.perf_counter()
    batch = next(iter(dm.train_dataloader()))
    loader = time.perf_counter() - start
    print("| what | ms | x generating one scene |")
    print("|---|---|---|")
    print(f"| load_scene, 5 views + masks + depth | {1000 * one:.1f} | {one / generate_seconds:.3f} |")
    print(f"| train batch, 4 scenes x 10 views {tuple(batch.image.shape[-2:])} | {1000 * loader:.1f} | "
          f"{loader / generate_seconds:.3f} |")


def volume_table() -> None:
    print("\n## Voxel operations, 96 x 96 x 16 grid, one scene of 5 views\n")
    grid = VoxelGrid()
    scene = make_scene("cup", 0, num_views=5, image_size=256, points_per_object=100)
    torch.manual_seed(0)
    k = torch.from_numpy(scene.intrinsics).float().expand(1, 5, 3, 3)
    poses = torch.from_numpy(scene.world_to_camera).float().unsqueeze(0)
    features = torch.randn(1, 5, 32, 64, 64, requires_grad=True)
    # Density of a trained model is sparse: high inside the objects' boxes, ~0 elsewhere.
    centres = grid.voxel_centers()
    occupied = torch.zeros(grid.volume_shape, dtype=torch.bool)
    for centre, size in torch.from_numpy(scene.boxes).float():
        occupied |= ((centres - centre).abs() <= size / 2).all(dim=-1)
    density = (occupied.float() * 50.0).view(1, 1, *grid.volume_shape).requires_grad_()
    volume = torch.rand(1, 32, *grid.volume_shape, requires_grad=True)
    # Rendering at 64 x 64: scale K from the 256 px images.
    k_render = k * torch.tensor([0.25, 0.25, 1.0]).view(1, 1, 3, 1)
    rows = []

    def timed(name: str, fn) -> None:  # noqa: ANN001
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        rows.append((name, seconds, grown))

    timed("backproject_features (fwd)", lambda: backproject_features(features.detach(), k, poses, (256, 256), grid))
    timed("backproject_features (fwd + bwd)",
          lambda: backproject_features(features, k, poses, (256, 256), grid)[0].sum().backward())
    timed("render_volume 64 x 64 x 128 (fwd)", lambda: render_volume(
        density.detach(), volume.detach(), k_render, poses, (64, 64), grid, num_samples=128))
    timed("render_volume 64 x 64 x 128 (fwd + bwd)", lambda: render_volume(
        density, volume, k_render, poses, (64, 64), grid, num_samples=128).features.sum().backward())
    timed("render_volume, min_weight=1e-4 (fwd)", lambda: render_volume(
        density.detach(), volume.detach(), k_render, poses, (64, 64), grid, num_samples=128, min_weight=1e-4))
    timed("render_volume, min_weight=1e-4 (fwd + bwd)", lambda: render_volume(
        density, volume, k_render, poses, (64, 64), grid, num_samples=128, min_weight=1e-4).features.sum().backward())
    reference = rows[0][1]
    print("| operation | ms | x backprojection | peak RSS growth MB |")
    print("|---|---|---|---|")
    for name, seconds, grown in rows:
        print(f"| {name} | {1000 * seconds:.0f} | {seconds / reference:.1f} | {grown:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 scenes instead of 200")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="scenes_bench_"))
    try:
        root, per_scene = generation_table(work, 40 if args.quick else 200)
        stage_table()
        loading_table(root, per_scene)
        volume_table()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
