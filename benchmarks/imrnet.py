"""IMRNet on Synthetic3D: detection against a simple baseline, test-time ablations, CPU timings.

Tables:

1. Per-category object I-AUROC and point P-AUROC of IMRNet (the README main configuration,
   ``configs/experiments/imrnet_synthetic.yaml``: CPU preset, trained here with anomalib's Engine)
   and of a nearest-training-point baseline on the *same* split: every test point scores its
   distance to the nearest point of the category's training clouds after centring each cloud;
   the object score is the maximum. ``Δ`` = IMRNet - baseline.
2. Test-time ablations on the same trained weights (each row flips one switch; the DFC statistics
   are recomputed): no iterative reconstruction, one iteration, point score only, feature score
   only, the paper-literal feature comparison (``feature_reference=reconstruction``) with and
   without template regularisation, FPS / random / voxel centres.
3. Seconds per sample on this machine's CPU for the small and the default (paper-size) preset:
   patching a training cloud (once per cloud, cached), one training step (forward + backward, per
   cloud of a batch of 4) and inference (3 iterations + DFC), on 4096-point Synthetic3D clouds.
   ``x small`` is the ratio to the small preset.

Run ``python benchmarks/imrnet.py`` (``--epochs N`` to change training length, ``--root`` for the
dataset cache, ``--skip-default`` to leave the paper-size timing out).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anomalib_3d.ops import knn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = REPO / "configs" / "experiments" / "imrnet_synthetic.yaml"


# --------------------------------------------------------------------------------------------
# data, baseline, metrics (also used by tests/e2e/test_imrnet_e2e.py)
# --------------------------------------------------------------------------------------------
def experiment_config(path: Path = EXPERIMENT) -> dict[str, Any]:
    """The README main job's YAML as a dict."""
    return yaml.safe_load(path.read_text())


def collect_items(dataset: Sequence) -> list[dict[str, Any]]:  # noqa: ANN401
    """``points``, ``gt_mask``, ``gt_label``, ``category``, ``path`` of every item of a dataset."""
    items = []
    for i in range(len(dataset)):
        item = dataset[i]
        n = item.points.shape[0]
        mask = item.gt_mask if item.gt_mask is not None else torch.zeros(n, dtype=torch.bool)
        items.append({
            "points": item.points.float(),
            "gt_mask": mask.bool(),
            "gt_label": bool(item.gt_label),
            "category": item.category,
            "path": item.point_path,
        })
    return items


