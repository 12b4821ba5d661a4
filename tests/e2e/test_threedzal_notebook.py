"""The 3DzAL notebook executes headless at a tiny size and shows pseudo-anomalies and heatmaps."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_threedzal_notebook_runs_headless(run_notebook, tmp_path: Path) -> None:  # noqa: ANN001
    outputs = run_notebook("threedzal.ipynb", THREEDZAL_NB_SIZE="tiny", THREEDZAL_NB_ROOT=str(tmp_path / "synthetic"),
                           OMP_NUM_THREADS="1")
    text = "".join(o.get("text", "") for o in outputs)
    assert "size: tiny" in text and "btf_baseline" in text and "3DzAL" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # interest map, pseudo-anomalies, heatmaps
