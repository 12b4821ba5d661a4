"""Odd-One-Out against its ablations and a non-learned baseline on synthetic scenes, one seed per run.

Every learned row trains the same network from the same seed through anomalib's ``Engine`` on the
same synthetic scenes and scores the held-out scenes of the training families (``seen-test``) and of
families never seen in training (``unseen-test``). The ``baseline`` row is
:class:`~anomalib_3d_plugins.odd_one_out.baseline.NeighbourMedianBaseline` (colour and shape
histograms against the median of the other instances; scales from the training scenes).

Rows: ``full`` (the preset: sparse attention + distillation from its teacher), ``full_canonical``
(the privileged canonical-coordinate teacher), ``full_random`` (the frozen random CNN),
``no_attention``, ``dense_attention``, ``no_distillation``, ``baseline``. When the preset's teacher
is ``contrastive`` it is fitted once per seed on the training scenes and shared by the rows that use
it (its fit time is reported on its own).

Reported per row and split: object AUROC pooled over objects and averaged per scene, object
accuracy, scene AUROC, the same AUROCs **by defect kind** (the odd objects of one kind against all
normal objects) and, for learned rows, Eq. 5's correspondence accuracy against the ground truth
(:func:`~anomalib_3d_plugins.odd_one_out.diagnostics.correspondence_accuracy`). ``--out`` keeps
every object's score, so ``--summarize run1.json run2.json ...`` can pool seeds afterwards (rows of one
seed written by separate calls are joined with ``+``: ``seed41.json+seed41_more.json``).

Run: ``OMP_NUM_THREADS=1 python benchmarks/odd_one_out_ablations.py --seed 40 --out seed40.json``
(``--help`` for the options).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from _common import cpu_seconds
from sklearn.metrics import roc_auc_score

LEARNED_ROWS: dict[str, dict[str, Any]] = {
    "full": {},
    "full_canonical": {"teacher": "canonical"},
    "full_random": {"teacher": "random"},
    "no_attention": {"attention": "none"},
    "dense_attention": {"attention": "dense"},
    "no_distillation": {"distillation": False},
}
ROWS = [*LEARNED_ROWS, "baseline", "baseline_colour", "baseline_shape"]
SPLITS = ("seen-test", "unseen-test")
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "odd_one_out_synthetic.yaml"


def load_preset(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Model init args, synthetic-scene parameters and trainer args of the experiment config."""
    config = yaml.safe_load(path.read_text())
    return config["model"]["init_args"], config["data"]["init_args"]["synthetic"], config.get("trainer", {})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="./datasets/MultiViewScenesAblation")
    parser.add_argument("--rows", nargs="+", default=["baseline", "full", "full_canonical", "no_attention",
                                                      "no_distillation"], choices=ROWS)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--data", type=json.loads, default={}, help="JSON overrides of the synthetic scenes")
    parser.add_argument("--model", type=json.loads, default={}, help="JSON overrides of the model")
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's trainer.max_epochs")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="training seed and scene-generation seed")
    parser.add_argument("--out", default=None, help="write every row's per-object scores and metrics as JSON here")
    parser.add_argument("--summarize", nargs="+", default=None, metavar="JSON",
                        help="print the tables pooled over these --out files instead of running; files joined "
                             "by '+' (seed41.json+seed41_extra.json) are rows of one run, paired run by run")
    return parser.parse_args()


def datamodule(args: argparse.Namespace, test_split: str | None = None):  # noqa: ANN201
    from anomalib_3d.data.datamodules.multiview_scenes import MultiViewScenes

    synthetic = {**args.synthetic, **args.data, "seed": args.seed}
    return MultiViewScenes(root=args.root, synthetic=synthetic, test_split=test_split, load_depth=True,
                           train_batch_size=args.batch_size, eval_batch_size=args.batch_size, seed=args.seed)


def defects_of(batch: Any) -> list[str]:  # noqa: ANN401
    """Defect kind of every object of a batch (``"normal"`` for normal ones), from the scenes' metadata."""
    from anomalib_3d.data.scenes import read_scene_metadata

    kinds = []
    for folder in batch.image_path:
        defects = read_scene_metadata(folder).object_defects or []
        kinds += ["normal" if d is None else d for d in defects]
    return kinds


