"""3DzAL ablations in the leave-one-out protocol on organized Synthetic3D (no download).

For every held-out category T: fit on the normal train split of ``--fit-category`` (one category,
or several as in the paper's Tab. 6) with the task-irrelevant categories (every listed category
except T and the fit categories), test on T.
Every row is one switch of the same model; ``btf_baseline`` is 3DzAL with the learned branch and
the classifier off (FPFH memory bank, BTF-style). Prints AUPRO / P-AUROC / I-AUROC averaged over
the held-out categories, the AUPRO ratio to the baseline, fit and test seconds per sample, and the
process's peak-memory growth (CPU: max RSS; CUDA: max allocated).

    OMP_NUM_THREADS=1 python benchmarks/threedzal.py --rows btf_baseline full previous_full
    # validation (the split every default was chosen on; never tune on the report categories):
    OMP_NUM_THREADS=1 python benchmarks/threedzal.py --rows btf_baseline full --test-categories knob ring \\
        --categories cup bottle bowl vase gear bracket nut knob ring --num-test-per-defect 3
    # the paper's input size (224² scans, 8-px patches = 28 x 28 cells, blur sigma 4 px): add --grid 224
"""

from __future__ import annotations

import argparse
import logging
import resource
import time
import warnings

import torch

#: The CPU preset before issue #13 (our first reading of the paper): two-layer adding-point
#: pseudo-anomalies, the text's perturbation direction, learned branch at full weight, 20 epochs.
PREVIOUS: dict = {"depth_consistent": False, "perturbation_direction": "paper", "learned_weight": 1.0, "max_epochs": 20}

ROWS: dict[str, dict] = {
    "btf_baseline": {"learned_branch": False, "classifier": False},
    "full": {},
    "previous_full": PREVIOUS,
    # ablations of the current preset (one switch each)
    "generator_off": {"interest_source": "random"},
    "adding_only": {"adding_ratio": 1.0},
    "removing_only": {"adding_ratio": 0.0},
    "no_contrastive": {"contrastive_loss": False},
    "no_disentanglement": {"disentanglement_loss": False},
    "no_classifier": {"classifier": False},
    "no_perturbation": {"perturbation": False},
    "perturbation_paper": {"perturbation_direction": "paper"},
    "no_rotation_augment": {"rotation_augment": False},
    "no_depth_consistent": {"depth_consistent": False},
    "distance_only": {"beta": 0.0},
    "classifier_only": {"alpha": 0.0},
    "learned_weight_1": {"learned_weight": 1.0},
    "epochs_20": {"max_epochs": 20},
    "map_centering": {"map_centering": True},
    "irrelevant_positives": {"irrelevant_positives": 4},
    "generator_resnet50_random": {"generator_backbone": "resnet50"},
    "generator_resnet50_pretrained": {"generator_backbone": "resnet50", "generator_pretrained": True},
    # the paper's values where the CPU preset differs (f_theta 32-d; top 0.1 % points of interest)
    "paper_feature_dim": {"feature_dim": 32},
    "paper_top_fraction": {"top_fraction": 0.001},
    # the validation sweep of issue #13 (absolute settings: PREVIOUS + changes; README "Validation")
    "val_epochs_100": {**PREVIOUS, "max_epochs": 100},
    "val_irrelevant_positives": {**PREVIOUS, "irrelevant_positives": 4},
    "val_irrelevant_positives_e100": {**PREVIOUS, "irrelevant_positives": 4, "max_epochs": 100},
    "val_epsilon_001": {**PREVIOUS, "epsilon": 0.01},
    "val_distance_only": {**PREVIOUS, "beta": 0.0},
    "val_beta_025": {**PREVIOUS, "beta": 0.25},
    "val_normalize_learned": {**PREVIOUS, "normalize_learned": True},
    "val_learned_weight_05": {**PREVIOUS, "learned_weight": 0.5},
    "val_perturbation_odin": {**PREVIOUS, "perturbation_direction": "odin"},
    "val_map_centering": {**PREVIOUS, "map_centering": True},
    "val_depth": {**PREVIOUS, "depth_consistent": True},
    "val_depth_lw05": {**PREVIOUS, "depth_consistent": True, "learned_weight": 0.5},
    "val_depth_e100": {**PREVIOUS, "depth_consistent": True, "max_epochs": 100},
    "val_depth_e100_lw05": {**PREVIOUS, "depth_consistent": True, "max_epochs": 100, "learned_weight": 0.5},
    "val_depth_e100_ip": {**PREVIOUS, "depth_consistent": True, "max_epochs": 100, "irrelevant_positives": 4},
    "val_depth_e100_odin": {**PREVIOUS, "depth_consistent": True, "max_epochs": 100, "perturbation_direction": "odin"},
    "val_depth_e100_eps001": {**PREVIOUS, "depth_consistent": True, "max_epochs": 100, "epsilon": 0.01},
    "val_depth_e100_odin_lw05": {**PREVIOUS, "depth_consistent": True, "max_epochs": 100,
                                 "perturbation_direction": "odin", "learned_weight": 0.5},
}


