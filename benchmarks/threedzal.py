"""3DzAL controls and ablations in the zero-shot protocol on organized Synthetic3D (no download).

Two protocols:

* **fixed task-irrelevant pool** (``--task-irrelevant CAT ...``): every row is fitted *once* on the
  normal train split of ``--fit-category`` (one or several categories, the paper's Tab. 6 idea)
  with pseudo-anomaly material from the task-irrelevant categories, then tested on each held-out
  ``--test-categories`` (none of them may be a fit or task-irrelevant category);
* **leave-one-out** (no ``--task-irrelevant``): for every held-out category T, fit on
  ``--fit-category`` with every other ``--categories`` entry except T as task-irrelevant data.

Every row is one configuration of the same model (``ROWS``); ``fpfh_bank`` is 3DzAL with the
learned branch and the classifier off (the BTF-style FPFH memory bank). Prints per row the
AUPRO / P-AUROC / I-AUROC averaged over the held-out categories, AUPRO per category, and the fit and
test CPU seconds (process time, so waiting for a shared core does not count) and wall seconds.
``--cell-auroc`` adds, over the real defect cells of the held-out categories (label: a cell holds a
defective point), the cell AUROC of g_phi's probability, of the bank distance and of "fewer points"
(minus the point count: the cue a classifier must not learn). ``--json FILE`` appends one line per
row, for tables over several seeds.

    # the controls on the held-out categories (report), one seed:
    OMP_NUM_THREADS=1 python benchmarks/threedzal.py --rows fpfh_bank full learned_trained learned_untrained \\
        learned_denoising full_paper_generator --fit-category cup gear plate --num-train 34 \\
        --task-irrelevant knob ring --test-categories bottle bowl vase bracket nut --num-test-per-defect 3 \\
        --cell-auroc --seed 0
    # validation (settings are chosen here only): knob with ring as material, and ring with knob
    OMP_NUM_THREADS=1 python benchmarks/threedzal.py --rows fpfh_bank full --fit-category cup gear plate \\
        --num-train 34 --task-irrelevant ring --test-categories knob --num-test-per-defect 3
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import torch
from _common import PeakMemory, cpu_seconds

#: The learned-feature-only bank: no FPFH in the bank or the disentanglement loss, no classifier.
LEARNED_ONLY: dict = {"use_fpfh": False, "classifier": False}
#: The paper's per-cell generator with the switches the earlier CPU preset used for it.
PAPER_GENERATOR: dict = {"pseudo_anomalies": "paper", "count_matched": False, "depth_consistent": True}

ROWS: dict[str, dict] = {
    "fpfh_bank": {"learned_branch": False, "classifier": False},
    "full": {},
    # controls: what the learned feature adds, and the generator it learns from
    "learned_trained": LEARNED_ONLY,
    "learned_untrained": {**LEARNED_ONLY, "max_epochs": 0},
    "learned_denoising": {**LEARNED_ONLY, "contrastive_loss": False, "denoising_loss": True},
    "full_paper_generator": PAPER_GENERATOR,
    "paper_generator_count_matched": {**PAPER_GENERATOR, "count_matched": True},
    "no_count_matching": {"count_matched": False},
    # the paper's network sizes (32-d f_theta, PointNet++ 16 centroids, widths 32 / 64) instead of the CPU preset's
    "paper_networks": {"feature_dim": 32, "pointnet_centroids": 16, "pointnet_widths": [32, 64]},
    # pseudo-defects twice as tall (a learnable task for g_phi: see the README's diagnosis)
    "tall_defects": {"defect_height": [0.4, 0.8]},
    # ablations of the preset (one switch each)
    "only_attach": {"pseudo_kinds": ["attach"]},
    "only_bumps": {"pseudo_kinds": ["bulge", "dent"]},
    "only_hole": {"pseudo_kinds": ["hole"]},
    "generator_off": {"interest_source": "random"},
    "no_contrastive": {"contrastive_loss": False},
    "no_disentanglement": {"disentanglement_loss": False},
    "no_classifier": {"classifier": False},
    "no_perturbation": {"perturbation": False},
    "distance_only": {"beta": 0.0},
    "classifier_only": {"alpha": 0.0},
    "disentanglement_signed": {"disentanglement_mode": "signed"},
    "generator_resnet50_random": {"generator_backbone": "resnet50"},
    "generator_resnet50_pretrained": {"generator_backbone": "resnet50", "generator_pretrained": True},
}

#: Model settings measured in grid pixels, so they change with the scan size (``--grid``); 128 is
#: the CPU preset itself.
GRIDS: dict[int, dict] = {
    128: {},
    224: {"grid_size": 224, "blur_sigma": 4.0},  # the paper's setting: 28 x 28 cells, sigma 4 px at 224
}


def _source(args: argparse.Namespace, categories: list[str], split: str) -> dict:
    options = {"layout": "mvtec3d", "image_size": [args.image_size, args.image_size], "num_train": args.num_train,
               "num_test_good": args.num_test_good, "num_test_per_defect": args.num_test_per_defect,
               "defect_types": ["bulge", "concavity", "hole", "crack"]}
    return {"dataset": "synthetic3d", "root": args.root, "categories": categories, "split": split, "options": options}


def _datamodule(args: argparse.Namespace, irrelevant: list[str], test_category: str):  # noqa: ANN202
    from anomalib_3d.data.datamodules import ZeroShot3D

    return ZeroShot3D(
        fit_sources=[_source(args, list(args.fit_category), "train")],
        task_irrelevant_sources=[_source(args, irrelevant, "train")],
        test_sources=[_source(args, [test_category], "test")],
        grid_size=None, train_batch_size=4, eval_batch_size=4,
    )


@torch.no_grad()
def cell_records(model, datamodule) -> dict[str, list]:  # noqa: ANN001
    """Per real test cell: defective pixels, g_phi probability, bank distance, points."""
    from anomalib_3d.data.adapters import resize_nearest
    from anomalib_3d_plugins.threedzal.cells import cell_sums

    out: dict[str, list] = {"label": [], "probability": [], "distance": [], "count": []}
    net = model.model
    for batch in datamodule.test_dataloader():
        points, clouds = model.organized_clouds(batch)
        ptr = points.ptr.tolist()
        for b, cloud in enumerate(clouds):
            height, width = cloud.source_shape
            labels = torch.zeros(height * width, dtype=torch.bool)
            labels[cloud.grid_index.cpu()] = points.gt_mask[ptr[b] : ptr[b + 1]].cpu().bool()
            labels = resize_nearest(labels.view(height, width), (net.settings.grid_size, net.settings.grid_size))
            scores = net.cell_scores(cloud)
            out["label"] += cell_sums(labels.long(), net.settings.patch_size)[scores.cells.cpu()].tolist()
            out["distance"] += scores.distance.cpu().tolist()
            out["count"] += scores.counts.cpu().tolist()
            if scores.probability is not None:
                out["probability"] += scores.probability.cpu().tolist()
    return out


def _cell_aurocs(records: dict[str, list], min_pixels: int = 8) -> dict[str, float]:
    """Cell AUROCs with two labels: any defective pixel (``cell_auroc_*``), and ``min_pixels`` or more
    defective pixels against none, cells in between left out (``strict_auroc_*``)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    pixels = np.asarray(records["label"])
    scores = {"distance": np.asarray(records["distance"]), "fewer_points": -np.asarray(records["count"])}
    if records["probability"]:
        scores["classifier"] = np.asarray(records["probability"])
    result: dict[str, float] = {"defect_cells": int((pixels > 0).sum()), "cells": len(pixels)}
    strict = (pixels == 0) | (pixels >= min_pixels)
    for name, values in scores.items():
        if 0 < (pixels > 0).sum() < len(pixels):
            result[f"cell_auroc_{name}"] = roc_auc_score(pixels > 0, values)
        if 0 < (pixels[strict] > 0).sum() < strict.sum():
            result[f"strict_auroc_{name}"] = roc_auc_score(pixels[strict] > 0, values[strict])
    return result


