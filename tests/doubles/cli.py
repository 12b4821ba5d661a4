"""anomalib's own CLI in a subprocess, run as a user runs it: one thread, no display, offline."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

ANOMALIB = Path(sys.executable).with_name("anomalib")

#: One CPU process, no logger: what every end-to-end CLI test trains with.
CPU_TRAINER = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.logger", "false"]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI run: one OpenMP / MKL thread, matplotlib without a display, no hub."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1",
            **extra}


def mvtec3d_data(root: Path, category: str = "bagel") -> list[str]:
    """anomalib's own ``MVTec3D`` datamodule on ``root``, in-process loading, batches of 2."""
    return ["--data", "MVTec3D", "--data.root", str(root), "--data.category", category, "--data.num_workers", "0",
            "--data.train_batch_size", "2", "--data.eval_batch_size", "2"]


def run_anomalib(args: list[str], cwd: Path, timeout: float = 1200) -> subprocess.CompletedProcess:
    """``anomalib <args>`` in ``cwd``; stdout and stderr captured, the exit status not checked."""
    return subprocess.run([str(ANOMALIB), *args], cwd=cwd, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


_METRIC_ROW = re.compile(r"(image_AUROC|image_AP|point_AUROC|point_AUPRO)\s*[│|]\s*([^\s│|]+)")


def printed_metrics(log: str) -> dict[str, float]:
    """The metric table anomalib prints after testing, as numbers (``nan`` stays ``nan``)."""
    return {name: float(value) for name, value in _METRIC_ROW.findall(log)}


def assert_finite_metrics(log: str, names: tuple[str, ...]) -> dict[str, float]:
    """Every metric of ``names`` printed, finite and in ``[0, 1]``; returns the printed metrics."""
    metrics = printed_metrics(log)
    for name in names:
        assert name in metrics, log[-3000:]
        assert math.isfinite(metrics[name]) and 0.0 <= metrics[name] <= 1.0, (name, metrics)
    return metrics
