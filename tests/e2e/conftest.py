"""Shared end-to-end fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_notebook(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[dict]]:
    """Execute ``notebooks/<name>`` headless from the repository root with extra environment
    variables; return every code cell's outputs and fail on any error output."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    def run(name: str, timeout: int = 600, **env: str) -> list[dict]:
        # The kernel inherits our environment; MPLBACKEND=Agg (set for the test session) would
        # replace Jupyter's inline backend and plt.show() would then draw nothing.
        monkeypatch.delenv("MPLBACKEND", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        notebook = nbformat.read(REPO / "notebooks" / name, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cell.outputs = []
        nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(REPO)}}).execute()
        outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        errors = [o for o in outputs if o.get("output_type") == "error"]
        assert not errors, errors[0].get("evalue")
        return outputs

    return run
