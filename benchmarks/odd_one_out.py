"""Cost of Odd-One-Out's cross-instance attention: time and peak memory per scene.

For each preset and each ``attention`` mode (``none`` / ``dense`` / ``sparse``) the table gives

* the **train step**: ``OddOneOut.training_step`` in the second stage (object BCE + rendering loss:
  ``render_epochs=0``) plus ``loss.backward()``, on ``V_src`` source views + ``V_src`` supervising
  views, as the datamodule yields in training;
* the **test step**: ``OddOneOut.test_step`` under ``torch.no_grad()`` on ``V_src`` views;

with ``x none`` = the ratio against ``attention="none"`` of the same preset and step, measured in
the same run. Presets (one scene per step, so the numbers are per scene):

* ``tiny``: the README's tiny CPU run (grid 24 x 24 x 8, 5 + 5 views of 48², crop 4, 1 block);
* ``medium``: grid 48 x 48 x 8 at 4 cm, 5 + 5 views of 128², widths 16, crop 6 (216 tokens per
  object), 2 blocks of 4 heads, top-k 10, 24² renders with 48 samples;
* ``paper`` (forward / test step only): the paper's grid 96 x 96 x 16 at 4 cm, 5 views of 256²,
  the model's default widths (32), crop 8 (512 tokens per object), 3 blocks of 8 heads, top-k 20.

Scenes: cameras and boxes of a synthetic scene (:func:`anomalib_3d.data.synthetic.scenes.make_scene`,
``--objects`` instances); the images, silhouettes and object masks are random (the cost does not
depend on the pixel values).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` minus the memory allocated when the step
starts (tensors only). On CPU the resident-set high-water mark above the RSS when the step starts,
measured in a second process (this script with ``--memory-pass``) whose glibc mmap threshold is
pinned at 64 KiB (``MALLOC_MMAP_THRESHOLD_``), so freed tensors leave the RSS and every step starts
from the live state; ``VmHWM`` is reset through ``/proc/self/clear_refs`` before each step. It
counts every allocation of the step (tensors, autograd graph, allocator scratch). Where
``clear_refs`` is not writable it falls back to the growth of ``ru_maxrss`` (a lower bound; the
header says which was used). The timing pass runs with glibc's usual allocator settings (a pinned
threshold makes every large tensor an ``mmap`` + page faults, which would inflate the times).

Time: the median of ``--repeats`` steps after one warm-up step.

Run ``OMP_NUM_THREADS=1 python benchmarks/odd_one_out.py`` (``--device cuda``; ``--presets tiny``;
``--no-paper``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import MMAP_THRESHOLD_ENV, PeakMemory

MODES = ("none", "dense", "sparse")

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "image_size": 48, "source_views": 5,
        "network": {"grid_shape": [24, 24, 8], "voxel_size": 0.06, "grid_center": [0, 0, 0.12], "feature_dim": 8,
                    "projection_dim": 8, "crop_size": 4, "num_blocks": 1, "heads": 2, "token_dim": 16, "topk": 5,
                    "render_size": [12, 12], "num_samples": 24},
    },
    "medium": {
        "image_size": 128, "source_views": 5,
        "network": {"grid_shape": [48, 48, 8], "voxel_size": 0.04, "grid_center": [0, 0, 0.14], "feature_dim": 16,
                    "projection_dim": 16, "crop_size": 6, "num_blocks": 2, "heads": 4, "token_dim": 32, "topk": 10,
                    "render_size": [24, 24], "num_samples": 48},
    },
    "paper": {
        "image_size": 256, "source_views": 5,
        "network": {"grid_shape": [96, 96, 16], "voxel_size": 0.04, "grid_center": [0, 0, 0], "feature_dim": 32,
                    "projection_dim": 32, "crop_size": 8, "num_blocks": 3, "heads": 8, "token_dim": 64, "topk": 20,
                    "render_size": [32, 32], "num_samples": 64},
    },
}

# ----------------------------------------------------------------------------------------------
# inputs


def scene_batch(preset: dict[str, Any], views: int, num_objects: int, device: Any, seed: int = 0) -> Any:
    """One scene as a ``SceneBatch``: cameras and boxes of a synthetic scene, random pixels.

    The first ``preset["source_views"]`` views are source views, the rest supervise the rendering.
    """
    import numpy as np
    import torch

    from anomalib_3d.data.scenes import SceneBatch, SceneItem
    from anomalib_3d.data.synthetic.scenes import make_scene

    size = int(preset["image_size"])
    scene = make_scene("cup", seed, num_views=views, image_size=size, min_objects=num_objects,
                       max_objects=num_objects, points_per_object=200, num_odd=1)
    generator = torch.Generator().manual_seed(seed)
    count = scene.num_objects
    item = SceneItem(
        image=torch.rand(views, 3, size, size, generator=generator),
        silhouette=torch.rand(views, size, size, generator=generator) > 0.7,
        object_index=torch.randint(-1, count, (views, size, size), generator=generator),
        intrinsics=torch.as_tensor(np.repeat(scene.intrinsics[None], views, 0), dtype=torch.float32),
        world_to_camera=torch.as_tensor(scene.world_to_camera, dtype=torch.float32),
        source_views=torch.arange(views) < int(preset["source_views"]),
        boxes=torch.as_tensor(scene.boxes, dtype=torch.float32),
        object_labels=torch.as_tensor(scene.object_labels),
        gt_label=bool(scene.object_labels.any()),
        scene_id=f"bench_{seed}",
        category="cup",
    )
    batch = SceneBatch.collate([item])
    return batch.to(device) if hasattr(batch, "to") else _move(batch, device)


def _move(batch: Any, device: Any) -> Any:
    import torch

    changes = {name: value.to(device) for name in batch.keys(include_none=False)
               if isinstance(value := getattr(batch, name), torch.Tensor)}
    return batch.update(**changes)


# ----------------------------------------------------------------------------------------------
# steps


def build_model(preset: dict[str, Any], mode: str, device: Any) -> Any:
    import torch
    from anomalib_3d_plugins.odd_one_out import OddOneOut

    torch.manual_seed(0)
    model = OddOneOut(**preset["network"], attention=mode, render_epochs=0, visualizer=False, evaluator=False,
                      post_processor=False)
    return model.to(device)


def measure(step: Any, device: Any, memory: PeakMemory | None, repeats: int) -> tuple[float, float]:
    """``(median seconds, peak MiB)`` of ``step()``: one warm-up, memory (when asked) on the first measured step."""
    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # warm-up: lazy initialisations, allocator caches
    times = []
    peak = float("nan")
    for index in range(repeats):
        if index == 0 and memory is not None:
            memory.start()
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
        if index == 0 and memory is not None:
            peak = memory.stop()
    return statistics.median(times), peak


def train_step(model: Any, batch: Any) -> Any:
    import warnings

    def run() -> None:
        model.train()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # self.log() outside a Trainer only warns
            loss = model.training_step(batch)["loss"]
        loss.backward()
        model.zero_grad(set_to_none=True)

    return run


def test_step(model: Any, batch: Any) -> Any:
    import torch

    def run() -> None:
        model.eval()
        with torch.no_grad():
            model.test_step(batch, 0)

    return run


# ----------------------------------------------------------------------------------------------
# table


def _fmt_ratio(value: float, reference: float) -> str:
    if math.isnan(reference) or math.isnan(value) or reference <= 0:
        return "-"
    return f"{value / reference:.2f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (f"| {'preset':<7} | {'step':<15} | {'attention':<9} | {'ms / scene':>11} | {'x none':>6} | "
              f"{'peak MiB':>9} | {'x none':>6} |")
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for row in rows:
        reference = next((r for r in rows if r["preset"] == row["preset"] and r["step"] == row["step"]
                          and r["attention"] == "none"), None)
        ref_time = reference["seconds"] if reference else float("nan")
        ref_mem = reference["peak_mib"] if reference else float("nan")
        print(f"| {row['preset']:<7} | {row['step']:<15} | {row['attention']:<9} | {row['seconds'] * 1e3:>11.1f} | "
              f"{_fmt_ratio(row['seconds'], ref_time):>6} | {row['peak_mib']:>9.1f} | "
              f"{_fmt_ratio(row['peak_mib'], ref_mem):>6} |")


def plan_rows(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """``(preset, step, repeats)`` in the order of the table."""
    plan = [(p, s, args.repeats) for p in args.presets for s in ("train (fwd+bwd)", "test (fwd)")]
    if args.paper:
        plan.append(("paper", "test (fwd)", args.paper_repeats))
    return plan


def run_rows(args: argparse.Namespace, device: Any, memory: PeakMemory | None, timing: bool) -> list[dict[str, Any]]:
    """Measure every row: time (``timing``) and/or peak memory (``memory``)."""
    rows: list[dict[str, Any]] = []
    for preset_name, step_name, repeats in plan_rows(args):
        preset = PRESETS[preset_name]
        training = step_name.startswith("train")
        views = 2 * preset["source_views"] if training else preset["source_views"]
        batch = scene_batch(preset, views, args.objects, device)
        for mode in args.attention:
            model = build_model(preset, mode, device)
            step = train_step(model, batch) if training else test_step(model, batch)
            started = time.perf_counter()
            seconds, peak = measure(step, device, memory, repeats if timing else 1)
            row = {"preset": preset_name, "step": step_name, "attention": mode,
                   "seconds": seconds if timing else float("nan"), "peak_mib": peak}
            rows.append(row)
            what = "memory pass" if not timing else "time pass"
            print(f"  [{what}] {preset_name:<7} {step_name:<15} {mode:<7} {row['seconds'] * 1e3:9.1f} ms "
                  f"{peak:8.1f} MiB  (row took {time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)
            del model, step
    return rows


def memory_pass_in_subprocess(argv: list[str]) -> tuple[dict[tuple[str, str, str], float], str]:
    """Run this script with ``--memory-pass`` and the mmap threshold pinned; ``({row: MiB}, method)``."""
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "memory.json"
        env = {**os.environ, MMAP_THRESHOLD_ENV: "65536"}
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--memory-pass", str(target)],
                              env=env, check=False)
        if done.returncode != 0 or not target.is_file():
            return {}, f"memory pass failed (exit {done.returncode})"
        result = json.loads(target.read_text())
    peaks = {(r["preset"], r["step"], r["attention"]): r["peak_mib"] for r in result["rows"]}
    return peaks, result["method"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cpu / cuda / cuda:1 ... (default: cuda when available)")
    parser.add_argument("--presets", nargs="+", default=["tiny", "medium"], choices=["tiny", "medium"])
    parser.add_argument("--attention", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--objects", type=int, default=5, help="instances per scene")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per row (after one warm-up)")
    parser.add_argument("--paper", action=argparse.BooleanOptionalAction, default=True,
                        help="also the paper-size forward rows (96 x 96 x 16 grid, 5 views of 256²)")
    parser.add_argument("--paper-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave)")
    parser.add_argument("--memory-pass", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.memory_pass:  # the child: memory only, as JSON
        memory = PeakMemory(device)
        rows = run_rows(args, device, memory, timing=False)
        Path(args.memory_pass).write_text(json.dumps({"method": memory.method, "rows": rows}))
        return

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# Odd-One-Out cost per scene on {device} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"# {args.objects} objects per scene; time: median of {args.repeats} steps after a warm-up "
          f"(paper rows: {args.paper_repeats})")
    if device.type == "cuda":
        memory = PeakMemory(device)
        rows = run_rows(args, device, memory, timing=True)
        method = memory.method
    else:
        peaks, method = memory_pass_in_subprocess(sys.argv[1:])
        rows = run_rows(args, device, None, timing=True)
        for row in rows:
            row["peak_mib"] = peaks.get((row["preset"], row["step"], row["attention"]), float("nan"))
    print(f"# peak memory: {method}")
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