@torch.no_grad()
def pseudo_auroc(model, datamodule, num_clouds: int = 8) -> dict[str, float]:  # noqa: ANN001
    """g_phi's AUROC on fresh pseudo-anomalies of the fit data (its own task: did it learn it?)."""
    from sklearn.metrics import roc_auc_score

    from anomalib_3d_plugins.threedzal.torch_model import perturb_patches

    net = model.model
    if net.classifier is None:
        return {}
    clouds = []
    for batch in datamodule.train_dataloader():
        clouds += model.organized_clouds(batch)[1]
        if len(clouds) >= num_clouds:
            break
    was_training = net.training
    net.eval()
    pos, neg, _ = net.training_patches([(cloud, net.cell_patches(cloud)) for cloud in clouds[:num_clouds]])
    inputs = torch.cat([pos, neg])
    if net.settings.perturbation:
        inputs = perturb_patches(net.classifier, inputs, net.settings.epsilon, net.settings.perturbation_direction)
    probability = torch.softmax(net.classifier(inputs), dim=-1)[:, 1]
    net.train(was_training)
    labels = [0] * pos.shape[0] + [1] * neg.shape[0]
    return {"pseudo_auroc_classifier": roc_auc_score(labels, probability.tolist())}


def _engine(args: argparse.Namespace):  # noqa: ANN202
    from anomalib.engine import Engine

    return Engine(accelerator=args.device, devices=1, logger=False, default_root_dir=args.results,
                  enable_progress_bar=False, enable_model_summary=False)


