"""Every notebook executes headless at its tiny size and shows what it promises.

One convention shrinks a notebook for the test suite, read by its first code cell:

* ``ANOMALIB3D_NOTEBOOK_SIZE=tiny`` — the smallest data and training that still run every cell
  (unset: the size the notebook documents);
* ``ANOMALIB3D_NOTEBOOK_ROOT=<folder>`` — every file the notebook writes (data, results) goes under
  it (unset: the notebook's own defaults).

The fast tests check that every notebook in ``notebooks/`` is executed here, reads no other
environment variable, and stores no output that names a machine path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
CONVENTION = {"ANOMALIB3D_NOTEBOOK_SIZE", "ANOMALIB3D_NOTEBOOK_ROOT"}


def execute(name: str, root: Path, monkeypatch: pytest.MonkeyPatch, timeout: int) -> list[dict]:
    """Run ``notebooks/<name>`` from the repository root at the tiny size, data under ``root``;
    return every code cell's outputs, failing on an error output."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # The kernel inherits our environment; MPLBACKEND=Agg (set for the test session) would replace
    # Jupyter's inline backend and plt.show() would then draw nothing.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("ANOMALIB3D_NOTEBOOK_SIZE", "tiny")
    monkeypatch.setenv("ANOMALIB3D_NOTEBOOK_ROOT", str(root))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors[0].get("evalue")
    return outputs


def _text(outputs: list[dict]) -> str:
    return "".join(o.get("text", "") for o in outputs)


def _pictures(outputs: list[dict]) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs)


def check_data_tour(outputs: list[dict], root: Path) -> None:
    text = _text(outputs)
    assert "clouds: 4" in text and "padded on demand" in text
    assert "BTF (FPFH)" in text and "Reg3DAD" in text, text[-2000:]
    assert "part_018.ply:" in text and "anomaly_score" in text  # predict: the scored cloud, read by Open3D
    assert any("CorruptFileError" in o.get("data", {}).get("text/html", "") for o in outputs)  # and its table
    assert _pictures(outputs) == 2
    assert any(root.glob("real3d_*")), "the dataset was not written under ANOMALIB3D_NOTEBOOK_ROOT"


def check_imrnet(outputs: list[dict], root: Path) -> None:
    text = _text(outputs)
    assert "tiny run" in text and "I-AUROC" in text
    assert _pictures(outputs) >= 1
    assert any((root / "imrnet_notebook_results").rglob("*.png")), "no heatmap PNG under the root"


def check_odd_one_out(outputs: list[dict], root: Path) -> None:
    text = _text(outputs)
    assert "size: tiny" in text
    assert re.search(r"object AUROC \(Evaluator\): \d\.\d{3}", text)
    assert re.search(r"object AUROC \(sklearn, from the table\): \d\.\d{3}", text)
    # The tiny set has 2 seen + 2 unseen test scenes: one picture each from the visualizer, on disk.
    written = re.search(r"SceneVisualizer wrote (\d+) pictures", text)
    assert written and int(written.group(1)) == 4
    assert len(list((root / "results").rglob("images/**/*.png"))) == 4
    # Shown inline: the ground-truth scene and two scenes with predicted scores.
    assert _pictures(outputs) == 3
    # The score table is shown (an HTML DataFrame).
    assert any("rank in scene" in o.get("data", {}).get("text/html", "") for o in outputs)


def check_pointad(outputs: list[dict], root: Path) -> None:
    text = _text(outputs)
    assert "point only" in text and "RGB fused" in text
    assert _pictures(outputs) == 2, "the notebook shows no picture"
    assert any((root / "results").rglob("*.png"))


def check_threedzal(outputs: list[dict], root: Path) -> None:
    text = _text(outputs)
    assert "size: tiny" in text and "btf_baseline" in text and "3DzAL" in text
    assert _pictures(outputs) == 3  # interest map, pseudo-anomalies, heatmaps
    assert any((root / "synthetic").iterdir()), "the scans were not written under ANOMALIB3D_NOTEBOOK_ROOT"


#: notebook → (timeout s per cell, what its outputs must show)
CHECKS: dict[str, tuple[int, Callable[[list[dict], Path], None]]] = {
    "data_tour.ipynb": (300, check_data_tour),
    "imrnet_synthetic.ipynb": (300, check_imrnet),
    "odd_one_out.ipynb": (600, check_odd_one_out),
    "pointad.ipynb": (600, check_pointad),
    "threedzal.ipynb": (600, check_threedzal),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_notebook_runs_headless(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    timeout, check = CHECKS[name]
    outputs = execute(name, tmp_path, monkeypatch, timeout)
    check(outputs, tmp_path)


def _code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_every_notebook_is_executed() -> None:
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} == set(CHECKS)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_notebook_reads_only_the_convention(name: str) -> None:
    """The environment variables a notebook reads are the shared two (none is required)."""
    source = "\n".join(_source(c) for c in _code_cells(NOTEBOOKS / name))
    read = set(re.findall(r"os\.environ(?:\.get)?[\[(]\s*['\"](\w+)['\"]", source))
    read |= set(re.findall(r"os\.getenv\(\s*['\"](\w+)['\"]", source))
    read.discard("MPLBACKEND")  # set, not read, by the PointAD notebook (its default backend)
    assert read <= CONVENTION, f"{name} reads {sorted(read - CONVENTION)}"


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_stored_outputs_name_no_machine_path(name: str) -> None:
    """A notebook's stored outputs show no absolute path of the machine that ran it."""
    machine_path = re.compile(r"(?<![\w.])/(?:tmp|work|root|home|Users)/")
    for index, cell in enumerate(_code_cells(NOTEBOOKS / name)):
        for output in cell.get("outputs", []):
            texts = [output.get("text", "")] + [v for k, v in output.get("data", {}).items() if k.startswith("text/")]
            for text in texts:
                text = "".join(text) if isinstance(text, list) else text
                assert not machine_path.search(text), f"{name} code cell {index}: {machine_path.search(text)[0]}"
