"""Every registered 3D model on the same Synthetic3D split, in one run, in one table.

Each row is fitted and tested per category with anomalib's ``Engine`` (the models' own trainer
arguments; validation skipped during fitting), scored by the project's evaluator: object I-AUROC
and AP, point P-AUROC and AUPRO. Costs per row: ``fit s`` (mean over categories, wall clock),
``test s/sample`` (prediction plus the evaluator's metric updates, per test cloud; an untimed
warm-up run goes first) and ``peak MB`` (resident-set high-water mark of fit + test above the
process's level before the row: :class:`_common.PeakMemory`).

Rows (``--models``, default all):

* ``nearest-point`` — the reference: every test point scores its distance to the nearest training
  point after bounding-box normalisation, object score = max (BTF ``raw`` with no pooling, no
  coreset, no smoothing, no re-weighting);
* ``btf-raw``, ``btf-fpfh``, ``btf-rgb_fpfh`` (organized layout with RGB and local WideResNet
  weights only) — :mod:`anomalib_3d_plugins.btf`;
* ``patchcore3d`` (randomly initialised Point-MAE encoder), ``patchcore3d-fpfh_raw`` —
  :mod:`anomalib_3d_plugins.patchcore3d`;
* ``reg3dad``, ``reg3dad-dual`` — :mod:`anomalib_3d_plugins.reg3dad`;
* ``imrnet`` — the per-category CPU preset (``configs/models/imrnet_small.yaml``), trained for the
  epochs of ``configs/experiments/imrnet_synthetic.yaml``;
* ``pointad`` — skipped with its reason unless CLIP weights are available.

Run ``python benchmarks/leaderboard.py --categories bottle cup gear bracket knob`` (see ``--help``);
the table is printed as markdown.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from _common import PeakMemory

REPO = Path(__file__).resolve().parents[1]

METRICS = ("image_AUROC", "image_AP", "point_AUROC", "point_AUPRO")
HEADERS = ("I-AUROC", "AP", "P-AUROC", "AUPRO")


def _imrnet() -> Any:  # noqa: ANN401
    from anomalib_3d_plugins.imrnet import IMRNet

    # Rows are fitted per category: IMRNet's per-category CPU preset (the README main config of
    # earlier versions trained one model for four categories and selects templates per cloud).
    config = yaml.safe_load((REPO / "configs" / "models" / "imrnet_small.yaml").read_text())
    return IMRNet(**config["model"]["init_args"])


def _imrnet_epochs() -> int:
    config = yaml.safe_load((REPO / "configs" / "experiments" / "imrnet_synthetic.yaml").read_text())
    return int(config["trainer"]["max_epochs"])


def _btf(**kwargs: Any) -> Callable[[], Any]:  # noqa: ANN401
    def build() -> Any:  # noqa: ANN401
        from anomalib_3d_plugins.btf import BTF

        return BTF(**kwargs)

    return build


def _patchcore3d(**kwargs: Any) -> Callable[[], Any]:  # noqa: ANN401
    def build() -> Any:  # noqa: ANN401
        from anomalib_3d_plugins.patchcore3d import PatchCore3D

        return PatchCore3D(**kwargs)

    return build


def _reg3dad(**kwargs: Any) -> Callable[[], Any]:  # noqa: ANN401
    def build() -> Any:  # noqa: ANN401
        from anomalib_3d_plugins.reg3dad import Reg3DAD

        return Reg3DAD(**kwargs)

    return build


def _pointad() -> Any:  # noqa: ANN401
    from anomalib_3d_plugins.pointad import PointAD

    return PointAD()


#: row name → (builder, max_epochs or None for the model's own trainer arguments)
ROWS: dict[str, tuple[Callable[[], Any], int | None]] = {
    "nearest-point": (
        _btf(feature_mode="raw", use_grid=False, pool_k=1, coreset_ratio=1.0, num_neighbors=1, smoothing=False),
        None,
    ),
    "btf-raw": (_btf(feature_mode="raw"), None),
    "btf-fpfh": (_btf(feature_mode="fpfh"), None),
    "btf-rgb_fpfh": (_btf(feature_mode="rgb_fpfh"), None),
    "patchcore3d": (_patchcore3d(feature_sources=["point_mae"]), None),
    "patchcore3d-fpfh_raw": (_patchcore3d(feature_sources=["fpfh", "raw"], num_groups=256, group_size=16), None),
    "reg3dad": (_reg3dad(), None),
    "reg3dad-dual": (_reg3dad(dual_memory_bank=True), None),
    "imrnet": (_imrnet, -1),
    "pointad": (_pointad, None),
}


def _datamodule(root: Path, category: str, args: argparse.Namespace) -> Any:  # noqa: ANN401
    from anomalib_3d.data.datamodules.synthetic import Synthetic3D

    return Synthetic3D(
        root=root,
        category=category,
        layout=args.layout,
        num_train=args.num_train,
        num_test_good=args.num_test_good,
        num_test_per_defect=args.num_test_per_defect,
        num_points=args.num_points,
        train_batch_size=4,
        eval_batch_size=4,
        num_workers=0,
    )


def run_row(name: str, category: str, root: Path, work: Path, args: argparse.Namespace) -> dict[str, float]:
    """Fit and test one row on one category; metrics, ``fit_s``, ``test_s_per_sample``, ``peak_mb``."""
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    from anomalib_3d.data.adapters import DepthDataRepair

    build, epochs = ROWS[name]
    seed_everything(args.seed, workers=True)
    datamodule = _datamodule(root, category, args)
    datamodule.prepare_data()
    datamodule.setup()
    num_test = len(datamodule.test_data)
    with PeakMemory() as memory:
        model = build()
        model.visualizer = None  # type: ignore[assignment]
        engine_args: dict[str, Any] = {
            "accelerator": "cpu",
            "devices": 1,
            "logger": False,
            "default_root_dir": work / name / category,
            "limit_val_batches": 0,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "callbacks": [DepthDataRepair()],
        }
        if epochs == -1:
            engine_args["max_epochs"] = args.imrnet_epochs or _imrnet_epochs()
        engine = Engine(**engine_args)
        start = time.perf_counter()
        engine.fit(model, datamodule=datamodule)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        (results,) = engine.test(model, datamodule=datamodule, verbose=False)
        test_s = time.perf_counter() - start
    out = {metric: float(results.get(metric, float("nan"))) for metric in METRICS}
    out.update(fit_s=fit_s, test_s_per_sample=test_s / max(num_test, 1), peak_mb=memory.peak)
    return out


def _skip_reason(name: str, args: argparse.Namespace) -> str | None:
    if name == "btf-rgb_fpfh":
        if args.layout != "mvtec3d":
            return "needs RGB images: organized layout only (--layout mvtec3d)"
        try:
            from anomalib_3d.nn import RGBBackbone

            RGBBackbone()
        except Exception as exc:  # noqa: BLE001 - the message is the reason shown
            return f"{type(exc).__name__}: {str(exc)[:160]}"
    if name == "pointad":
        return "needs CLIP weights (open_clip ViT-L/14@336) and an auxiliary fitting set; not run here"
    return None


def _fmt(value: float, digits: int = 3) -> str:
    return "—" if not np.isfinite(value) else f"{value:.{digits}f}"


def print_table(results: dict[str, dict[str, dict[str, float]]], categories: Sequence[str], skipped: dict[str, str]) -> None:
    """Markdown: mean metrics + costs per row, then per-category I-AUROC / P-AUROC."""
    print("\n| model | " + " | ".join(HEADERS) + " | fit s | test s/sample | peak MB |")
    print("|---|" + "---:|" * (len(HEADERS) + 3))
    for name, per_category in results.items():
        means = {k: float(np.nanmean([per_category[c][k] for c in categories])) for k in (*METRICS, "fit_s", "test_s_per_sample", "peak_mb")}
        cells = [_fmt(means[m]) for m in METRICS]
        cells += [_fmt(means["fit_s"], 1), _fmt(means["test_s_per_sample"], 2), _fmt(means["peak_mb"], 0)]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nPer category, I-AUROC / P-AUROC:\n")
    print("| model | " + " | ".join(categories) + " |")
    print("|---|" + "---:|" * len(categories))
    for name, per_category in results.items():
        cells = [f"{_fmt(per_category[c]['image_AUROC'], 2)} / {_fmt(per_category[c]['point_AUROC'], 2)}" for c in categories]
        print(f"| {name} | " + " | ".join(cells) + " |")
    for name, reason in skipped.items():
        print(f"\nskipped {name}: {reason}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--categories", nargs="+", default=["bottle", "cup", "gear", "bracket", "knob"])
    parser.add_argument("--layout", choices=("real3d", "mvtec3d"), default="real3d")
    parser.add_argument("--models", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--root", type=Path, default=None, help="dataset cache (default: a temporary folder)")
    parser.add_argument("--num-train", type=int, default=8)
    parser.add_argument("--num-test-good", type=int, default=6)
    parser.add_argument("--num-test-per-defect", type=int, default=2)
    parser.add_argument("--num-points", type=int, default=4096)
    parser.add_argument("--imrnet-epochs", type=int, default=None, help="default: the README main job's")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    skipped = {name: reason for name in args.models if (reason := _skip_reason(name, args))}
    rows = [name for name in args.models if name not in skipped]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp) / "data"
        work = Path(tmp) / "work"
        results: dict[str, dict[str, dict[str, float]]] = {name: {} for name in rows}
        # Untimed warm-up: first-call costs (imports, metric set-up) would land on the first row.
        run_row("nearest-point", args.categories[0], root, work, args)
        for category in args.categories:
            for name in rows:
                results[name][category] = run_row(name, category, root, work, args)
                r = results[name][category]
                print(
                    f"{category:8s} {name:22s} I {r['image_AUROC']:.3f} P {r['point_AUROC']:.3f} "
                    f"fit {r['fit_s']:.1f}s test {r['test_s_per_sample']:.2f}s/sample",
                    flush=True,
                )
    print(
        f"\nSynthetic3D layout={args.layout}, categories {', '.join(args.categories)}; per category "
        f"{args.num_train} training clouds, {args.num_test_good} good + {args.num_test_per_defect} x 6 defect "
        f"test clouds, {args.num_points} points; seed {args.seed}; CPU threads {torch.get_num_threads()}."
    )
    print_table(results, args.categories, skipped)


if __name__ == "__main__":
    main()