def _fit(row: dict, irrelevant: list[str], first_test: str, args: argparse.Namespace):  # noqa: ANN202
    from anomalib_3d_plugins.threedzal import ThreeDzAL

    datamodule = _datamodule(args, irrelevant, first_test)
    torch.manual_seed(args.seed)
    epochs = {} if args.epochs is None else {"max_epochs": args.epochs}
    model = ThreeDzAL.small(visualizer=False, **{**GRIDS[args.grid], **epochs, "seed": args.seed, **row})
    engine = _engine(args)
    start, start_cpu = time.perf_counter(), cpu_seconds()
    with PeakMemory(args.device) as memory:
        engine.fit(model, datamodule=datamodule)
    fit = {"fit_wall_s": time.perf_counter() - start, "fit_cpu_s": cpu_seconds() - start_cpu,
           "fit_peak_mb": memory.peak, "fit_scans": len(datamodule.train_data)}
    return model, engine, fit


def _test(model, engine, irrelevant: list[str], category: str, args: argparse.Namespace) -> dict:  # noqa: ANN001
    datamodule = _datamodule(args, irrelevant, category)
    start, start_cpu = time.perf_counter(), cpu_seconds()
    metrics = engine.test(model, datamodule=datamodule, verbose=False)[0]
    result = {"aupro": metrics["point_AUPRO"], "p_auroc": metrics["point_AUROC"], "i_auroc": metrics["image_AUROC"],
              "test_wall_s": time.perf_counter() - start, "test_cpu_s": cpu_seconds() - start_cpu,
              "test_scans": len(datamodule.test_data)}
    if args.cell_auroc:
        result["cells"] = cell_records(model, datamodule)
    return result