#: Model settings that are measured in grid pixels and so change with the scan size (``--grid``);
#: 128 is the CPU preset itself. Everything else (patch 8 px, FPFH radius in metres, epochs, ...)
#: stays as in the preset.
GRIDS: dict[int, dict] = {
    128: {},
    224: {"grid_size": 224, "blur_sigma": 4.0},  # the paper's setting: 28 x 28 cells, sigma 4 px at 224
}


def _peak_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(row: dict, test_category: str, args: argparse.Namespace) -> dict[str, float]:
    from anomalib.engine import Engine

    from anomalib_3d.data.datamodules import ZeroShot3D
    from anomalib_3d_plugins.threedzal import ThreeDzAL

    options = {"layout": "mvtec3d", "image_size": [args.image_size, args.image_size], "num_train": args.num_train,
               "num_test_good": args.num_test_good, "num_test_per_defect": args.num_test_per_defect,
               "defect_types": ["bulge", "concavity", "hole", "crack"]}
    irrelevant = [c for c in args.categories if c != test_category and c not in args.fit_category]
    source = {"dataset": "synthetic3d", "root": args.root, "options": options}
    datamodule = ZeroShot3D(
        fit_sources=[{**source, "categories": list(args.fit_category), "split": "train"}],
        task_irrelevant_sources=[{**source, "categories": irrelevant, "split": "train"}],
        test_sources=[{**source, "categories": [test_category], "split": "test"}],
        grid_size=None, train_batch_size=4, eval_batch_size=4,
    )
    torch.manual_seed(args.seed)
    epochs = {} if args.epochs is None else {"max_epochs": args.epochs}
    model = ThreeDzAL.small(visualizer=False, **{**GRIDS[args.grid], **epochs, "seed": args.seed, **row})
    engine = Engine(accelerator=args.device, devices=1, logger=False, default_root_dir=args.results,
                    enable_progress_bar=False, enable_model_summary=False)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = _peak_mb(args.device)
    start = time.perf_counter()
    engine.fit(model, datamodule=datamodule)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    metrics = engine.test(model, datamodule=datamodule, verbose=False)[0]
    test_s = time.perf_counter() - start
    num_test = len(datamodule.test_data)
    return {
        "aupro": metrics["point_AUPRO"], "p_auroc": metrics["point_AUROC"], "i_auroc": metrics["image_AUROC"],
        "fit_s": fit_s / len(datamodule.train_data), "test_s": test_s / num_test,
        "peak_mb": max(0.0, _peak_mb(args.device) - before),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="*", default=["btf_baseline", "full", "previous_full"])
    parser.add_argument("--fit-category", nargs="+", default=["cup"],
                        help="normal train split(s) to fit on; two = the paper's multi-class setting (Tab. 6)")
    parser.add_argument("--test-categories", nargs="*", default=["gear", "bracket", "nut"])
    parser.add_argument("--categories", nargs="*", default=["cup", "bottle", "bowl", "vase", "gear", "bracket", "nut"])
    parser.add_argument("--root", default="./datasets/Synthetic3D")
    parser.add_argument("--results", default="/tmp/threedzal_benchmark")
    parser.add_argument("--grid", type=int, choices=sorted(GRIDS), default=128,
                        help="model grid (and scan size): 128 = CPU preset, 224 = the paper's 28 x 28 cells")
    parser.add_argument("--image-size", type=int, default=None, help="synthetic scan size (default: --grid)")
    parser.add_argument("--num-train", type=int, default=6)
    parser.add_argument("--num-test-good", type=int, default=4)
    parser.add_argument("--num-test-per-defect", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs (100)")
    parser.add_argument("--seed", type=int, default=0, help="model seed (init, pseudo-anomalies, generator, coreset)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.image_size is None:
        args.image_size = args.grid
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    results: dict[str, dict[str, float]] = {}
    for name in args.rows:
        per_category = []
        try:
            for category in args.test_categories:
                per_category.append(run_one(ROWS[name], category, args))
        except FileNotFoundError as error:  # MissingWeightsError: pretrained generator without local weights
            print(f"{name}: skipped ({type(error).__name__}: {str(error).splitlines()[0][:100]})", flush=True)
            continue
        results[name] = {k: sum(r[k] for r in per_category) / len(per_category) for k in per_category[0]}
        results[name]["peak_mb"] = max(r["peak_mb"] for r in per_category)
        per = " ".join(f"{c}={r['aupro']:.3f}" for c, r in zip(args.test_categories, per_category, strict=True))
        print(f"{name}: " + ", ".join(f"{k}={v:.3f}" for k, v in results[name].items()) + f" | AUPRO per category: {per}",
              flush=True)
    base = results.get("btf_baseline", {}).get("aupro")
    print(f"\nleave-one-out on Synthetic3D (fit: {', '.join(args.fit_category)}; held out: {', '.join(args.test_categories)}; "
          f"{args.image_size}² scans, {args.grid}² grid, {args.epochs or 'preset'} epochs, seed {args.seed}, "
          f"device {args.device})\n")
    print("| row | AUPRO | AUPRO / baseline | P-AUROC | I-AUROC | fit s/sample | test s/sample | peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        ratio = f"{r['aupro'] / base:.3f}" if base else "-"
        print(f"| {name} | {r['aupro']:.3f} | {ratio} | {r['p_auroc']:.3f} | {r['i_auroc']:.3f} | "
              f"{r['fit_s']:.2f} | {r['test_s']:.2f} | {r['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
