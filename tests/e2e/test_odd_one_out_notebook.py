"""The Odd-One-Out notebook executes headless at the tiny size: scenes with boxes, a tiny Engine run,
the object-score table, the scene pictures and the object AUROC."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_odd_one_out_notebook_runs_headless(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("ODD_ONE_OUT_NB_SIZE", "tiny")
    monkeypatch.setenv("ODD_ONE_OUT_NB_ROOT", str(tmp_path / "scenes"))
    monkeypatch.setenv("ODD_ONE_OUT_NB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(REPO / "notebooks" / "odd_one_out.ipynb", as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors[0].get("evalue") if errors else ""
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