def run_row(name: str, args: argparse.Namespace) -> dict:
    """Fit and test one row on every held-out category; returns the per-category results and means."""
    row = ROWS[name]
    per_category: dict[str, dict] = {}
    fits = []
    if args.task_irrelevant:
        model, engine, fit = _fit(row, list(args.task_irrelevant), args.test_categories[0], args)
        fits.append(fit)
        if args.cell_auroc:
            fit.update(pseudo_auroc(model, model.trainer.datamodule))
        for category in args.test_categories:
            per_category[category] = _test(model, engine, list(args.task_irrelevant), category, args)
    else:
        for category in args.test_categories:
            irrelevant = [c for c in args.categories if c != category and c not in args.fit_category]
            model, engine, fit = _fit(row, irrelevant, category, args)
            fits.append(fit)
            per_category[category] = _test(model, engine, irrelevant, category, args)
    summary = {k: sum(r[k] for r in per_category.values()) / len(per_category) for k in ("aupro", "p_auroc", "i_auroc")}
    summary["fit_cpu_s"] = sum(f["fit_cpu_s"] for f in fits)
    summary["fit_wall_s"] = sum(f["fit_wall_s"] for f in fits)
    summary["fit_peak_mb"] = max(f["fit_peak_mb"] for f in fits)
    summary["fit_scans"] = fits[0]["fit_scans"]
    summary["test_cpu_s"] = sum(r["test_cpu_s"] for r in per_category.values())
    summary["test_scans"] = sum(r["test_scans"] for r in per_category.values())
    if args.cell_auroc:
        pooled: dict[str, list] = {"label": [], "probability": [], "distance": [], "count": []}
        for result in per_category.values():
            for key, values in result.pop("cells").items():
                pooled[key] += values
        summary.update(_cell_aurocs(pooled))
        if "pseudo_auroc_classifier" in fits[0]:
            summary["pseudo_auroc_classifier"] = sum(f["pseudo_auroc_classifier"] for f in fits) / len(fits)
    summary["aupro_per_category"] = {c: r["aupro"] for c, r in per_category.items()}
    return summary


