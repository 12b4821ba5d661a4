"""Every shipped config parses with anomalib's own CLI (short names resolve, arguments exist)."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _print_config(args: list[str], capsys: pytest.CaptureFixture) -> str:
    from anomalib.cli.cli import AnomalibCLI

    with pytest.raises(SystemExit) as exit_info:
        AnomalibCLI(args=[*args, "--print_config"])
    out = capsys.readouterr()
    assert exit_info.value.code in (0, None), out.err[-3000:]
    return out.out


@pytest.mark.parametrize("config", sorted((CONFIGS / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_experiment_configs_parse(config: Path, capsys: pytest.CaptureFixture) -> None:
    out = _print_config(["train", "--config", str(config)], capsys)
    assert "model:" in out and "data:" in out


@pytest.mark.parametrize("config", sorted((CONFIGS / "data").glob("*.yaml")), ids=lambda p: p.stem)
def test_data_configs_parse(config: Path, capsys: pytest.CaptureFixture) -> None:
    out = _print_config(["train", "--model", "IMRNet", "--config", str(config)], capsys)
    assert "anomalib_3d.data.datamodules" in out


@pytest.mark.parametrize("config", sorted((CONFIGS / "models").glob("*.yaml")), ids=lambda p: p.stem)
def test_model_configs_parse(config: Path, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    out = _print_config(["train", "--config", str(config), "--data", "Real3DAD", "--data.root", str(tmp_path)], capsys)
    assert "anomalib_3d_plugins" in out
