"""The benchmark scripts run from any folder against the installed package, and their shared
timing and memory helpers (``benchmarks/_common.py``) measure what they claim."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


def _common():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("benchmarks_common", BENCHMARKS / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peak_memory_sees_a_short_lived_allocation() -> None:
    import numpy as np

    common = _common()
    with common.PeakMemory() as memory:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched, then freed inside the step
        del block
    if memory.high_water_mark:
        assert 60 <= memory.peak < 200, memory.peak
    else:  # ru_maxrss growth: a lower bound
        assert memory.peak >= 0
    with common.PeakMemory() as idle:
        pass
    assert 0 <= idle.peak < 8, idle.peak


def test_time_call_counts_calls_and_measures_cpu() -> None:
    import time

    common = _common()
    calls = []

    def spin() -> None:
        calls.append(1)
        end = time.process_time() + 0.02
        while time.process_time() < end:
            pass

    timings = common.time_call(spin, 3)
    assert len(calls) == 4 and len(timings) == 3  # one warm-up call, untimed
    assert all(t.cpu >= 0.015 and t.wall >= t.cpu * 0.5 for t in timings)
    assert common.time_call(spin, 0) == [] and len(calls) == 5
    before = common.cpu_seconds()
    spin()
    assert common.cpu_seconds() - before >= 0.015


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_help_runs_from_another_folder(script: str, tmp_path: Path) -> None:
    """No ``sys.path`` or ``PYTHONPATH`` set-up: the package is installed, ``_common`` sits beside."""
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage" in out.stdout.lower()


def test_ablation_summary_joins_the_rows_of_one_seed_and_refuses_a_row_twice(tmp_path: Path) -> None:
    """``--summarize a.json+b.json``: rows of one seed written by two calls are one run, so the
    ``full minus`` table pairs them; a row twice in one run (or two seeds) is refused."""
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling _common
    try:
        spec = importlib.util.spec_from_file_location("odd_one_out_ablations", BENCHMARKS / "odd_one_out_ablations.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    import json

    (tmp_path / "a.json").write_text(json.dumps([{"row": "full", "seed": 1}, {"row": "baseline", "seed": 1}]))
    (tmp_path / "b.json").write_text(json.dumps([{"row": "no_attention", "seed": 1}]))
    (tmp_path / "c.json").write_text(json.dumps([{"row": "no_attention", "seed": 2}]))
    joined = module.load_run(f"{tmp_path / 'a.json'}+{tmp_path / 'b.json'}")
    assert [row["row"] for row in joined] == ["full", "baseline", "no_attention"]
    with pytest.raises(ValueError, match="full"):
        module.load_run(f"{tmp_path / 'a.json'}+{tmp_path / 'a.json'}")
    with pytest.raises(ValueError, match="seeds"):
        module.load_run(f"{tmp_path / 'a.json'}+{tmp_path / 'c.json'}")
