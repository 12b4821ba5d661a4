"""The PointAD and data-tour notebooks execute headless (tiny sizes, synthetic data) and show pictures.

(The IMRNet notebook has its own test in ``test_imrnet_e2e.py``: it needs a tiny-size switch.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_pointad_notebook_runs_headless(monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel inherits our environment; MPLBACKEND=Agg (set for the test session) would
    # replace Jupyter's inline backend and plt.show() would then draw nothing.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(REPO / "notebooks" / "pointad.ipynb", as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO)}})
    client.execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the notebook shows no picture"


@pytest.mark.slow
def test_data_tour_notebook_runs_headless(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("ANOMALIB3D_TOUR_ROOT", str(tmp_path))
    notebook = nbformat.read(REPO / "notebooks" / "data_tour.ipynb", as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    assert "clouds: 4" in text and "padded on demand" in text
    assert "BTF (FPFH)" in text and "Reg3DAD" in text, text[-2000:]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2