def pseudo_defect_figure(path: str, image_size: int = 128, seed: int = 0) -> None:
    """One row per pseudo-defect kind on a synthetic cup scan: depth before, depth after (the affected
    pixels outlined) and a cross-section through the defect (depth along one pixel row: every pixel
    ray keeps one point). The last row is the paper's per-cell adding for comparison (with
    ``depth_consistent``): added points between the pixel rays, the surface kept on the rays they miss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from anomalib_3d.data.datasets import remove_background_plane
    from anomalib_3d.data.synthetic.generator import default_camera, make_scan
    from anomalib_3d_plugins.threedzal.cells import cut_cells
    from anomalib_3d_plugins.threedzal.grid_defects import KINDS, interest_centre, synthesise_defect
    from anomalib_3d_plugins.threedzal.pseudo_anomaly import (
        GeneratorCNN,
        add_points,
        camera_visible,
        interest_region,
        soft_interest_map,
    )
    size = (image_size, image_size)

    def scan(category: str, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        raw = make_scan(category, None, index, size)
        valid = torch.from_numpy(remove_background_plane(raw.xyz))
        return torch.from_numpy(raw.xyz) * valid[..., None], valid

    xyz, valid = scan("cup", seed)
    source_xyz, source_valid = scan("bottle", seed + 1)
    soft = soft_interest_map(GeneratorCNN("small", seed=seed), source_xyz, source_valid)
    sources = [(source_xyz, source_valid, soft, interest_centre(source_valid, soft, 0.01))]
    camera = default_camera(size)
    cx, cy = camera.center
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for kind in KINDS:
        made = None
        while made is None or int(made.affected.sum()) < 40:
            made = synthesise_defect(xyz, valid, kind, generator, patch_size=8, diameter_cells=(1.5, 2.0),
                                     height_fraction=(0.3, 0.4), sources=sources)
        rows.append((kind, made))
    fig, axes = plt.subplots(len(rows) + 1, 3, figsize=(10, 3.1 * (len(rows) + 1)))

    def shaded(grid: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Lambertian shading from the grid's own normals (central differences); NaN off the part."""
        du = torch.zeros_like(grid)
        dv = torch.zeros_like(grid)
        du[:, 1:-1] = grid[:, 2:] - grid[:, :-2]
        dv[1:-1] = grid[2:] - grid[:-2]
        normal = torch.nn.functional.normalize(torch.cross(du, dv, dim=-1), dim=-1)
        light = torch.nn.functional.normalize(torch.tensor([0.4, -0.5, -1.0]), dim=0)
        return torch.where(mask, (normal @ light).abs(), torch.nan)

    for (kind, made), (ax_before, ax_after, ax_cut) in zip(rows, axes, strict=False):
        r, c = (int(v) for v in made.affected.nonzero().float().mean(0).round())
        window = (slice(max(r - 20, 0), r + 20), slice(max(c - 20, 0), c + 20))
        ax_before.imshow(shaded(xyz, valid)[window], cmap="gray", vmin=0, vmax=1)
        ax_after.imshow(shaded(made.xyz, made.valid)[window], cmap="gray", vmin=0, vmax=1)
        ax_after.contour(made.affected[window].float(), levels=[0.5], colors="red", linewidths=1)
        ax_before.set_title(f"{kind}: before (shaded)")
        ax_after.set_title(f"{kind}: after (red: affected pixels)")
        columns = torch.arange(window[1].start, window[1].start + 40)
        columns = columns[columns < image_size]
        on = valid[r, columns]
        ax_cut.plot(columns[on], xyz[r, columns[on], 2] * 1000, "o", ms=3, color="grey", label="before")
        kept = made.valid[r, columns]
        moved = kept & made.affected[r, columns]
        ax_cut.plot(columns[kept & ~moved], made.xyz[r, columns[kept & ~moved], 2] * 1000, "o", ms=3, color="black",
                    label="after, unchanged")
        ax_cut.plot(columns[moved], made.xyz[r, columns[moved], 2] * 1000, "o", ms=3, color="red", label="after, defect")
        ax_cut.invert_yaxis()
        ax_cut.set_title(f"row {r}: one point per pixel ray")
        ax_cut.set_xlabel("pixel column")
        ax_cut.set_ylabel("depth z (mm, camera at top)")
        ax_cut.legend(fontsize=7)
    # the paper's per-cell adding, depth-consistent
    ax_before, ax_after, ax_cut = axes[-1]
    points = xyz[valid]
    cells = cut_cells(xyz, valid, 8)
    cell = int((cells.counts == 64).nonzero()[len(cells.counts) // 4])
    members = cells.point_index[cell].unique()
    region = interest_region(source_xyz, source_valid, soft, 0.01, 24)
    made = add_points(points, region, int(members[27]), 64, patch_index=members)
    union = made.points[made.patch_index]
    keep = camera_visible(union, points[members])
    added = made.labels[made.patch_index]
    columns = camera.focal * union[:, 0] / union[:, 2] + cx - 0.5
    rows_px = camera.focal * union[:, 1] / union[:, 2] + cy - 0.5
    ax_before.scatter(columns[~added], rows_px[~added], s=12, c="grey", label="cell pixels")
    ax_before.scatter(columns[added], rows_px[added], s=12, c="red", label="added points")
    ax_before.invert_yaxis()
    ax_before.set_title("paper adding: rays of cell + added")
    ax_before.legend(fontsize=7)
    ax_after.scatter(columns[keep & ~added], rows_px[keep & ~added], s=12, c="black", label="surface kept")
    ax_after.scatter(columns[keep & added], rows_px[keep & added], s=12, c="red", label="added, kept")
    ax_after.invert_yaxis()
    ax_after.set_title("after camera_visible: mixed surfaces")
    ax_after.legend(fontsize=7)
    middle = float(rows_px[~added].median())
    band = (rows_px - middle).abs() < 1.0
    ax_cut.plot(columns[band & keep & ~added], union[band & keep & ~added, 2] * 1000, "o", ms=4, color="black",
                label="surface kept")
    ax_cut.plot(columns[band & keep & added], union[band & keep & added, 2] * 1000, "o", ms=4, color="red",
                label="added, kept")
    ax_cut.invert_yaxis()
    ax_cut.set_title("a band of rows: two interleaved layers")
    ax_cut.set_xlabel("pixel column (fractional)")
    ax_cut.legend(fontsize=7)
    for ax in axes[:, :2].ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="*", default=["fpfh_bank", "full"], choices=sorted(ROWS))
    parser.add_argument("--fit-category", nargs="+", default=["cup"], help="normal train split(s) to fit on")
    parser.add_argument("--task-irrelevant", nargs="*", default=None,
                        help="fixed pseudo-anomaly material (one fit per row); without it: leave-one-out")
    parser.add_argument("--test-categories", nargs="*", default=["gear", "bracket", "nut"])
    parser.add_argument("--categories", nargs="*", default=["cup", "bottle", "bowl", "vase", "gear", "bracket", "nut"],
                        help="leave-one-out only: the task-irrelevant pool before removing the held-out one")
    parser.add_argument("--root", default="./datasets/Synthetic3D")
    parser.add_argument("--results", default="./results/threedzal_benchmark")
    parser.add_argument("--grid", type=int, choices=sorted(GRIDS), default=128,
                        help="model grid (and scan size): 128 = CPU preset, 224 = the paper's 28 x 28 cells")
    parser.add_argument("--image-size", type=int, default=None, help="synthetic scan size (default: --grid)")
    parser.add_argument("--num-train", type=int, default=6, help="normal train scans per category")
    parser.add_argument("--num-test-good", type=int, default=4)
    parser.add_argument("--num-test-per-defect", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    parser.add_argument("--seed", type=int, default=0, help="model seed (init, pseudo-anomalies, generator, coreset)")
    parser.add_argument("--cell-auroc", action="store_true", help="cell AUROC of classifier / distance / point count")
    parser.add_argument("--json", default=None, help="append one JSON line per row to this file")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--figure", default=None, help="only write the pseudo-defect picture to this PNG")
    args = parser.parse_args()
    if args.figure:
        pseudo_defect_figure(args.figure, seed=args.seed)
        return
    if args.image_size is None:
        args.image_size = args.grid
    if args.task_irrelevant is not None:
        shared = set(args.task_irrelevant) & (set(args.test_categories) | set(args.fit_category))
        if shared or set(args.fit_category) & set(args.test_categories):
            parser.error(f"fit, task-irrelevant and test categories must not overlap (shared: {sorted(shared)})")
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    results: dict[str, dict] = {}
    for name in args.rows:
        try:
            results[name] = run_row(name, args)
        except FileNotFoundError as error:  # MissingWeightsError: pretrained generator without local weights
            print(f"{name}: skipped ({type(error).__name__}: {str(error).splitlines()[0][:100]})", flush=True)
            continue
        per = " / ".join(f"{v:.3f}" for v in results[name]["aupro_per_category"].values())
        print(f"{name}: " + ", ".join(f"{k}={v:.3f}" for k, v in results[name].items() if isinstance(v, float))
              + f" | AUPRO {' / '.join(args.test_categories)}: {per}", flush=True)
        if args.json:
            record = {"row": name, "seed": args.seed, "fit": args.fit_category, "task_irrelevant": args.task_irrelevant,
                      "test": args.test_categories, "grid": args.grid, "num_train": args.num_train,
                      "epochs": args.epochs, **results[name]}
            with Path(args.json).open("a") as handle:
                handle.write(json.dumps(record) + "\n")
    base = results.get("fpfh_bank", {}).get("aupro")
    print(f"\nfit: {', '.join(args.fit_category)} ({args.num_train} scans each); task-irrelevant: "
          f"{', '.join(args.task_irrelevant) if args.task_irrelevant is not None else 'leave-one-out'}; held out: "
          f"{', '.join(args.test_categories)}; {args.image_size}² scans, {args.grid}² grid, "
          f"{args.epochs or 'preset'} epochs, seed {args.seed}, device {args.device}\n")
    print("| row | AUPRO | − FPFH bank | P-AUROC | I-AUROC | AUPRO per category | fit CPU s | test CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        delta = f"{r['aupro'] - base:+.3f}" if base is not None else "-"
        per = " / ".join(f"{v:.3f}" for v in r["aupro_per_category"].values())
        print(f"| {name} | {r['aupro']:.3f} | {delta} | {r['p_auroc']:.3f} | {r['i_auroc']:.3f} | {per} | "
              f"{r['fit_cpu_s']:.0f} | {r['test_cpu_s']:.0f} |")


if __name__ == "__main__":
    main()
