"""Benchmark: how the cost of every point model grows with the size of a cloud.

Two modes:

* **scale curve** (default): for each model (``--models``) and each size (``--sizes`` points per
  cloud; the organized model takes ``--grids`` square depth grids instead), a Synthetic3D category
  (``gear``: 2 training clouds, 2 good + 2 defective test clouds) is fitted and tested through
  anomalib's ``Engine`` with the model's default configuration. Printed per run: fit wall and CPU
  seconds, test seconds per cloud (wall and CPU), the whole process's peak resident memory and the
  point AUROC (a sanity check that the larger clouds are still scored sensibly); then, per model, the
  slope of log(test CPU s per cloud) against log(points) (least squares over the sizes, and between
  the two largest). ``--plot`` draws the log-log picture, ``--json`` keeps the rows.
* **Real3D-AD-sized category** (``--real3d``): 4 training clouds of 400,000 points and 100 test clouds
  of 100,000 points (10 good, 15 of each of the six defect types) written by Synthetic3D into a
  Real3D-AD folder; each model is fitted (``engine.fit``, with the validation pass over the test
  split that ``anomalib train`` runs) and tested (``engine.test``) on it through the ``Real3DAD``
  datamodule, as ``anomalib train --model BTF --data Real3DAD --data.root <root>/real3d_sized
  --data.category gear`` would.

Rows and what "default" means for each:

* ``btf``, ``patchcore3d``, ``reg3dad`` — the class defaults (= ``configs/models/<name>.yaml``);
* ``imrnet`` — the per-category CPU preset (``configs/models/imrnet_small.yaml``) for
  ``--imrnet-epochs`` epochs (its paper-size default is a GPU model);
* ``threedzal`` — the CPU preset (``ThreeDzAL.small``) on organized scans of ``--grids`` sides,
  ``--threedzal-epochs`` epochs, task-irrelevant data from two other categories (``ZeroShot3D``);
* ``pointad`` — render + encode + score of one cloud by the PointAD torch model with the tiny random
  backbone (``pointad-tiny-vit``), default rig and render settings; zero-shot fitting runs on an
  auxiliary set of its own size and is not timed here.

Every (model, size) runs in its own process, so the peak RSS of a row is its own (imports included:
about 0.6 GB of it is torch, Lightning and anomalib). Visualizers are off. ``OMP_NUM_THREADS`` sets the
threads (1 for the tables in the README).

    OMP_NUM_THREADS=1 python benchmarks/scale.py --plot docs/images/scale.png --json scale.json
    OMP_NUM_THREADS=1 python benchmarks/scale.py --real3d --models btf patchcore3d reg3dad imrnet
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from _common import cpu_seconds, synchronize

REPO = Path(__file__).resolve().parents[1]
POINT_MODELS = ("btf", "patchcore3d", "reg3dad", "imrnet")
MODELS = (*POINT_MODELS, "threedzal", "pointad")
CATEGORY = "gear"
#: Real3D-AD-sized category: 4 prototypes of 400k points, 100 test scans of 100k points.
REAL3D_TRAIN = (4, 400_000)
REAL3D_TEST = (10, 15, 100_000)  # good, per defect type (x 6), points


def _peak_rss_mb() -> float:
    """This process's peak resident set since it started, MiB (Linux: ``ru_maxrss`` in kB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# ------------------------------------------------------------------------------------------------
# models


def build_model(name: str, args: argparse.Namespace) -> Any:  # noqa: ANN401
    """The model of row ``name`` in its default configuration, visualizer off."""
    if name == "btf":
        from anomalib_3d_plugins.btf import BTF

        return BTF(visualizer=False)
    if name == "patchcore3d":
        from anomalib_3d_plugins.patchcore3d import PatchCore3D

        return PatchCore3D(visualizer=False)
    if name == "reg3dad":
        from anomalib_3d_plugins.reg3dad import Reg3DAD

        return Reg3DAD(visualizer=False)
    if name == "imrnet":
        from anomalib_3d_plugins.imrnet import IMRNet

        config = yaml.safe_load((REPO / "configs" / "models" / "imrnet_small.yaml").read_text())
        return IMRNet(**config["model"]["init_args"], visualizer=False)
    if name == "threedzal":
        from anomalib_3d_plugins.threedzal import ThreeDzAL

        return ThreeDzAL.small(visualizer=False, max_epochs=args.threedzal_epochs)
    msg = f"no Engine model for row {name!r}"
    raise ValueError(msg)


