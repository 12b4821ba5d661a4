"""Odd-One-Out against its own ablations on synthetic scenes, in one run on one split.

Every row trains the same network from the same seed through anomalib's ``Engine`` on the same
synthetic scenes and scores the held-out scenes of the training families (``seen-test``) and of
families never seen in training (``unseen-test``, the paper's "unseen" split). Object AUROC is
computed over every ground-truth object of the split; scene AUROC over the max object score.

Rows: ``full`` (sparse cross-instance attention + distillation), ``no_attention``
(``attention: none``), ``dense_attention``, ``no_distillation``; ``--rows`` picks a subset.

The model, data and epochs are those of ``configs/experiments/odd_one_out_synthetic.yaml`` (the
CLI run); ``--model`` / ``--epochs`` / ``--seed`` override them.

Run: ``OMP_NUM_THREADS=2 python benchmarks/odd_one_out_ablations.py`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from sklearn.metrics import roc_auc_score

ROWS: dict[str, dict[str, Any]] = {
    "full": {},
    "no_attention": {"attention": "none"},
    "dense_attention": {"attention": "dense"},
    "no_distillation": {"distillation": False},
}

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "odd_one_out_synthetic.yaml"


def load_preset(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Model init args, synthetic-scene parameters and trainer args of the experiment config."""
    config = yaml.safe_load(path.read_text())
    return config["model"]["init_args"], config["data"]["init_args"]["synthetic"], config.get("trainer", {})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="./datasets/MultiViewScenesAblation")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--data", type=json.loads, default={}, help="JSON overrides of the synthetic scenes")
    parser.add_argument("--model", type=json.loads, default={}, help="JSON overrides of the model")
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's trainer.max_epochs")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="training seed and scene-generation seed")
    parser.add_argument("--proposals", type=float, nargs="*", default=None, metavar="THRESHOLD",
                        help="also score density proposals (DBSCAN) at these opacity thresholds (paper: 0.2)")
    parser.add_argument("--out", default=None, help="write the table as JSON here")
    return parser.parse_args()


def datamodule(args: argparse.Namespace, test_split: str | None = None):  # noqa: ANN201
    from anomalib_3d.data.datamodules.multiview_scenes import MultiViewScenes

    synthetic = {**args.synthetic, **args.data, "seed": args.seed}
    return MultiViewScenes(root=args.root, synthetic=synthetic, test_split=test_split,
                           train_batch_size=args.batch_size, eval_batch_size=args.batch_size, seed=args.seed)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Any, boxes: str = "ground_truth") -> dict[str, float]:  # noqa: ANN401
    """Object / scene AUROC and the paper's object accuracy over a split, scoring ``boxes``."""
    from anomalib_3d.metrics.objects import object_accuracy

    model.eval()
    model.boxes = boxes
    object_scores, object_labels, scene_scores, scene_labels, correct, proposals = [], [], [], [], [], []
    for batch in loader:
        out = model._predict(batch)  # noqa: SLF001 - raw scores, before anomalib's normalisation
        object_scores.append(out.object_scores.cpu())
        object_labels.append(batch.object_labels.cpu())
        scene_scores.append(out.pred_score.cpu())
        scene_labels.append(batch.gt_label.cpu())
        pred_boxes = out.pred_boxes if boxes == "proposals" else None
        pred_scores = out.pred_object_scores if boxes == "proposals" else out.object_scores
        pred_batch = out.pred_object_batch if boxes == "proposals" else batch.object_batch
        accuracy = object_accuracy(pred_boxes, pred_scores, pred_batch, batch.boxes, batch.object_labels,
                                   batch.object_batch)
        correct.append(float(accuracy) * batch.batch_size)
        proposals.append(len(pred_scores))
    model.boxes = "ground_truth"
    scores, labels = torch.cat(object_scores).numpy(), torch.cat(object_labels).numpy()
    s_scores, s_labels = torch.cat(scene_scores).numpy(), torch.cat(scene_labels).numpy()
    return {
        "object_auroc": float(roc_auc_score(labels, scores)),
        "scene_auroc": float(roc_auc_score(s_labels, s_scores)) if len(set(s_labels)) > 1 else float("nan"),
        "accuracy": sum(correct) / len(s_labels),
        "boxes_per_scene": sum(proposals) / len(s_labels),
        "objects": int(len(labels)),
        "odd": int(labels.sum()),
    }


def main() -> None:
    args = parse_args()
    args.preset, args.synthetic, trainer = load_preset(args.config)
    args.epochs = args.epochs or int(trainer.get("max_epochs", 16))
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    from anomalib_3d_plugins.odd_one_out import OddOneOut

    data = datamodule(args)
    data.prepare_data()
    loaders = {}
    for split in ("seen-test", "unseen-test"):
        split_data = datamodule(args, split)
        split_data.setup()
        loaders[split] = split_data.test_dataloader()
    results = []
    for row in args.rows:
        seed_everything(args.seed, workers=True)
        params = {**args.preset, **args.model, **ROWS[row]}
        model = OddOneOut(**params, evaluator=False)
        engine = Engine(max_epochs=args.epochs, logger=False,
                        default_root_dir=str(Path(args.root) / "runs" / row), enable_progress_bar=False,
                        check_val_every_n_epoch=args.epochs + 1)
        start = time.perf_counter()
        engine.fit(model, datamodule=data)
        fit_s = time.perf_counter() - start
        metrics = {split: evaluate(model, loader) for split, loader in loaders.items()}
        for threshold in args.proposals or []:
            model.proposal_threshold = threshold
            metrics.update({f"{split}-proposals@{threshold:g}": evaluate(model, loader, "proposals")
                            for split, loader in loaders.items()})
        results.append({"row": row, "fit_s": fit_s, **{f"{s}/{k}": v for s, m in metrics.items() for k, v in m.items()}})
        print(f"[ablation] {row}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                for k, v in results[-1].items() if k != "row"), flush=True)
    print("\n| row | boxes | seen obj AUROC | unseen obj AUROC | seen accuracy | unseen accuracy "
          "| seen scene AUROC | unseen scene AUROC | fit s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        suffixes = [("", "ground truth")] + [(f"-proposals@{t:g}", f"proposals @ {t:g}") for t in args.proposals or []]
        for suffix, name in suffixes:
            if f"seen-test{suffix}/object_auroc" not in r:
                continue
            cell = {k.replace(suffix, ""): v for k, v in r.items() if suffix == "" or suffix in k}
            print(f"| {r['row']} | {name} | {cell['seen-test/object_auroc']:.3f} | {cell['unseen-test/object_auroc']:.3f} | "
                  f"{cell['seen-test/accuracy']:.3f} | {cell['unseen-test/accuracy']:.3f} | "
                  f"{cell['seen-test/scene_auroc']:.3f} | {cell['unseen-test/scene_auroc']:.3f} | {r['fit_s']:.0f} |")
    print(f"\nobjects: seen {results[0]['seen-test/objects']} ({results[0]['seen-test/odd']} odd), "
          f"unseen {results[0]['unseen-test/objects']} ({results[0]['unseen-test/odd']} odd)")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