def records_of(batch: Any, scores: torch.Tensor, split: str) -> list[dict[str, Any]]:  # noqa: ANN401
    kinds = defects_of(batch)
    labels = batch.object_labels.tolist()
    scenes = [batch.scene_id[b] for b in batch.object_batch.tolist()]
    return [{"split": split, "scene": scene, "defect": kind, "label": bool(label), "score": float(score)}
            for scene, kind, label, score in zip(scenes, kinds, labels, scores.tolist(), strict=True)]


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, loaders: dict[str, Any], topk: int) -> tuple[list[dict], dict[str, float]]:  # noqa: ANN401
    from anomalib_3d_plugins.odd_one_out.diagnostics import correspondence_accuracy

    model.eval()
    records, counts = [], {}
    for split, loader in loaders.items():
        totals = {"cells": 0.0, "top1": 0.0, "hit_k": 0.0, "chance": 0.0}
        for batch in loader:
            out = model._predict(batch)  # noqa: SLF001 - raw scores, before anomalib's normalisation
            records += records_of(batch, out.object_scores.cpu(), split)
            for key, value in correspondence_accuracy(model.model, batch, topk=topk).items():
                totals[key] += value
        cells = max(totals["cells"], 1.0)
        counts.update({f"{split}/corr_top1": totals["top1"] / cells, f"{split}/corr_hit_k": totals["hit_k"] / cells,
                       f"{split}/corr_chance": totals["chance"] / cells})
    return records, counts


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")


def metrics_of(records: list[dict[str, Any]]) -> dict[str, float]:
    """Pooled and per-scene object AUROC, accuracy at 0.5 and scene AUROC, overall and by defect kind."""
    from anomalib_3d.metrics.objects import scene_object_auroc

    out: dict[str, float] = {}
    for split in sorted({r["split"] for r in records}):
        mine = [r for r in records if r["split"] == split]
        kinds = sorted({r["defect"] for r in mine} - {"normal"})
        groups = {"all": kinds, "colour": [k for k in kinds if k == "colour"],
                  "geometric": [k for k in kinds if k != "colour"], **{k: [k] for k in kinds if k != "colour"}}
        for name, chosen in groups.items():
            subset = [r for r in mine if r["defect"] == "normal" or r["defect"] in chosen]
            labels = np.array([r["defect"] != "normal" for r in subset])
            scores = np.array([r["score"] for r in subset])
            scene_ids = sorted({r["scene"] for r in subset})
            batch = torch.tensor([scene_ids.index(r["scene"]) for r in subset])
            per_scene = scene_object_auroc(torch.from_numpy(scores), torch.from_numpy(labels), batch, len(scene_ids))
            out[f"{split}/{name}/auroc"] = _auroc(labels, scores)
            judged = per_scene[~torch.isnan(per_scene)]
            out[f"{split}/{name}/scene_mean_auroc"] = float(judged.mean()) if judged.numel() else float("nan")
            out[f"{split}/{name}/odd"] = int(labels.sum())
        labels = np.array([r["label"] for r in mine])
        scores = np.array([r["score"] for r in mine])
        out[f"{split}/objects"] = len(mine)
        scene_ids = sorted({r["scene"] for r in mine})
        scene_scores = np.array([max(r["score"] for r in mine if r["scene"] == s) for s in scene_ids])
        scene_labels = np.array([any(r["label"] for r in mine if r["scene"] == s) for s in scene_ids])
        out[f"{split}/scene_auroc"] = _auroc(scene_labels, scene_scores)
        out[f"{split}/accuracy_at_0.5"] = float(np.mean([np.mean([(r["score"] >= 0.5) == r["label"] for r in mine
                                                                  if r["scene"] == s]) for s in scene_ids]))
    return out


