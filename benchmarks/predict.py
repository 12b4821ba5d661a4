"""Predict wall time per scan of every point model at about 4k and 100k points (README "Inspect new scans").

Each model is fitted with anomalib's ``Engine`` on 3 Synthetic3D cups of 4096 points (3DzAL: 64 x 64
organized scans), then ``Engine.predict(ckpt_path=..., data_path=<folder>)`` scores the test parts
of the cup generated at each size: clouds of 4096 and 100,000 points; 3DzAL: 136² and 672² scans,
whose part holds about 4k and 100k points once the support plane is removed. Per scan it reports the
wall time from the start to the end of the predict run divided by the scans (reading, preprocessing,
model, post-processing, heatmap PNG, scored PLY, CSV) and, in brackets, the model step alone
(``predict_step``). Models: BTF as in ``configs/experiments/btf_synthetic.yaml``, the others from
``configs/models/`` (IMRNet and 3DzAL their CPU presets; PointAD with the tiny random ViT, as CLIP
weights are not downloaded).

Run ``OMP_NUM_THREADS=1 python benchmarks/predict.py`` (``--models BTF PatchCore3D`` for some).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
MODELS = ("BTF", "PatchCore3D", "Reg3DAD", "IMRNet", "PointAD", "ThreeDzAL")
#: label -> (points of an unorganized cloud, side of an organized scan)
SIZES = {"4k": (4096, 136), "100k": (100_000, 672)}


def _config(path: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / path).read_text())["model"]["init_args"]


def build_model(name: str, data_root: Path) -> Any:  # noqa: ANN401
    """The model ``name`` as configured for the table."""
    from anomalib_3d.models import BTF, IMRNet, PatchCore3D, PointAD, Reg3DAD, ThreeDzAL

    if name == "BTF":
        return BTF(**_config("configs/experiments/btf_synthetic.yaml"))
    if name == "PatchCore3D":
        return PatchCore3D(**_config("configs/models/patchcore3d.yaml"))
    if name == "Reg3DAD":
        return Reg3DAD(**_config("configs/models/reg3dad.yaml"))
    if name == "IMRNet":
        return IMRNet(**_config("configs/models/imrnet_small.yaml"))
    if name == "PointAD":
        auxiliary = {"dataset": "synthetic3d", "root": str(data_root), "categories": ["cup"], "split": "test",
                     "options": {"num_train": 1, "num_test_good": 2, "num_test_per_defect": 1,
                                 "defect_types": ["bulge", "hole"], "num_points": 4096}}
        return PointAD(**{**_config("configs/models/pointad.yaml"), "backbone": "pointad-tiny-vit", "pretrained": None,
                          "max_epochs": 1, "auxiliary_num_workers": 0, "auxiliary": auxiliary})
    irrelevant = [{"dataset": "synthetic3d", "root": str(data_root), "categories": ["bottle"], "split": "train",
                   "options": {"num_train": 3, "num_test_good": 1, "num_test_per_defect": 1, "defect_types": ["bulge"],
                               "layout": "mvtec3d", "image_size": [64, 64]}}]
    return ThreeDzAL(**{**_config("configs/models/threedzal_small.yaml"), "max_epochs": 1,
                        "task_irrelevant": irrelevant})


def cups(data_root: Path, layout: str, points: int, side: int) -> Any:  # noqa: ANN401
    from anomalib_3d.data.datamodules.synthetic import Synthetic3D

    size = {"num_points": points} if layout == "real3d" else {"image_size": (side, side)}
    return Synthetic3D(root=data_root, category="cup", layout=layout, num_train=3, num_test_good=1,
                       num_test_per_defect=1, defect_types=["bulge", "hole"], train_batch_size=4, eval_batch_size=2,
                       num_workers=0, **size)


def _clock() -> Any:  # noqa: ANN401
    from lightning.pytorch import Callback

    class Clock(Callback):
        """A trainer callback: its batch hooks run before the model's (post-processor, pictures, files)."""

        def on_predict_start(self, trainer: Any, pl_module: Any) -> None:  # noqa: ANN401
            self.start, self.step, self.points = time.perf_counter(), 0.0, []

        def on_predict_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int,  # noqa: ANN401
                                   dataloader_idx: int = 0) -> None:
            self.batch_start = time.perf_counter()

        def on_predict_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,  # noqa: ANN401
                                 batch_idx: int, dataloader_idx: int = 0) -> None:
            self.step += time.perf_counter() - self.batch_start
            self.points += batch.num_points.tolist()

        def on_predict_end(self, trainer: Any, pl_module: Any) -> None:  # noqa: ANN401
            self.seconds = time.perf_counter() - self.start

    return Clock()


def measure(name: str, work: Path) -> dict[str, Any]:
    """Fit ``name``, then time predict at each size; ``{"fit_s", <label>: (s/scan, model s/scan, points)}``."""
    import lightning
    from anomalib.engine import Engine

    lightning.seed_everything(0)
    layout = "mvtec3d" if name == "ThreeDzAL" else "real3d"
    data_root = work / "data"
    model = build_model(name, data_root)
    start = time.perf_counter()
    engine = Engine(default_root_dir=work / f"fit_{name}", accelerator="cpu", devices=1, logger=False,
                    enable_progress_bar=False, enable_model_summary=False)
    engine.fit(model, datamodule=cups(data_root, layout, 4096, 64))
    row: dict[str, Any] = {"fit_s": time.perf_counter() - start}
    for label, (points, side) in SIZES.items():
        scans = cups(data_root, layout, points, side)
        scans.setup()
        first = Path(scans.test_data.samples.image_path[0])
        folder = first.parent if layout == "real3d" else first.parents[2]  # mvtec3d: test/<defect>/xyz/*.tiff
        clock = _clock()
        predictor = Engine(default_root_dir=work / f"predict_{name}_{label}", accelerator="cpu", devices=1,
                           logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[clock])
        predictor.predict(build_model(name, data_root), ckpt_path=engine.trainer.checkpoint_callback.best_model_path,
                          data_path=folder)
        count = len(clock.points)
        row[label] = (clock.seconds / count, clock.step / count, clock.points)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="anomalib3d_predict_"))
    print("| model | fit s | ≈ 4k points: s / scan (model step) | ≈ 100k points: s / scan (model step) | points per scan |")
    print("|---|---:|---:|---:|---|")
    for name in args.models:
        row = measure(name, work)
        cells = [f"{row[label][0]:.2f} ({row[label][1]:.2f})" for label in SIZES]
        sizes = " / ".join(f"{min(row[label][2]):,}–{max(row[label][2]):,}" for label in SIZES)
        print(f"| {name} | {row['fit_s']:.1f} | {' | '.join(cells)} | {sizes} |", flush=True)


if __name__ == "__main__":
    main()
