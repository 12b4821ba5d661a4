"""The Odd-One-Out notebook executes headless at the tiny size: scenes with boxes, a tiny Engine run,
the object-score table, the scene pictures and the object AUROC."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


@pytest.mark.slow
def test_odd_one_out_notebook_runs_headless(run_notebook, tmp_path: Path) -> None:  # noqa: ANN001
    outputs = run_notebook("odd_one_out.ipynb", ODD_ONE_OUT_NB_SIZE="tiny", ODD_ONE_OUT_NB_ROOT=str(tmp_path / "scenes"),
                           ODD_ONE_OUT_NB_RESULTS=str(tmp_path / "results"), OMP_NUM_THREADS="1")
    text = "".join(o.get("text", "") for o in outputs)
    assert "size: tiny" in text
    assert re.search(r"object AUROC \(Evaluator\): \d\.\d{3}", text)
    assert re.search(r"object AUROC \(sklearn, from the table\): \d\.\d{3}", text)
    # The tiny set has 2 seen + 2 unseen test scenes: one picture each from the visualizer, on disk.
    written = re.search(r"SceneVisualizer wrote (\d+) pictures", text)
    assert written and int(written.group(1)) == 4
    assert len(list((tmp_path / "results").rglob("images/**/*.png"))) == 4
    # Shown inline: the ground-truth scene and two scenes with predicted scores.
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
    # The score table is shown (an HTML DataFrame).
    assert any("rank in scene" in o.get("data", {}).get("text/html", "") for o in outputs)