def _engine(name: str, work: Path, args: argparse.Namespace, validate: bool) -> Any:  # noqa: ANN401
    from anomalib.engine import Engine

    options: dict[str, Any] = {
        "accelerator": "gpu" if args.device == "cuda" else "cpu",
        "devices": 1,
        "logger": False,
        "default_root_dir": work,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    if not validate:
        options["limit_val_batches"] = 0
    if name == "imrnet":
        options["max_epochs"] = args.imrnet_epochs
    return Engine(**options)


# ------------------------------------------------------------------------------------------------
# data


def synthetic_points(root: Path, num_points: int, args: argparse.Namespace) -> Any:  # noqa: ANN401
    """Unorganized Synthetic3D ``gear``: ``--num-train`` training, 2 good + 2 defective test clouds."""
    from anomalib_3d.data.datamodules.synthetic import Synthetic3D

    return Synthetic3D(
        root=root, category=CATEGORY, num_points=num_points, num_train=args.num_train, num_test_good=2,
        num_test_per_defect=1, defect_types=("bulge", "concavity"), train_batch_size=2, eval_batch_size=1,
    )


def synthetic_grids(root: Path, side: int, args: argparse.Namespace) -> Any:  # noqa: ANN401
    """Organized ``side x side`` scans for 3DzAL: fit on ``gear``, task-irrelevant ``cup`` + ``knob``,
    test on ``bottle`` (2 good + 2 defective)."""
    from anomalib_3d.data.datamodules import ZeroShot3D

    def source(categories: list[str], split: str, train: int) -> dict:
        options = {"layout": "mvtec3d", "image_size": [side, side], "num_train": train, "num_test_good": 2,
                   "num_test_per_defect": 1, "defect_types": ["bulge", "concavity"]}
        return {"dataset": "synthetic3d", "root": str(root), "categories": categories, "split": split, "options": options}

    return ZeroShot3D(
        fit_sources=[source([CATEGORY], "train", args.num_train)],
        task_irrelevant_sources=[source(["cup", "knob"], "train", args.num_train)],
        test_sources=[source(["bottle"], "test", args.num_train)],
        grid_size=None, train_batch_size=2, eval_batch_size=1,
    )


def write_real3d_sized(root: Path, seed: int = 0) -> Path:
    """A Real3D-AD folder ``root/real3d_sized/gear/{train,test,gt}`` written by Synthetic3D (cached).

    Training prototypes and test scans come from two generator runs of their own point counts; the
    test scans keep the generator's file names and GT files (the Real3D-AD layout).
    """
    from anomalib_3d.data.synthetic import generate_synthetic_dataset

    target = root / "real3d_sized" / CATEGORY
    if (target / "test").is_dir() and len(list((target / "test").iterdir())) == sum((REAL3D_TEST[0], 6 * REAL3D_TEST[1])):
        return target.parent
    num_train, train_points = REAL3D_TRAIN
    good, per_defect, test_points = REAL3D_TEST
    train = generate_synthetic_dataset(root / "real3d_train", categories=[CATEGORY], num_train=num_train, num_test_good=0,
                                       num_test_per_defect=0, num_points=train_points, seed=seed, progress=False)
    test = generate_synthetic_dataset(root / "real3d_test", categories=[CATEGORY], num_train=1, num_test_good=good,
                                      num_test_per_defect=per_defect, num_points=test_points, seed=seed + 1, progress=False)
    target.mkdir(parents=True, exist_ok=True)
    for split, source in (("train", train), ("test", test), ("gt", test)):
        link = target / split
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to((source / CATEGORY / split).resolve(), target_is_directory=True)
    return target.parent


def real3d_datamodule(root: Path) -> Any:  # noqa: ANN401
    from anomalib_3d.data.datamodules.real3d_ad import Real3DAD

    return Real3DAD(root=root, category=CATEGORY, train_batch_size=1, eval_batch_size=1)


# ------------------------------------------------------------------------------------------------
# one run (child process)


def run_engine(name: str, datamodule: Any, args: argparse.Namespace, *, validate: bool) -> dict[str, float]:  # noqa: ANN401
    """Fit and test one model; wall / CPU seconds, seconds per test cloud, metrics, peak RSS."""
    datamodule.prepare_data()
    datamodule.setup()
    num_test = len(datamodule.test_data)
    num_points = int(np.mean([len(np.asarray(datamodule.test_data[i].points)) for i in range(min(num_test, 2))]))
    torch.manual_seed(args.seed)
    model = build_model(name, args)
    with tempfile.TemporaryDirectory() as work:
        engine = _engine(name, Path(work), args, validate)
        start, start_cpu = time.perf_counter(), cpu_seconds()
        engine.fit(model, datamodule=datamodule)
        fit_wall, fit_cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
        start, start_cpu = time.perf_counter(), cpu_seconds()
        (metrics,) = engine.test(model, datamodule=datamodule, verbose=False)
        test_wall, test_cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
    return {
        "points": num_points, "num_test": num_test, "fit_wall_s": fit_wall, "fit_cpu_s": fit_cpu,
        "test_wall_s_per_cloud": test_wall / num_test, "test_cpu_s_per_cloud": test_cpu / num_test,
        "p_auroc": float(metrics.get("point_AUROC", float("nan"))),
        "i_auroc": float(metrics.get("image_AUROC", float("nan"))), "peak_rss_mb": _peak_rss_mb(),
    }


def run_pointad(num_points: int, args: argparse.Namespace) -> dict[str, float]:
    """Render + encode + score of single clouds by PointAD's torch model (tiny random backbone)."""
    from anomalib_3d.data.synthetic import make_sample
    from anomalib_3d_plugins.pointad import PointADModel
    from anomalib_3d_plugins.pointad.clip_backbone import FrozenCLIP
    from anomalib_3d_plugins.pointad.prompts import PromptLearner

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    backbone = FrozenCLIP("pointad-tiny-vit", None)
    model = PointADModel(backbone, PromptLearner(backbone)).to(device).eval()
    clouds = [torch.from_numpy(make_sample(CATEGORY, "bulge", seed=s, num_points=num_points).points) for s in range(3)]
    times = []
    with torch.no_grad():
        for index, points in enumerate(clouds):
            points = points.to(device)
            batch = torch.zeros(points.shape[0], dtype=torch.long, device=device)
            synchronize(device)
            start, start_cpu = time.perf_counter(), cpu_seconds()
            model.predict(points, batch, 1)
            synchronize(device)
            if index:  # the first cloud warms up (allocator, text prompts)
                times.append((time.perf_counter() - start, cpu_seconds() - start_cpu))
    return {
        "points": num_points, "num_test": len(times), "fit_wall_s": float("nan"), "fit_cpu_s": float("nan"),
        "test_wall_s_per_cloud": float(np.mean([t[0] for t in times])),
        "test_cpu_s_per_cloud": float(np.mean([t[1] for t in times])),
        "p_auroc": float("nan"), "i_auroc": float("nan"), "peak_rss_mb": _peak_rss_mb(),
    }


def child(args: argparse.Namespace) -> dict[str, float]:
    """The run a child process was started for (``--child NAME SIZE``)."""
    name, size = args.child[0], int(args.child[1])
    root = Path(args.root)
    if args.real3d:
        return run_engine(name, real3d_datamodule(write_real3d_sized(root)), args, validate=True)
    if name == "pointad":
        return run_pointad(size, args)
    if name == "threedzal":
        return run_engine(name, synthetic_grids(root / "grids", size, args), args, validate=False)
    return run_engine(name, synthetic_points(root / "points", size, args), args, validate=False)


def spawn(name: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run one (model, size) in a fresh process under ``--timeout``; its row (or why it has none)."""
    command = [sys.executable, __file__, "--child", name, str(size), "--root", str(args.root), "--seed", str(args.seed),
               "--num-train", str(args.num_train), "--imrnet-epochs", str(args.imrnet_epochs),
               "--threedzal-epochs", str(args.threedzal_epochs), "--device", args.device]
    command += ["--real3d"] if args.real3d else []
    start = time.perf_counter()
    try:
        out = subprocess.run(command, capture_output=True, text=True, check=False, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "size": size, "error": f"over the {args.timeout:.0f} s time limit"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or [f"exit status {out.returncode}"]
        return {"model": name, "size": size, "error": tail[0][:200], "wall_s": time.perf_counter() - start}
    return {"model": name, "size": size, **json.loads(lines[-1]), "wall_s": time.perf_counter() - start}


# ------------------------------------------------------------------------------------------------
# report


def slopes(rows: list[dict[str, Any]], key: str = "test_cpu_s_per_cloud") -> dict[str, tuple[float, float]]:
    """Per model: (least-squares slope of log cost on log points, slope between the two largest sizes)."""
    out = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        good = sorted((r["points"], r[key]) for r in rows if r["model"] == model and "error" not in r and r[key] > 0)
        if len(good) < 2:
            continue
        x, y = np.log([g[0] for g in good]), np.log([g[1] for g in good])
        fitted = float(np.polyfit(x, y, 1)[0])
        last = float((y[-1] - y[-2]) / (x[-1] - x[-2]))
        out[model] = (fitted, last)
    return out


def _cell(value: Any, digits: int) -> str:  # noqa: ANN401
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n| model | points / cloud | fit s (CPU s) | test s / cloud (CPU s) | peak RSS MB | P-AUROC |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['size']:,} | — | — | — | {r['error']} |")
            continue
        size = f"{r['size']}² grid: {r['points']:,}" if r["model"] == "threedzal" else f"{r['points']:,}"
        print(f"| {r['model']} | {size} | {_cell(r['fit_wall_s'], 1)} ({_cell(r['fit_cpu_s'], 1)}) "
              f"| {_cell(r['test_wall_s_per_cloud'], 2)} ({_cell(r['test_cpu_s_per_cloud'], 2)}) "
              f"| {r['peak_rss_mb']:.0f} | {_cell(r['p_auroc'], 3)} |")
    fitted = slopes(rows)
    if fitted:
        print("\nslope of log(test CPU s per cloud) on log(points): least squares / between the two largest sizes")
        for model, (all_sizes, last) in fitted.items():
            print(f"  {model:12s} {all_sizes:5.2f} / {last:5.2f}")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Log-log test CPU seconds per cloud (solid) and fit CPU seconds (dashed) against points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    fitted = slopes(rows)
    for index, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
        good = sorted((r["points"], r["test_cpu_s_per_cloud"], r["fit_cpu_s"]) for r in rows
                      if r["model"] == model and "error" not in r)
        if not good:
            continue
        colour = f"C{index}"
        label = f"{model} (slope {fitted[model][0]:.2f})" if model in fitted else model
        ax.plot([g[0] for g in good], [g[1] for g in good], "o-", color=colour, label=label)
        fit = [(g[0], g[2]) for g in good if math.isfinite(g[2])]
        if fit:
            ax.plot([f[0] for f in fit], [f[1] for f in fit], "s--", color=colour, alpha=0.5)
    sizes = sorted({r["points"] for r in rows if "error" not in r})
    if sizes:
        ax.plot(sizes, [0.05 * s / sizes[0] for s in sizes], ":", color="grey", label="slope 1 (linear)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("points per cloud")
    ax.set_ylabel("CPU seconds (1 thread): test per cloud —, fit - -")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"\nplot: {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[16384, 65536, 262144, 1048576])
    parser.add_argument("--grids", nargs="+", type=int, default=[128, 256, 512, 800], help="organized grid sides (3DzAL)")
    parser.add_argument("--real3d", action="store_true", help="the Real3D-AD-sized category instead of the curve")
    parser.add_argument("--root", type=Path, default=Path("./datasets/scale"), help="data cache")
    parser.add_argument("--num-train", type=int, default=2)
    parser.add_argument("--imrnet-epochs", type=int, default=2)
    parser.add_argument("--threedzal-epochs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per (model, size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the models run")
    parser.add_argument("--json", type=Path, default=None, help="append the rows here (one JSON line each)")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    rows = []
    for name in args.models:
        if args.real3d:
            if name in ("threedzal", "pointad"):
                print(f"{name}: not a Real3D-AD model (organized scans / zero-shot): see the scale curve")
                continue
            sizes = [REAL3D_TEST[2]]
        else:
            sizes = args.grids if name == "threedzal" else args.sizes
        for size in sizes:
            row = spawn(name, size, args)
            rows.append(row)
            if args.json:
                with args.json.open("a") as handle:
                    handle.write(json.dumps({**row, "real3d": args.real3d}) + "\n")
            print(json.dumps(row), flush=True)
    setting = ("Real3D-AD-sized: 4 x 400,000-point training clouds, 100 x 100,000-point test clouds" if args.real3d
               else f"Synthetic3D {CATEGORY}, {args.num_train} training + 4 test clouds per size")
    print(f"\n{setting}; CPU threads {torch.get_num_threads()}; fit includes validation: {args.real3d}")
    print_table(rows)
    if args.plot and not args.real3d:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