def fit_contrastive_teacher(args: argparse.Namespace, data: Any, path: Path) -> dict[str, Any]:  # noqa: ANN401
    """Fit the preset's contrastive teacher once on the training scenes; save it for the rows."""
    from lightning.pytorch import seed_everything

    from anomalib_3d_plugins.odd_one_out.teachers import ContrastiveTeacher

    seed_everything(args.seed, workers=True)
    data.setup()
    teacher = ContrastiveTeacher(int({**args.preset, **args.model}["projection_dim"]))
    start, cpu = time.perf_counter(), cpu_seconds()
    history = teacher.fit(data.train_dataloader(), epochs=int({**args.preset, **args.model}.get("teacher_epochs", 4)),
                          seed=args.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(teacher.state_dict(), path)
    return {"teacher_fit_s": time.perf_counter() - start, "teacher_cpu_s": cpu_seconds() - cpu, "teacher_loss": history}


def _save(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    """Write what is done so far: a stopped run keeps its finished rows."""
    if args.out:
        Path(args.out).write_text(json.dumps(results))


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    from anomalib_3d_plugins.odd_one_out import OddOneOut
    from anomalib_3d_plugins.odd_one_out.baseline import NeighbourMedianBaseline

    data = datamodule(args)
    data.prepare_data()
    loaders = {}
    for split in SPLITS:
        split_data = datamodule(args, split)
        split_data.setup()
        loaders[split] = split_data.test_dataloader()
    results: list[dict[str, Any]] = []
    teacher_path = Path(args.root) / "runs" / f"contrastive_teacher_seed{args.seed}.pt"
    teacher_info: dict[str, Any] | None = None
    baseline_rows = [r for r in args.rows if r.startswith("baseline")]
    if baseline_rows:
        start, cpu = time.perf_counter(), cpu_seconds()
        data.setup()
        baseline = NeighbourMedianBaseline(seed=args.seed).fit(data.train_dataloader())
        scores = {split: [(batch, baseline.score(batch)) for batch in loader] for split, loader in loaders.items()}
        for row in baseline_rows:
            key = {"baseline": "combined", "baseline_colour": "colour", "baseline_shape": "shape"}[row]
            records = [rec for split, items in scores.items() for batch, s in items for rec in records_of(batch, s[key], split)]
            results.append({"row": row, "seed": args.seed, "fit_s": time.perf_counter() - start, "cpu_s": cpu_seconds() - cpu,
                            "records": records, "metrics": metrics_of(records)})
        _save(args, results)
    for row in [r for r in args.rows if r in LEARNED_ROWS]:
        params = {**args.preset, **args.model, **LEARNED_ROWS[row]}
        if params.get("distillation", True) and params.get("teacher") == "contrastive" and "teacher_weights" not in params:
            if teacher_info is None:
                teacher_info = fit_contrastive_teacher(args, data, teacher_path)
            params["teacher_weights"] = str(teacher_path)
        seed_everything(args.seed, workers=True)
        model = OddOneOut(**params, evaluator=False)
        engine = Engine(max_epochs=args.epochs, logger=False, default_root_dir=str(Path(args.root) / "runs" / row),
                        enable_progress_bar=False, check_val_every_n_epoch=args.epochs + 1)
        start, cpu = time.perf_counter(), cpu_seconds()
        engine.fit(model, datamodule=data)
        fit_s, fit_cpu = time.perf_counter() - start, cpu_seconds() - cpu
        records, correspondence = evaluate_model(model, loaders, int(params.get("topk", 20)))
        results.append({"row": row, "seed": args.seed, "fit_s": fit_s, "cpu_s": fit_cpu, "records": records,
                        "metrics": {**metrics_of(records), **correspondence},
                        **({"teacher": teacher_info} if "teacher_weights" in params and teacher_info else {})})
        _save(args, results)
        print(f"[ablation] seed {args.seed} {row}: fit {fit_s:.0f} s ({fit_cpu:.0f} CPU s), "
              + ", ".join(f"{k} {results[-1]['metrics'][k]:.3f}" for k in ("seen-test/all/auroc", "unseen-test/all/auroc")),
              flush=True)
    return results


def _cell(values: list[float]) -> str:
    values = [v for v in values if not np.isnan(v)]
    if not values:
        return "–"
    return f"{np.mean(values):.3f}" + (f" ± {np.std(values):.3f}" if len(values) > 1 else "")


def load_run(spec: str) -> list[dict[str, Any]]:
    """The rows of one run: an ``--out`` file, or several joined by ``+`` (rows of the same seed
    run at different times). A row twice in one run is refused: it would be paired ambiguously."""
    rows = [row for part in spec.split("+") for row in json.loads(Path(part).read_text())]
    names = [row["row"] for row in rows]
    repeated = sorted({name for name in names if names.count(name) > 1})
    seeds = {row["seed"] for row in rows if "seed" in row}
    if repeated or len(seeds) > 1:
        msg = f"{spec}: one run must hold each row once and one seed (repeated {repeated}, seeds {sorted(seeds)})."
        raise ValueError(msg)
    return rows


def print_tables(runs: list[list[dict[str, Any]]]) -> None:
    """Mean (± sd over runs) per row: overall and by defect kind; kinds pooled over runs as well.

    A row missing from some runs is summarised over the runs that have it (``runs`` column)."""
    rows = list(dict.fromkeys(r["row"] for run in runs for r in run))
    having = {row: [next(r for r in run if r["row"] == row) for run in runs if any(r["row"] == row for r in run)]
              for row in rows}
    print(f"\n{len(runs)} run(s). Object AUROC pooled over objects / averaged per scene, mean ± sd over runs:\n")
    print("| row | runs | seen | unseen | seen per scene | unseen per scene | seen acc. | unseen acc. "
          "| scene AUROC seen / unseen | fit min |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        got = having[row]
        m = [g["metrics"] for g in got]
        print(f"| {row} | {len(got)} | {_cell([x['seen-test/all/auroc'] for x in m])} | "
              f"{_cell([x['unseen-test/all/auroc'] for x in m])} | "
              f"{_cell([x['seen-test/all/scene_mean_auroc'] for x in m])} | {_cell([x['unseen-test/all/scene_mean_auroc'] for x in m])} | "
              f"{_cell([x['seen-test/accuracy_at_0.5'] for x in m])} | {_cell([x['unseen-test/accuracy_at_0.5'] for x in m])} | "
              f"{_cell([x['seen-test/scene_auroc'] for x in m])} / {_cell([x['unseen-test/scene_auroc'] for x in m])} | "
              f"{np.mean([g['fit_s'] for g in got]) / 60:.1f} |")
    pooled: dict[str, list[dict[str, Any]]] = {row: [] for row in rows}
    for index, run in enumerate(runs):
        for result in run:
            # Scene names repeat across seeds: keep the scenes of different runs apart.
            pooled[result["row"]] += [{**x, "scene": f"{index}/{x['scene']}"} for x in result["records"]]
    kinds = sorted({x["defect"] for row in rows for x in pooled[row]} - {"normal", "colour"})
    print("\nBy defect kind, seen + unseen, objects of every run pooled (AUROC of that kind's odd objects against all "
          "normal objects; per-scene mean in brackets):\n")
    print("| row | colour | geometric | " + " | ".join(kinds) + " |")
    print("|---|---|---|" + "---|" * len(kinds))
    for row in rows:
        m = metrics_of([{**x, "split": "all"} for x in pooled[row]])
        cells = [f"{m.get('all/' + k + '/auroc', float('nan')):.3f} ({m.get('all/' + k + '/scene_mean_auroc', float('nan')):.3f})"
                 for k in ["colour", "geometric", *kinds]]
        print(f"| {row} | " + " | ".join(cells) + " |")
    for row in rows:
        m = metrics_of([{**x, "split": "all"} for x in pooled[row]])
        print(f"odd objects pooled ({row}, {len(having[row])} runs): "
              + ", ".join(f"{k} {m.get('all/' + k + '/odd', 0)}" for k in ["colour", "geometric", *kinds]))
        break
    if "full" in rows:
        print("\nfull minus each row, run by run (mean difference, runs full wins / runs with both rows): object AUROC "
              "seen, unseen, and geometric / colour defects of both splits:\n")
        print("| full minus | seen | unseen | geometric | colour |")
        print("|---|---|---|---|---|")
        for row in rows:
            if row == "full":
                continue
            pairs = [(next(r for r in run if r["row"] == "full"), next(r for r in run if r["row"] == row)) for run in runs
                     if {"full", row} <= {r["row"] for r in run}]
            cells = []
            for key in ("seen-test/all/auroc", "unseen-test/all/auroc", "all/geometric/auroc", "all/colour/auroc"):
                def value(result: dict[str, Any], key: str = key) -> float:
                    if key.startswith("all/"):
                        return metrics_of([{**x, "split": "all"} for x in result["records"]])[key]
                    return result["metrics"][key]
                differences = [value(a) - value(b) for a, b in pairs]
                cells.append(f"{np.mean(differences):+.3f} ({sum(d > 0 for d in differences)}/{len(differences)})")
            print(f"| {row} | " + " | ".join(cells) + " |")
    corr_rows = [row for row in rows if "seen-test/corr_top1" in having[row][0]["metrics"]]
    if corr_rows:
        print("\nEq. 5 correspondences on the test scenes (top-1 right within one crop cell / a right one among the "
              "top k / chance of a random top-1), seen / unseen:\n")
        print("| row | top-1 | top-k hit | chance |")
        print("|---|---|---|---|")
        for row in corr_rows:
            m = [g["metrics"] for g in having[row]]
            print(f"| {row} | " + " | ".join(f"{_cell([x[f'seen-test/corr_{k}'] for x in m])} / "
                                             f"{_cell([x[f'unseen-test/corr_{k}'] for x in m])}"
                                             for k in ("top1", "hit_k", "chance")) + " |")


def main() -> None:
    args = parse_args()
    if args.summarize:
        print_tables([load_run(spec) for spec in args.summarize])
        return
    args.preset, args.synthetic, trainer = load_preset(args.config)
    args.epochs = args.epochs or int(trainer.get("max_epochs", 16))
    results = run(args)
    _save(args, results)
    print_tables([results])


if __name__ == "__main__":
    main()
