"""The 3DzAL notebook executes headless at a tiny size and shows pseudo-anomalies and heatmaps."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_threedzal_notebook_runs_headless(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # MPLBACKEND=Agg (set for the test session) would replace Jupyter's inline backend.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("THREEDZAL_NB_SIZE", "tiny")
    monkeypatch.setenv("THREEDZAL_NB_ROOT", str(tmp_path / "synthetic"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(REPO / "notebooks" / "threedzal.ipynb", as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "size: tiny" in text and "btf_baseline" in text and "3DzAL" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # interest map, pseudo-anomalies, heatmaps
