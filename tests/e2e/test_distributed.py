"""Distributed training is Lightning's: two CPU processes (gloo) must give the test metrics of one.

Under DDP each rank trains on its shard of the training set, so whatever a model accumulates from
the training data (IMRNet's template bank and score statistics, memory banks) must be gathered
across ranks. To compare exactly, learned models run with a learning rate of 0 (the weights stay at
their seeded initialisation on every rank; gradient averaging is Lightning's and not under test):
then any difference in the metrics comes from state that was not gathered, or from scores that
depend on which other clouds share a batch or a rank.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import sphere, write_ascii_pcd  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ANOMALIB = Path(sys.executable).with_name("anomalib")
METRIC_ROW = re.compile(r"│\s+((?:image|point|pixel)_\w+)\s+│\s+([-+0-9.eE]+|nan)\s+│")

TINY_IMRNET = [
    "--model", "IMRNet", "--model.num_points", "512", "--model.num_groups", "32", "--model.group_size", "16",
    "--model.embed_dim", "32", "--model.tokenizer_width", "32", "--model.encoder_depth", "1",
    "--model.decoder_depth", "2", "--model.feature_layers", "[1,2]", "--model.num_heads", "2",
    "--model.template_size", "256", "--model.learning_rate", "0",
]

# Metric tolerance per model. The memory-bank models are deterministic and must match exactly.
# IMRNet's batch-norm running statistics come from rank 0's shard under CPU DDP (SyncBatchNorm needs
# GPUs: `--trainer.sync_batchnorm true` there), so it is held to 0.01; before its training state was
# gathered the two runs differed by 0.25 in image AUROC. Both runs start from the same weights only
# because `--seed_everything` is applied (anomalib_3d.runtime.seed): anomalib 2.7 alone ignores it,
# and two unseeded networks once differed here by 0.021 in point AUPRO.
TOLERANCE = {"IMRNet": 1e-2}

MODELS = {
    "IMRNet": TINY_IMRNET,
    "BTF": ["--model", "BTF"],
    "PatchCore3D": ["--model", "PatchCore3D"],
    "Reg3DAD": ["--model", "Reg3DAD"],
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 training spheres, 4 good and 4 bulged test spheres (even counts: no rank gets padding)."""
    root = tmp_path_factory.mktemp("ddp") / "data"
    for i in range(4):
        write_ascii_pcd(root / "ball" / "train" / f"{i}_template.pcd", sphere(600, i))
        write_ascii_pcd(root / "ball" / "test" / f"{10 + i}_good.pcd", sphere(600, 10 + i))
        points = sphere(600, 20 + i)
        labels = (points[:, 2] > 0.7).astype(int)
        points[labels == 1] *= 1.3
        stem = f"{20 + i}_bulge"
        write_ascii_pcd(root / "ball" / "test" / f"{stem}.pcd", points)
        (root / "ball" / "gt").mkdir(parents=True, exist_ok=True)
        np.savetxt(root / "ball" / "gt" / f"{stem}.txt", np.c_[points, labels], fmt="%.6f %.6f %.6f %d")
    return root


def run_cli(model_args: list[str], data_root: Path, out: Path, processes: int) -> dict[str, float]:
    args = [
        str(ANOMALIB), "train", *model_args, "--data", "Real3DAD", "--data.root", str(data_root),
        "--data.category", "ball", "--data.train_batch_size", "2", "--data.eval_batch_size", "2",
        "--trainer.max_epochs", "2", "--trainer.accelerator", "cpu", "--trainer.devices", str(processes),
        "--trainer.enable_progress_bar", "false", "--seed_everything", "0", "--default_root_dir", str(out),
    ]
    if processes > 1:
        args += ["--trainer.strategy", "ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = {name: float(value) for name, value in METRIC_ROW.findall(result.stdout)}
    assert {"image_AUROC", "point_AUROC"} <= set(metrics), result.stdout[-3000:]
    return metrics


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(MODELS))
def test_ddp_two_cpu_processes_match_one(model: str, dataset: Path, tmp_path: Path) -> None:
    single = run_cli(MODELS[model], dataset, tmp_path / "single", processes=1)
    distributed = run_cli(MODELS[model], dataset, tmp_path / "ddp", processes=2)
    assert all(np.isfinite(v) for v in single.values()), single
    assert distributed.keys() == single.keys()
    for name, value in single.items():
        assert distributed[name] == pytest.approx(value, abs=TOLERANCE.get(model, 1e-5)), (name, single, distributed)