def nearest_training_point_baseline(
    train_items: list[dict[str, Any]], test_items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Per-point distance to the nearest point of the category's (centred) training clouds.

    Returns:
        One record per test item: ``category``, ``gt_label``, ``gt_mask`` (numpy), ``anomaly_map``
        (numpy, per point) and ``pred_score`` (the maximum).
    """
    banks: dict[str, torch.Tensor] = {}
    for category in {t["category"] for t in test_items}:
        clouds = [t["points"] - t["points"].mean(0) for t in train_items if t["category"] == category]
        banks[category] = torch.cat(clouds)
    records = []
    for item in test_items:
        centred = item["points"] - item["points"].mean(0)
        _, sq = knn(banks[item["category"]], centred, 1)
        scores = sq[:, 0].sqrt()
        records.append(_record(item, scores, float(scores.max())))
    return records


def _record(item: dict[str, Any], anomaly_map: torch.Tensor, pred_score: float) -> dict[str, Any]:
    return {
        "category": item["category"],
        "gt_label": item["gt_label"],
        "gt_mask": item["gt_mask"].numpy(),
        "anomaly_map": anomaly_map.detach().cpu().numpy(),
        "pred_score": pred_score,
    }


@torch.no_grad()
def predict_records(model: torch.nn.Module, test_items: list[dict[str, Any]], batch_size: int = 4) -> list[dict]:
    """Raw IMRNet predictions (``IMRNetModel``) of every test item as records."""
    model.eval()
    records = []
    for lo in range(0, len(test_items), batch_size):
        chunk = test_items[lo : lo + batch_size]
        points = torch.cat([c["points"] for c in chunk])
        batch = torch.cat([torch.full((c["points"].shape[0],), i, dtype=torch.long) for i, c in enumerate(chunk)])
        out = model(points, batch)
        for i, item in enumerate(chunk):
            records.append(_record(item, out.anomaly_map[batch == i], float(out.pred_score[i])))
    return records


def per_category_metrics(records: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """``category -> (I-AUROC, P-AUROC)`` plus ``"mean"`` (of categories) and ``"pooled"``."""
    by_category: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_category[r["category"]].append(r)

    def metrics(rows: list[dict]) -> tuple[float, float]:
        image = roc_auc_score([r["gt_label"] for r in rows], [r["pred_score"] for r in rows])
        point = roc_auc_score(
            np.concatenate([r["gt_mask"] for r in rows]), np.concatenate([r["anomaly_map"] for r in rows])
        )
        return float(image), float(point)

    out = {c: metrics(rows) for c, rows in sorted(by_category.items())}
    values = np.array(list(out.values()))
    out["mean"] = (float(values[:, 0].mean()), float(values[:, 1].mean()))
    out["pooled"] = metrics(records)
    return out


# --------------------------------------------------------------------------------------------
# training with the README configuration
# --------------------------------------------------------------------------------------------
def build_from_config(
    config: dict[str, Any], root: str | None = None, **model_overrides: Any  # noqa: ANN401
) -> tuple[Any, Any]:  # noqa: ANN401
    """``(IMRNet, Synthetic3D)`` from the experiment config (anomalib's evaluator / visualizer off)."""
    from anomalib_3d.data.datamodules.synthetic import Synthetic3D
    from anomalib_3d_plugins.imrnet import IMRNet

    data_args = dict(config["data"]["init_args"])
    if root is not None:
        data_args["root"] = root
    model_args = {**config["model"]["init_args"], **model_overrides}
    model = IMRNet(**model_args, evaluator=False, visualizer=False)
    return model, Synthetic3D(**data_args)


def train(model: Any, datamodule: Any, max_epochs: int, work_dir: Path, seed: int = 42) -> float:  # noqa: ANN401
    """Fit with anomalib's Engine on CPU; returns the wall time of ``fit`` in seconds."""
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    seed_everything(seed, workers=True)
    engine = Engine(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        check_val_every_n_epoch=max_epochs,
        limit_val_batches=0,
        default_root_dir=work_dir,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    return time.perf_counter() - start


ABLATIONS: list[tuple[str, dict[str, Any]]] = [
    ("IMRNet (configuration above)", {}),
    ("no iterative reconstruction (masks from the input)", {"iterative_reconstruction": False}),
    ("1 iteration", {"num_iterations": 1}),
    ("point score only (no feature score)", {"use_feature_score": False}),
    ("feature score only (no point score)", {"use_point_score": False}),
    ("feature_reference=reconstruction (paper-literal DFC)", {"feature_reference": "reconstruction"}),
    ("  ... without template regularisation", {"feature_reference": "reconstruction", "template_regularization": False}),
    ("point_score_mode=point", {"point_score_mode": "point"}),
    ("sampler=fps at test", {"sampler": "fps"}),
    ("sampler=random at test", {"sampler": "random"}),
    ("sampler=voxel at test", {"sampler": "voxel"}),
]


def ablation(model: Any, train_items: list[dict], test_items: list[dict], changes: dict[str, Any]) -> dict:  # noqa: ANN401
    """Metrics of the trained network with some switches flipped (statistics recomputed)."""
    import warnings

    net = model.model
    saved = {k: getattr(net, k) for k in changes}
    state = {k: v.clone() for k, v in net.state_dict().items()}
    try:
        for k, v in changes.items():
            setattr(net, k, v)
        if "num_iterations" in changes:
            warnings.filterwarnings("ignore", message=".*do not cover.*")
        net.eval()
        net.calibrate(_batches(train_items))
        return per_category_metrics(predict_records(net, test_items))
    finally:
        for k, v in saved.items():
            setattr(net, k, v)
        net.load_state_dict(state)


def _batches(items: list[dict], size: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for lo in range(0, len(items), size):
        chunk = items[lo : lo + size]
        points = torch.cat([c["points"] for c in chunk])
        batch = torch.cat([torch.full((c["points"].shape[0],), i, dtype=torch.long) for i, c in enumerate(chunk)])
        out.append((points, batch))
    return out


# --------------------------------------------------------------------------------------------
# timings
# --------------------------------------------------------------------------------------------
def time_preset(name: str, model_args: dict[str, Any], items: list[dict], reps: int) -> dict[str, float]:
    """Seconds per sample: patching, training step, inference (4 clouds per batch)."""
    from anomalib_3d_plugins.imrnet import IMRNetModel

    torch.manual_seed(0)
    net = IMRNetModel(**model_args)
    chunk = items[:4]
    points, batch = _batches(chunk, 4)[0]
    paths = [c["path"] for c in chunk]
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net.train()
    start = time.perf_counter()
    net.training_patches(points, batch, paths=paths)  # fills the cache
    patching = (time.perf_counter() - start) / len(chunk)
    step_times = []
    for _ in range(reps):
        start = time.perf_counter()
        loss = net.training_loss(points, batch, paths=paths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step_times.append((time.perf_counter() - start) / len(chunk))
    net.eval()
    net.calibrate([(points, batch)])
    infer_times = []
    for _ in range(reps):
        start = time.perf_counter()
        net(points, batch)
        infer_times.append((time.perf_counter() - start) / len(chunk))
    return {
        "preset": name,
        "params_M": sum(p.numel() for p in net.parameters()) / 1e6,
        "patch_s": patching,
        "train_s": float(np.median(step_times)),
        "infer_s": float(np.median(infer_times)),
    }


# --------------------------------------------------------------------------------------------
def _metrics_table(title: str, rows: list[tuple[str, dict[str, tuple[float, float]]]], categories: list[str]) -> None:
    print(f"\n## {title}\n")
    header = " | ".join(f"{c} I / P" for c in [*categories, "mean", "pooled"])
    print(f"| method | {header} |")
    print("|---|" + "---:|" * (len(categories) + 2))
    for name, m in rows:
        cells = " | ".join(f"{100 * m[c][0]:.1f} / {100 * m[c][1]:.1f}" for c in [*categories, "mean", "pooled"])
        print(f"| {name} | {cells} |")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(REPO / "datasets" / "Synthetic3D"), help="Synthetic3D cache folder")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the config's)")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per preset")
    parser.add_argument("--skip-default", action="store_true", help="skip timing the paper-size preset")
    parser.add_argument("--skip-ablations", action="store_true")
    parser.add_argument("--timings-only", action="store_true", help="only the seconds-per-sample table")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))

    config = experiment_config()
    epochs = args.epochs or int(config["trainer"]["max_epochs"])
    model, datamodule = build_from_config(config, root=args.root)
    datamodule.setup()
    train_items = collect_items(datamodule.train_data)
    test_items = collect_items(datamodule.test_data)
    categories = sorted({t["category"] for t in test_items})
    print(f"Synthetic3D: {len(train_items)} training clouds, {len(test_items)} test clouds, categories {categories}")

    if args.timings_only:
        _timings(config, train_items, args)
        return
    with tempfile.TemporaryDirectory() as work:
        fit_seconds = train(model, datamodule, epochs, Path(work))
    start = time.perf_counter()
    imrnet = per_category_metrics(predict_records(model.model, test_items))
    test_seconds = time.perf_counter() - start
    start = time.perf_counter()
    baseline = per_category_metrics(nearest_training_point_baseline(train_items, test_items))
    baseline_seconds = time.perf_counter() - start
    print(
        f"IMRNet: fit {fit_seconds:.1f} s ({epochs} epochs, {fit_seconds / (epochs * len(train_items)):.3f} s per "
        f"training sample-epoch, calibration included); test {test_seconds:.1f} s "
        f"({test_seconds / len(test_items):.3f} s per sample). Baseline: {baseline_seconds:.1f} s."
    )
    delta = {k: (imrnet[k][0] - baseline[k][0], imrnet[k][1] - baseline[k][1]) for k in imrnet}
    _metrics_table(
        "Object I-AUROC / point P-AUROC (%), same split",
        [("IMRNet (small preset)", imrnet), ("baseline: nearest training point", baseline), ("Δ", delta)],
        categories,
    )

    if not args.skip_ablations:
        rows = [(name, ablation(model, train_items, test_items, changes)) for name, changes in ABLATIONS]
        _metrics_table("Test-time ablations (same trained weights)", rows, categories)
    _timings(config, train_items, args)


def _timings(config: dict[str, Any], train_items: list[dict], args: argparse.Namespace) -> None:
    from anomalib_3d_plugins.imrnet import SMALL_PRESET, IMRNetModel

    small_args = {k: v for k, v in config["model"]["init_args"].items() if k in IMRNetModel.__init__.__code__.co_varnames}
    presets = [("small (README config)", {**SMALL_PRESET, **small_args})]
    if not args.skip_default:
        presets.append(("default (paper sizes)", {}))
    timings = [time_preset(name, preset, train_items, args.reps) for name, preset in presets]
    print("\n## Seconds per sample on CPU (4096-point clouds, batches of 4)\n")
    print("| preset | params (M) | patching (once per cloud) | training step | inference | x small (train / infer) |")
    print("|---|---:|---:|---:|---:|---:|")
    for t in timings:
        ratio = f"{t['train_s'] / timings[0]['train_s']:.1f} / {t['infer_s'] / timings[0]['infer_s']:.1f}"
        print(
            f"| {t['preset']} | {t['params_M']:.2f} | {t['patch_s']:.3f} | {t['train_s']:.3f} | {t['infer_s']:.3f} | {ratio} |"
        )
    print(f"\n(torch threads: {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
