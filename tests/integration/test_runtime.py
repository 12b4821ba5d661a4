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


# ----------------------------------------------------------------------------------------------
# anomalib's `--seed_everything`, applied (anomalib 2.7 parses it but never seeds)
# ----------------------------------------------------------------------------------------------
TINY_IMRNET_FLAGS = [
    "--model", "IMRNet", "--model.num_points", "256", "--model.num_groups", "16", "--model.group_size", "16",
    "--model.embed_dim", "32", "--model.tokenizer_width", "32", "--model.encoder_depth", "1",
    "--model.decoder_depth", "2", "--model.feature_layers", "[1,2]", "--model.num_heads", "2",
    "--model.visualizer", "false",
]


def _cli_model(tmp_path: Path, *seed_flags: str):  # noqa: ANN202
    from anomalib.cli.cli import AnomalibCLI

    cli = AnomalibCLI(
        args=["fit", *TINY_IMRNET_FLAGS, "--data", "Real3DAD", "--data.root", str(tmp_path), "--trainer.logger",
              "false", "--default_root_dir", str(tmp_path), *seed_flags],
        run=False,
    )
    return cli.model.state_dict(), cli.config["fit"]["seed_everything"]


def _same(a: dict, b: dict) -> bool:
    import torch

    def equal(x: torch.Tensor, y: torch.Tensor) -> bool:  # unset thresholds are NaN in both
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        return torch.equal(x, y) if not x.is_floating_point() else bool(((x == y) | (x.isnan() & y.isnan())).all())

    return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)


@pytest.fixture
def lightning_seed_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Lightning's seed_everything sets these in the process: restored after the test."""
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    monkeypatch.delenv("PL_SEED_WORKERS", raising=False)
    return monkeypatch


@pytest.mark.usefixtures("lightning_seed_environment")
def test_cli_seed_everything_gives_the_same_initial_weights(tmp_path: Path) -> None:
    from anomalib.cli.cli import AnomalibCLI

    assert getattr(AnomalibCLI.before_instantiate_classes, "__anomalib3d_seed__", False)  # armed by the hook
    first, seed = _cli_model(tmp_path, "--seed_everything", "3")
    assert seed == 3
    again, _ = _cli_model(tmp_path, "--seed_everything", "3")
    other, _ = _cli_model(tmp_path, "--seed_everything", "4")
    assert _same(first, again)
    assert not _same(first, other)
    unseeded_a, kept = _cli_model(tmp_path, "--seed_everything", "false")
    unseeded_b, _ = _cli_model(tmp_path, "--seed_everything", "false")
    assert kept is False
    assert not _same(unseeded_a, unseeded_b)


def test_cli_default_seed_is_drawn_and_recorded(tmp_path: Path, lightning_seed_environment: pytest.MonkeyPatch) -> None:
    """anomalib's default `True` ("a random seed"): a drawn seed, written into the configuration so
    the saved config.yaml rebuilds the same run; a DDP child rank takes its parent's."""
    monkeypatch = lightning_seed_environment
    drawn_state, drawn = _cli_model(tmp_path)
    assert isinstance(drawn, int) and not isinstance(drawn, bool)
    replayed, _ = _cli_model(tmp_path, "--seed_everything", str(drawn))
    assert _same(drawn_state, replayed)
    monkeypatch.setenv("PL_GLOBAL_SEED", "11")
    _, inherited = _cli_model(tmp_path)
    assert inherited == 11


@pytest.mark.usefixtures("lightning_seed_environment")
def test_cli_seed_leaves_other_models_alone() -> None:
    import torch
    from jsonargparse import Namespace

    from anomalib_3d.runtime.seed import apply_cli_seed

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    config = Namespace(subcommand="train", train=Namespace(
        seed_everything=0, model=Namespace(class_path="anomalib.models.Padim", init_args=Namespace())))
    assert apply_cli_seed(config, "train") is None
    assert torch.equal(torch.rand(3), expected)  # the random stream was not reset
    config.train.model.class_path = "anomalib_3d_plugins.imrnet.IMRNet"
    assert apply_cli_seed(config, "train") == 0
