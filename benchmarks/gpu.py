"""The GPU path in one table: point ops, greedy coreset, renderer, PointAD at ViT-L/14@336 size, and
BTF / IMRNet fitted and tested at 100k points (run by ``benchmarks/gpu.sh``, which sets up first).

Stages (each one row or more; a stage whose dependencies are missing, or that fails, gets a row
saying why and the others still run):

* ``ops`` — FPS (1024 of 100k points) and kNN (16 neighbours of 100k queries in 100k points): the
  device's ``auto`` backend and, when installed, torch-cluster on the device, against the CPU
  ``auto`` path (fpsample / pykdtree when installed). Parity: identical indices.
* ``coreset`` — greedy coreset, 10 % of 65,536 x 33 rows, device against CPU. Parity: the same rows
  in the same order (the selection is exact on both; rows whose distances tie within rounding may
  still come in another order).
* ``render`` — 200k points, PointAD's 9 views at 336 px, device against CPU. Parity: share of
  pixels owned by the same point.
* ``pointad`` — seconds per sample (render + encode + score, batch 1) and peak memory with a
  randomly initialised ViT-L/14@336 (``benchmarks/pointad.py --single``); the paper reports 0.40 s
  and 4.3 GB on an RTX 3090.
* ``btf``, ``imrnet`` — fit and test through the ``Engine`` at 100k points per cloud
  (``benchmarks/scale.py --child``: 2 training, 4 test clouds; IMRNet's CPU preset, 2 epochs).

Device times are the median of ``--repeats`` calls after a warm-up call; the CPU reference is
timed once. ``--dry-run`` runs every stage at a tiny size (a CPU check of the script's logic). Every row is
also written to ``--json`` as one JSON line.

    python benchmarks/gpu.py --device cuda --json gpu.jsonl
    python benchmarks/gpu.py --device cpu --dry-run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from _common import synchronize, time_call

HERE = Path(__file__).resolve().parent
STAGES = ("ops", "coreset", "render", "pointad", "btf", "imrnet")
#: Full sizes, and the tiny ones of ``--dry-run``.
SIZES = {
    "points": (100_000, 2_000),
    "fps_samples": (1024, 64),
    "coreset_rows": (65_536, 2_000),
    "render_points": (200_000, 2_000),
    "render_px": (336, 64),
    "model_points": (100_000, 4_096),
}


def _size(name: str, dry: bool) -> int:
    return SIZES[name][1 if dry else 0]


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _median_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    return statistics.median(t.wall for t in time_call(fn, repeats, device))


def _timed_once(fn: Callable[[], Any]) -> tuple[float, Any]:  # noqa: ANN401
    """``(wall seconds, result)`` of one CPU call: the reference result and its time (the CPU
    side is timed once, so a slow CPU fallback cannot eat the GPU run's time cap)."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _row(stage: str, workload: str, **values: Any) -> dict[str, Any]:  # noqa: ANN401
    return {"stage": stage, "workload": workload, **values}


# ------------------------------------------------------------------------------------------------
# stages


def stage_ops(device: torch.device, dry: bool, repeats: int) -> list[dict[str, Any]]:
    from anomalib_3d.ops import available_backends, farthest_point_sample, knn

    generator = torch.Generator().manual_seed(0)
    num = _size("points", dry)
    points = torch.randn(num, 3, generator=generator)
    points = points / points.norm(dim=1, keepdim=True)  # a sphere shell: a surface, like a scan
    samples = _size("fps_samples", dry)
    cuda_backends = ["auto"] + (["torch_cluster"] if "torch_cluster" in available_backends() else [])
    rows = []
    workloads = {
        "FPS": lambda p, backend: farthest_point_sample(p, samples, backend=backend),
        "kNN k=16": lambda p, backend: knn(p, p, 16, backend=backend)[0],
    }
    for name, op in workloads.items():
        cpu_s, reference = _timed_once(lambda op=op: op(points, "auto"))
        on_device = points.to(device)
        for backend in cuda_backends:
            result = op(on_device, backend)
            seconds = _median_seconds(lambda op=op, backend=backend: op(on_device, backend), device, repeats)
            same = bool(torch.equal(result.cpu(), reference))
            rows.append(_row("ops", f"{name}, {num:,} points ({backend} on {device.type})", device_s=seconds,
                             cpu_s=cpu_s, parity="identical" if same else "DIFFERENT indices"))
    return rows


def stage_coreset(device: torch.device, dry: bool, repeats: int) -> list[dict[str, Any]]:
    from anomalib_3d.ops import greedy_coreset

    rows_count = _size("coreset_rows", dry)
    generator = torch.Generator().manual_seed(1)
    # FPFH-like rows: non-negative histograms with clusters, so distances have realistic near-ties.
    centres = torch.rand(64, 33, generator=generator) * 100
    features = centres[torch.randint(64, (rows_count,), generator=generator)] + torch.rand(rows_count, 33, generator=generator) * 5
    count = rows_count // 10
    cpu_s, reference = _timed_once(lambda: greedy_coreset(features, count))
    on_device = features.to(device)
    selected = greedy_coreset(on_device, count)
    seconds = _median_seconds(lambda: greedy_coreset(on_device, count), device, max(1, repeats // 2))
    agree = int((selected.cpu() == reference).long().cumprod(0).sum())
    return [_row("coreset", f"greedy 10 % of {rows_count:,} x 33 on {device.type}", device_s=seconds, cpu_s=cpu_s,
                 parity=f"same order for {agree}/{count} rows")]


def stage_render(device: torch.device, dry: bool, repeats: int) -> list[dict[str, Any]]:
    from anomalib_3d.render import pointad_rig, render_points

    num = _size("render_points", dry)
    generator = torch.Generator().manual_seed(2)
    points = torch.randn(num, 3, generator=generator)
    points = points / points.norm(dim=1, keepdim=True) * (1 + 0.05 * torch.rand(num, 1, generator=generator))
    rig = pointad_rig(image_size=_size("render_px", dry))
    cpu_s, reference = _timed_once(lambda: render_points(points, rig=rig))
    on_device = points.to(device)
    output = render_points(on_device, rig=rig)
    seconds = _median_seconds(lambda: render_points(on_device, rig=rig), device, repeats)
    same = float((output.pixel_to_point.cpu() == reference.pixel_to_point).float().mean())
    return [_row("render", f"{num:,} points, 9 views at {rig.image_size[0]} px on {device.type}", device_s=seconds,
                 cpu_s=cpu_s, parity=f"{100 * same:.2f} % of pixels owned by the same point")]


def _child_json(command: list[str], timeout: float) -> dict[str, Any]:
    """The last JSON line a benchmark child prints (raises with its error output otherwise)."""
    out = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or [f"exit status {out.returncode}"]
        raise RuntimeError(tail[0][:300])
    return json.loads(lines[-1])


def stage_pointad(device: torch.device, dry: bool, timeout: float) -> list[dict[str, Any]]:
    backbone = "pointad-tiny-vit" if dry else "ViT-L-14-336"
    command = [sys.executable, str(HERE / "pointad.py"), "--single", backbone, "--device", device.type,
               "--repeats", "1" if dry else "3", "--threads", str(torch.get_num_threads())]
    command += ["--grid", "64"] if dry else []
    result = _child_json(command, timeout)
    return [_row("pointad", f"{backbone} (random weights), {result['points']:,}-point scan, {result['views']} views",
                 device_s=result["total"], peak_mb=result["peak_mb"],
                 parity=f"render {result['render']:.3f} s, encode {result['encode']:.3f} s, score {result['score']:.3f} s; "
                        "paper 0.40 s, 4.3 GB")]


def stage_model(name: str, device: torch.device, dry: bool, root: Path, timeout: float) -> list[dict[str, Any]]:
    size = _size("model_points", dry)
    command = [sys.executable, str(HERE / "scale.py"), "--child", name, str(size), "--root", str(root),
               "--device", device.type, "--imrnet-epochs", "1" if dry else "2"]
    result = _child_json(command, timeout)
    return [_row(name, f"fit 2 + test {result['num_test']} clouds of {result['points']:,} points on {device.type}",
                 device_s=result["test_wall_s_per_cloud"], fit_s=result["fit_wall_s"], peak_mb=result["peak_rss_mb"],
                 parity=f"P-AUROC {result['p_auroc']:.3f}")]


#: stage -> Python modules it needs beyond torch.
NEEDS = {
    "ops": (), "coreset": (), "render": (),
    "pointad": ("anomalib", "open_clip"),
    "btf": ("anomalib", "open3d"),
    "imrnet": ("anomalib", "open3d"),
}


def run_stage(stage: str, device: torch.device, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One stage's rows, or one row saying why it did not run."""
    missing = _missing(*NEEDS[stage])
    if missing:
        return [_row(stage, "skipped", note=f"not installed: {', '.join(missing)}")]
    start = time.perf_counter()
    try:
        if stage == "ops":
            rows = stage_ops(device, args.dry_run, args.repeats)
        elif stage == "coreset":
            rows = stage_coreset(device, args.dry_run, args.repeats)
        elif stage == "render":
            rows = stage_render(device, args.dry_run, args.repeats)
        elif stage == "pointad":
            rows = stage_pointad(device, args.dry_run, args.stage_timeout)
        else:
            rows = stage_model(stage, device, args.dry_run, args.root, args.stage_timeout)
    except Exception as exc:  # noqa: BLE001 - a failed stage is a row of the table, the others still run
        return [_row(stage, "failed", note=f"{type(exc).__name__}: {str(exc)[:300]}")]
    finally:
        synchronize(device)
    for row in rows:
        row["stage_s"] = time.perf_counter() - start
    return rows


def _fmt(value: Any, digits: int = 3) -> str:  # noqa: ANN401
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "—"


def print_table(rows: list[dict[str, Any]], device_name: str) -> None:
    print(f"\nGPU path on {device_name} (torch {torch.__version__}); CPU columns on this machine's CPU, "
          f"{torch.get_num_threads()} threads\n")
    print("| stage | workload | device s | CPU s | CPU / device | fit s | peak MB | parity / note |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        ratio = r["cpu_s"] / r["device_s"] if isinstance(r.get("cpu_s"), float) and r.get("device_s") else None
        print(f"| {r['stage']} | {r['workload']} | {_fmt(r.get('device_s'))} | {_fmt(r.get('cpu_s'))} "
              f"| {_fmt(ratio, 1)} | {_fmt(r.get('fit_s'), 1)} | {_fmt(r.get('peak_mb'), 0)} "
              f"| {r.get('parity', r.get('note', ''))} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--dry-run", action="store_true", help="every stage at a tiny size")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stage-timeout", type=float, default=240.0, help="seconds for a child stage")
    parser.add_argument("--root", type=Path, default=Path("./datasets/gpu_check"), help="data cache of the model stages")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))))
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU (use --device cpu --dry-run for a CPU check)")
    device = torch.device(args.device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)" if args.dry_run else "CPU"
    rows = []
    for stage in args.stages:
        stage_rows = run_stage(stage, device, args)
        rows += stage_rows
        for row in stage_rows:
            print(json.dumps({**row, "device": device_name}), flush=True)
            if args.json:
                with args.json.open("a") as handle:
                    handle.write(json.dumps({**row, "device": device_name}) + "\n")
    print_table(rows, device_name)


if __name__ == "__main__":
    main()
