"""The PointAD and data-tour notebooks execute headless (tiny sizes, synthetic data) and show pictures.

(The IMRNet notebook has its own test in ``test_imrnet_e2e.py``: it needs a tiny-size switch.)
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_pointad_notebook_runs_headless(run_notebook) -> None:  # noqa: ANN001
    outputs = run_notebook("pointad.ipynb")
    assert any("image/png" in o.get("data", {}) for o in outputs), "the notebook shows no picture"


@pytest.mark.slow
def test_data_tour_notebook_runs_headless(run_notebook, tmp_path: Path) -> None:  # noqa: ANN001
    outputs = run_notebook("data_tour.ipynb", timeout=300, ANOMALIB3D_TOUR_ROOT=str(tmp_path))
    text = "".join(o.get("text", "") for o in outputs)
    assert "clouds: 4" in text and "padded on demand" in text
    assert "BTF (FPFH)" in text and "Reg3DAD" in text, text[-2000:]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2
