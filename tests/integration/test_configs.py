"""Every shipped config parses with anomalib's own CLI (short names resolve, arguments exist)."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("config", sorted((CONFIGS / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_experiment_configs_parse(config: Path, print_config) -> None:  # noqa: ANN001
    out = print_config(["train", "--config", str(config)])
    assert "model:" in out and "data:" in out


@pytest.mark.parametrize("config", sorted((CONFIGS / "data").glob("*.yaml")), ids=lambda p: p.stem)
def test_data_configs_parse(config: Path, print_config) -> None:  # noqa: ANN001
    out = print_config(["train", "--model", "IMRNet", "--config", str(config)])
    assert "class_path: anomalib_3d.data." in out


@pytest.mark.parametrize("config", sorted((CONFIGS / "models").glob("*.yaml")), ids=lambda p: p.stem)
def test_model_configs_parse(config: Path, print_config, tmp_path: Path) -> None:  # noqa: ANN001
    out = print_config(["train", "--config", str(config), "--data", "Real3DAD", "--data.root", str(tmp_path)])
    assert "anomalib_3d_plugins" in out
