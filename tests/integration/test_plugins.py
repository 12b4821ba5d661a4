"""Plugin discovery: entry points → anomalib's CLI, get_model and list_plugins()."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

DATAMODULES = ["Real3DAD", "AnomalyShapeNet", "MVTec3DPointCloud", "Synthetic3D", "ZeroShot3D"]
MODELS = ["IMRNet", "PointAD"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, env=env, check=False)


def test_import_is_cheap() -> None:
    """The .pth hook runs at every interpreter start: it must not import torch or anomalib."""
    code = "import sys, anomalib_3d; print('torch' in sys.modules, 'anomalib' in sys.modules)"
    out = _run([sys.executable, "-c", code], Path.cwd())
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_hook_is_armed_at_interpreter_start() -> None:
    code = "import sys; print(any(type(f).__name__ == '_PluginTriggerFinder' for f in sys.meta_path))"
    out = _run([sys.executable, "-c", code], Path.cwd())
    assert out.stdout.strip() == "True", "anomalib_3d_plugins_hook.pth is not installed: run pip install -e ."


def test_list_plugins_reports_every_entry_point() -> None:
    import anomalib_3d

    infos = {(i.kind, i.name): i for i in anomalib_3d.list_plugins()}
    for name in DATAMODULES:
        assert infos[("datamodules", name)].status == "loaded", infos[("datamodules", name)].error
    for name in MODELS:
        assert ("models", name) in infos


def test_anomalib_get_model_resolves_plugins() -> None:
    import anomalib.models
    import anomalib_3d

    loaded = [i.name for i in anomalib_3d.list_plugins() if i.kind == "models" and i.status == "loaded"]
    assert loaded, "no model plugin loaded"
    for name in loaded:
        cls = getattr(anomalib.models, name)
        assert anomalib.models._get_model_class_by_name(name.lower()) is cls  # noqa: SLF001


def test_broken_plugin_is_reported_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    from anomalib_3d import plugins

    broken = EntryPoint(name="Broken3D", value="anomalib_3d_no_such_module:Nope", group=plugins.GROUPS["models"])
    real = plugins._entry_points  # noqa: SLF001
    monkeypatch.setattr(plugins, "_entry_points", lambda kind: [*real(kind), broken] if kind == "models" else real(kind))
    monkeypatch.setattr(plugins, "_loaded_kinds", set())
    monkeypatch.setattr(plugins, "_results", {})
    infos = {i.name: i for i in plugins.load_plugins("models")}
    assert infos["Broken3D"].status == "failed"
    assert "anomalib_3d_no_such_module" in infos["Broken3D"].error
    import anomalib.models  # noqa: F401 - anomalib still imports and works

    assert hasattr(anomalib.models, "Patchcore")


def test_anomalib_executable_resolves_our_short_names(tmp_path: Path) -> None:
    """The unmodified ``anomalib`` executable, in a fresh interpreter: only the .pth hook helps it."""
    out = _run(
        [str(Path(sys.executable).with_name("anomalib")), "fit", "--model", "Patchcore", "--data", "Real3DAD", "--data.root", str(tmp_path),
         "--data.category", "airplane", "--print_config"],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "class_path: anomalib_3d.data.Real3DAD" in out.stdout
    assert "category: airplane" in out.stdout


@pytest.mark.parametrize("datamodule", DATAMODULES[:4])
def test_anomalib_cli_resolves_short_datamodule_names(
    datamodule: str, tmp_path: Path, print_config,  # noqa: ANN001
) -> None:
    category = "bottle" if datamodule == "Synthetic3D" else "c"
    out = print_config(
        ["fit", "--model", "Patchcore", "--data", datamodule, "--data.root", str(tmp_path),
         "--data.category", category],
    )
    assert f"class_path: anomalib_3d.data.{datamodule}" in out


def test_anomalib_cli_resolves_model_plugins(tmp_path: Path, print_config) -> None:  # noqa: ANN001
    import anomalib_3d

    loaded = [i for i in anomalib_3d.list_plugins() if i.kind == "models" and i.status == "loaded"]
    assert loaded, "no model plugin loaded"
    for info in loaded:
        out = print_config(
            ["fit", "--model", info.name, "--data", "Real3DAD", "--data.root", str(tmp_path), "--data.category", "c"],
        )
        assert f"class_path: {info.target.split(':')[0]}" in out


@pytest.mark.parametrize(
    "first_import",
    ["import anomalib_3d.data.synthetic", "from anomalib_3d_plugins.imrnet import IMRNet", "import anomalib_3d.models"],
)
def test_plugins_load_when_our_own_module_imports_anomalib_first(first_import: str) -> None:
    """anomalib imported from inside one of our half-initialised modules: the load is deferred, not failed."""
    code = (
        f"{first_import}\n"
        "import anomalib.models, anomalib.data\n"
        "import anomalib_3d.plugins as p\n"
        "bad = [i for i in p.list_plugins(load=False) if i.status != 'loaded']\n"
        "print('BAD', bad)\n"
        "print('OK', hasattr(anomalib.data, 'Real3DAD'), hasattr(anomalib.models, 'IMRNet'))\n"
    )
    out = _run([sys.executable, "-c", code], Path.cwd())
    assert "BAD []" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "OK True True" in out.stdout
