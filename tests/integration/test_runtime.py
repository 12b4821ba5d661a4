"""Install-level behaviour: public import paths, ``info()``, the set-up scripts CI runs, and the
default validation cadence of our models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_ecosystem_style_imports_are_lazy() -> None:
    """``from anomalib_3d.data import Real3DAD`` / ``from anomalib_3d.models import IMRNet`` work,
    and ``import anomalib_3d`` alone imports neither torch nor anomalib (it runs at interpreter start)."""
    code = (
        "import sys, anomalib_3d\n"
        "assert 'torch' not in sys.modules and 'anomalib' not in sys.modules, sorted(m for m in sys.modules if m.startswith(('torch', 'anomalib.')))\n"
        "from anomalib_3d.data import Real3DAD, AnomalyShapeNet, MVTec3DPointCloud, Synthetic3D, ZeroShot3D, PointCloudBatch\n"
        "from anomalib_3d.models import IMRNet, PointAD, PointCloudModelMixin\n"
        "from anomalib.data import AnomalibDataModule\n"
        "from anomalib.models import AnomalibModule\n"
        "assert issubclass(Real3DAD, AnomalibDataModule) and issubclass(Synthetic3D, AnomalibDataModule)\n"
        "assert issubclass(IMRNet, AnomalibModule) and issubclass(PointAD, PointCloudModelMixin)\n"
        "import anomalib.models as am\n"
        "assert am.IMRNet is IMRNet\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_unknown_names_raise_attribute_error() -> None:
    import anomalib_3d.data
    import anomalib_3d.models

    with pytest.raises(AttributeError, match="NoSuchModel"):
        anomalib_3d.models.NoSuchModel  # noqa: B018
    with pytest.raises(AttributeError, match="NoSuchData"):
        anomalib_3d.data.NoSuchData  # noqa: B018


def test_info_reports_backends() -> None:
    import importlib.util

    import anomalib_3d

    info = anomalib_3d.info()
    assert info["anomalib_3d"] == anomalib_3d.__version__
    assert info["ops_backends"][0] == "torch"
    has_torch_cluster = importlib.util.find_spec("torch_cluster") is not None
    assert ("torch_cluster" in info["ops_backends"]) == has_torch_cluster
    for name in ("scipy", "pykdtree", "fpsample"):
        assert name in info["ops_backends"]
    assert info["cuda"] is False or isinstance(info["ops_backends_cuda"], list)


def test_ci_runs_the_readme_test_command_in_a_fresh_environment() -> None:
    """CI must prove a fresh machine: .ci/run is the README's test command, which deletes and
    recreates its venv, installs torch-cluster and checks a non-editable wheel install."""
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci
    readme = (REPO / "README.md").read_text()
    assert "`bash scripts/test.sh`" in readme and "`bash scripts/demo.sh`" in readme
    test_sh = (REPO / "scripts" / "test.sh").read_text()
    assert "setup.sh --fresh --torch-cluster" in test_sh
    assert "check_wheel.sh" in test_sh
    setup = (REPO / "scripts" / "setup.sh").read_text()
    # Only torch-cluster is built without isolation (it compiles against the installed torch).
    lines = [line for line in setup.splitlines() if "--no-build-isolation" in line and not line.lstrip().startswith("#")]
    assert lines and all("torch-cluster" in line for line in lines), lines
    pyproject = (REPO / "pyproject.toml").read_text()
    dependencies = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert "torch-cluster" not in dependencies, "torch-cluster must stay an optional extra"


def _count_validation_passes(
    check_val_every_n_epoch: int, max_epochs: int, root: Path, tmp_path: Path, argv: list[str]
) -> int:
    from anomalib.engine import Engine
    from lightning.pytorch.callbacks import Callback

    from anomalib_3d.data.datamodules.real3d_ad import Real3DAD
    from anomalib_3d_plugins.imrnet import IMRNet

    class CountValidation(Callback):
        passes = 0

        def on_validation_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
            type(self).passes += 1

    counter = CountValidation()
    model = IMRNet(
        num_points=256, num_groups=16, group_size=16, embed_dim=32, tokenizer_width=32, encoder_depth=1,
        decoder_depth=2, feature_layers=(1, 2), num_heads=2, template_size=128, evaluator=False, visualizer=False,
    )
    datamodule = Real3DAD(root=root, category="airplane", train_batch_size=3, eval_batch_size=5)
    engine = Engine(
        accelerator="cpu", devices=1, max_epochs=max_epochs, check_val_every_n_epoch=check_val_every_n_epoch,
        default_root_dir=tmp_path / "run", logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[counter],
    )
    old_argv = sys.argv
    sys.argv = ["anomalib", *argv]
    try:
        engine.fit(model=model, datamodule=datamodule)
    finally:
        sys.argv = old_argv
    return counter.passes


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(
    ("every", "argv", "expected"),
    [
        (1, [], 1),  # Lightning's default: once, after the last epoch
        (2, [], 2),  # an explicit cadence is honoured (epochs 2 and 4)
        (1, ["--trainer.check_val_every_n_epoch", "1"], 4),  # an explicit 1 on the command line too
    ],
)
def test_default_validation_cadence(real3d_root: Path, tmp_path: Path, every: int, argv: list[str], expected: int) -> None:
    assert _count_validation_passes(every, 4, real3d_root, tmp_path, argv) == expected
