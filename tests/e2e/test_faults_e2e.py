"""Faults during work (issue #31), driving real processes: SIGTERM during a long greedy coreset,
two ``anomalib train`` runs on one data root, read-only and full results folders, a truncated
checkpoint through the CLI, resume equality for the trained models, and a 10⁷-point cloud.

The quick cases (SIGKILL during generation, locks, named checkpoint errors) are in
``tests/integration/test_faults.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ANOMALIB = Path(sys.executable).with_name("anomalib")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}
TINY_DATA = ["--data", "Synthetic3D", "--data.category", "cup", "--data.num_train", "2", "--data.num_test_good", "1",
             "--data.num_test_per_defect", "1", "--data.defect_types", "[bulge]", "--data.num_points", "512",
             "--data.num_workers", "0"]


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".partial-" in p.name or p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------------------------
# SIGTERM during a long coreset
# ----------------------------------------------------------------------------------------------
CORESET_CHILD = """
import sys
from pathlib import Path
from lightning.pytorch import Callback
from anomalib.engine import Engine
from anomalib_3d.data.datamodules.synthetic import Synthetic3D
from anomalib_3d_plugins.btf import BTF

class Marker(Callback):
    def on_validation_start(self, trainer, pl_module):  # the memory bank's coreset runs right after
        print("CORESET-STARTS", flush=True)

root = Path(sys.argv[1])
data = Synthetic3D(root=root / "data", category="cup", num_train=2, num_test_good=1, num_test_per_defect=1,
                   defect_types=["bulge"], num_points=8192, train_batch_size=2, eval_batch_size=2, num_workers=0)
# Per-point FPFH features of 2 x 8192 points, 90 % kept: ~15k greedy iterations (tens of seconds).
model = BTF(feature_mode="fpfh", use_grid=False, coreset_ratio=0.9)
Engine(default_root_dir=root / "results", accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
       callbacks=[Marker()]).train(model=model, datamodule=data)
print("FINISHED", flush=True)
"""


def test_sigterm_during_a_long_coreset_stops_within_seconds(tmp_path: Path) -> None:
    """The BTF case of the issue: Lightning's own handler only sets a flag read between training
    steps, so the coreset ran on for minutes. Now the process exits with 143 within seconds,
    says where it stopped, and leaves no checkpoint and no temporary file."""
    script = tmp_path / "child.py"
    script.write_text(CORESET_CHILD)
    process = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "CORESET-STARTS" in line:
                break
        else:
            pytest.fail("the child ended before its coreset: " + process.stderr.read()[-3000:])  # type: ignore[union-attr]
        time.sleep(1.0)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert took < 30, f"stopped {took:.0f} s after SIGTERM"
    assert "FINISHED" not in out
    assert "SIGTERM received during fit" in err and "stopping now" in err, err[-3000:]
    results = tmp_path / "results"
    assert not list(results.rglob("*.ckpt")), "a checkpoint was written by a run stopped before its bank was built"
    assert not _temporaries(results)
    assert not [p for p in (tmp_path / "data").rglob("*") if p.name.endswith(".partial")]


# ----------------------------------------------------------------------------------------------
# two CLI runs on one data root (and one results folder)
# ----------------------------------------------------------------------------------------------
def test_two_cli_runs_on_one_root_both_succeed_on_identical_data(tmp_path: Path) -> None:
    """A two-point sweep started at once: exactly one process writes the dataset (the other waits
    on the lock or finds it done), both finish with the same metrics, each in its own version folder."""
    data, results = tmp_path / "data", tmp_path / "results"
    command = [str(ANOMALIB), "train", "--model", "BTF", "--model.feature_mode", "fpfh", *TINY_DATA,
               "--data.root", str(data), "--trainer.accelerator", "cpu", "--default_root_dir", str(results)]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=tmp_path)
            for _ in range(2)]
    logs = [run.communicate(timeout=900)[0] for run in runs]
    for run, log in zip(runs, logs, strict=True):
        assert run.returncode == 0, log[-4000:]
    generated = ["synthetic real3d: 100%" in log for log in logs]
    assert sum(generated) == 1, [log[-2000:] for log in logs]
    versions = sorted(p.parent.parent.parent.name for p in results.rglob("weights/lightning/model.ckpt"))
    assert versions == ["v0", "v1"], versions

    def metrics(log: str) -> list[str]:
        return [line.split()[1:3] for line in log.splitlines() if "image_AUROC" in line or "point_AUROC" in line]

    assert metrics(logs[0]) == metrics(logs[1]) and metrics(logs[0])
    assert not [p for p in data.rglob("*") if ".partial" in p.name]


# ----------------------------------------------------------------------------------------------
# read-only and full results folders
# ----------------------------------------------------------------------------------------------
def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || "
                            "mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True, check=False)
    return probe.returncode == 0


def _results_folder_command(kind: str, results: Path, command: list[str]) -> list[str]:
    """Run ``command`` with ``results`` read-only / on a full disk (a private tmpfs mount in a user
    namespace; a plain ``chmod`` for a read-only folder when not running as root)."""
    results.mkdir()
    if kind == "read-only" and os.geteuid() != 0:
        results.chmod(0o555)
        return command
    if not _unshare_works():
        pytest.skip("needs `unshare -rm` (user + mount namespaces) to mount a read-only or tiny file system")
    options = "ro,size=1m" if kind == "read-only" else "size=256k"
    script = f'mount -t tmpfs -o {options} tmpfs "{results}" && exec "$@"'
    return ["unshare", "-rm", "sh", "-c", script, "sh", *command]


@pytest.mark.parametrize("kind", ["read-only", "full"])
def test_unwritable_results_folder_is_refused_before_any_work(tmp_path: Path, kind: str) -> None:
    data, results = tmp_path / "data", tmp_path / "results"
    command = [str(ANOMALIB), "train", "--model", "BTF", "--model.feature_mode", "fpfh", *TINY_DATA,
               "--data.root", str(data), "--trainer.accelerator", "cpu", "--default_root_dir", str(results)]
    try:
        done = subprocess.run(_results_folder_command(kind, results, command), capture_output=True, text=True,
                              env=ENV, cwd=tmp_path, timeout=600, check=False)
    finally:
        results.chmod(0o755)
    log = done.stdout + done.stderr
    assert done.returncode != 0
    assert "ResultsFolderError" in log, log[-4000:]
    assert ("not writable" if kind == "read-only" else "MiB free") in log, log[-4000:]
    assert not data.exists(), "data was generated although the results folder was unusable"


# ----------------------------------------------------------------------------------------------
# a truncated checkpoint through the CLI
# ----------------------------------------------------------------------------------------------
def test_truncated_checkpoint_through_the_cli_is_a_named_error(tmp_path: Path) -> None:
    from anomalib.engine import Engine

    from anomalib_3d.data.datamodules.synthetic import Synthetic3D
    from anomalib_3d_plugins.btf import BTF

    data = Synthetic3D(root=tmp_path / "data", category="cup", num_train=2, num_test_good=1, num_test_per_defect=1,
                       defect_types=["bulge"], num_points=512, num_workers=0)
    engine = Engine(default_root_dir=tmp_path / "results", accelerator="cpu", devices=1, logger=False)
    engine.fit(model=BTF(feature_mode="fpfh", visualizer=False), datamodule=data)
    source = Path(engine.trainer.checkpoint_callback.best_model_path).read_bytes()
    truncated = tmp_path / "copied.ckpt"
    truncated.write_bytes(source[: len(source) * 2 // 3])
    command = [str(ANOMALIB), "test", "--model", "BTF", "--model.feature_mode", "fpfh", *TINY_DATA,
               "--data.root", str(tmp_path / "data"), "--trainer.accelerator", "cpu",
               "--default_root_dir", str(tmp_path / "results"), "--ckpt_path", str(truncated)]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=600, check=False)
    log = done.stdout + done.stderr
    assert done.returncode != 0
    # The traceback may be drawn by rich (anomalib's CLI): compare the text with its line breaks folded.
    folded = " ".join(log.split())
    assert "CorruptCheckpointError: " in folded, log[-3000:]
    assert "copied.ckpt: is truncated" in folded
    assert "Invalid argument" not in log and "PytorchStreamReader" not in log  # never the raw torch.load failure


# ----------------------------------------------------------------------------------------------
# resume equality
# ----------------------------------------------------------------------------------------------
def _imrnet_case(root: Path):  # noqa: ANN202
    from anomalib_3d.data.datamodules.synthetic import Synthetic3D
    from anomalib_3d_plugins.imrnet import IMRNet

    tiny = {"num_points": 512, "num_groups": 32, "group_size": 16, "gps_k": 8, "embed_dim": 32, "tokenizer_width": 32,
            "encoder_depth": 1, "decoder_depth": 2, "num_heads": 2, "drop_path_rate": 0.0, "feature_layers": (1, 2),
            "template_size": 256, "learning_rate": 2e-3}
    return (lambda: IMRNet(**tiny, visualizer=False),
            lambda: Synthetic3D(root=root, category="cup", num_train=4, num_test_good=2, num_test_per_defect=1,
                                defect_types=["bulge", "hole"], num_points=1024, train_batch_size=2, eval_batch_size=4,
                                num_workers=0),
            0.0)


def _pointad_case(root: Path):  # noqa: ANN202
    from anomalib_3d.data.datamodules.synthetic import Synthetic3D
    from anomalib_3d_plugins.pointad.lightning_model import PointAD

    auxiliary = {"dataset": "synthetic3d", "root": str(root / "aux"), "categories": ["cup"], "split": "test",
                 "options": {"num_train": 1, "num_test_good": 2, "num_test_per_defect": 1,
                             "defect_types": ["bulge", "hole"], "num_points": 1024}}

    def model():  # noqa: ANN202
        torch.manual_seed(0)
        return PointAD(backbone="pointad-tiny-vit", pretrained=None, max_epochs=3, num_views=3, smoothing_k=8,
                       organized_grid_size=48, auxiliary_grid_size=48, auxiliary=auxiliary, visualizer=False)

    # Its frozen-feature cache is rebuilt after a resume: features encoded in other batch
    # compositions differ in the last float bits (metrics within 1e-5).
    return (model,
            lambda: Synthetic3D(root=root / "data", category="gear", num_train=1, num_test_good=2,
                                num_test_per_defect=1, defect_types=["bulge"], num_points=1024, train_batch_size=2,
                                eval_batch_size=2, num_workers=0),
            1e-5)


def _threedzal_case(root: Path):  # noqa: ANN202
    from anomalib_3d.data.datamodules.zero_shot import ZeroShot3D
    from anomalib_3d_plugins.threedzal import ThreeDzAL

    options = {"num_train": 3, "num_test_good": 2, "num_test_per_defect": 1, "defect_types": ["bulge", "hole"],
               "layout": "mvtec3d", "image_size": [64, 64]}
    source = {"dataset": "synthetic3d", "root": str(root), "options": options}

    def model():  # noqa: ANN202
        torch.manual_seed(0)
        return ThreeDzAL.small(grid_size=64, max_epochs=3, max_task_irrelevant=4, feature_dim=8, pointnet_centroids=4,
                               positives_per_sample=8, blur_sigma=1.0, fpfh_radius=0.012, fpfh_normal_k=8,
                               visualizer=False)

    return (model,
            lambda: ZeroShot3D(fit_sources=[{**source, "categories": ["cup"], "split": "train"}],
                               task_irrelevant_sources=[{**source, "categories": ["bottle", "bowl"], "split": "train"}],
                               test_sources=[{**source, "categories": ["gear"], "split": "test"}],
                               grid_size=None, train_batch_size=2, eval_batch_size=2),
            0.0)


def _odd_one_out_case(root: Path):  # noqa: ANN202
    from anomalib_3d.data.datamodules.multiview_scenes import MultiViewScenes
    from anomalib_3d_plugins.odd_one_out import OddOneOut

    import yaml

    config = yaml.safe_load((REPO / "configs/experiments/odd_one_out_synthetic.yaml").read_text())
    arguments = {**config["model"]["init_args"], "grid_shape": [24, 24, 8], "voxel_size": 0.06,
                 "grid_center": [0.0, 0.0, 0.12], "feature_dim": 8, "projection_dim": 8, "crop_size": 4,
                 "num_blocks": 1, "token_dim": 16, "topk": 5, "render_size": [12, 12], "num_samples": 16,
                 "render_epochs": 1, "teacher_epochs": 1, "visualizer": False}
    data = dict(config["data"]["init_args"], root=str(root))
    data["synthetic"] = dict(data["synthetic"], categories=["nut", "cup"], unseen_categories=["ring"], num_train=4,
                             num_test=2, num_test_unseen=2, image_size=48, points_per_object=1500)

    def model():  # noqa: ANN202
        torch.manual_seed(0)
        return OddOneOut(**arguments)

    return model, lambda: MultiViewScenes(**data), 0.0


@pytest.mark.parametrize("case", ["IMRNet", "PointAD", "ThreeDzAL", "OddOneOut"])
def test_fit_stopped_mid_way_resumes_to_the_same_metrics(tmp_path: Path, case: str, one_thread: None) -> None:
    """Stop a 3-epoch fit with a real SIGTERM in its second epoch, resume with ``ckpt_path="last"``
    (what ``--ckpt_path last`` passes): the test metrics equal an uninterrupted fit's at the same seed."""
    from anomalib.engine import Engine
    from lightning.pytorch import Callback, seed_everything

    from anomalib_3d.runtime.signals import RunInterrupted

    build = {"IMRNet": _imrnet_case, "PointAD": _pointad_case, "ThreeDzAL": _threedzal_case,
             "OddOneOut": _odd_one_out_case}[case]
    make_model, make_data, tolerance = build(tmp_path / "data")

    class StopInSecondEpoch(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            if trainer.current_epoch == 1 and batch_idx == 0:
                os.kill(os.getpid(), signal.SIGTERM)

    def engine(results: Path, *callbacks: Callback) -> Engine:
        return Engine(default_root_dir=results, accelerator="cpu", devices=1, max_epochs=3, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))

    seed_everything(0)
    model, data = make_model(), make_data()
    uninterrupted = engine(tmp_path / "full")
    uninterrupted.fit(model=model, datamodule=data)
    expected = uninterrupted.test(model=model, datamodule=data, verbose=False)[0]

    seed_everything(0)
    handler_before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RunInterrupted):
        engine(tmp_path / "resumed", StopInSecondEpoch()).fit(model=make_model(), datamodule=make_data())
    assert signal.getsignal(signal.SIGTERM) == handler_before  # nothing of the stopped run stays installed
    lasts = list((tmp_path / "resumed").rglob("last.ckpt"))
    assert len(lasts) == 1 and torch.load(lasts[0], map_location="cpu", weights_only=False)["epoch"] == 0

    seed_everything(0)
    model, data = make_model(), make_data()
    resumed = engine(tmp_path / "resumed")
    resumed.fit(model=model, datamodule=data, ckpt_path="last")
    assert resumed.trainer.current_epoch == 3
    got = resumed.test(model=model, datamodule=data, verbose=False)[0]
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert abs(got[name] - value) <= tolerance, (name, got[name], value)


# ----------------------------------------------------------------------------------------------
# a 10^7-point cloud
# ----------------------------------------------------------------------------------------------
HUGE_CHILD = """
import resource, sys, time
from pathlib import Path
from anomalib.engine import Engine
from anomalib_3d.data.datamodules import Real3DAD
from anomalib_3d.errors import CloudTooLargeError
from anomalib_3d_plugins.btf import BTF

root = Path(sys.argv[1])
data = Real3DAD(root=root / "data", category="part", eval_batch_size=1, num_workers=0)
engine = Engine(default_root_dir=root / "results", accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
model = BTF(feature_mode="fpfh", visualizer=False)
start = time.monotonic()
try:  # the validation split is the test split: the fit's validation meets the big cloud
    engine.train(model=model, datamodule=data)
except CloudTooLargeError as error:
    print("REFUSED", f"{time.monotonic() - start:.1f}", error, flush=True)
print("MAXRSS_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, flush=True)
"""


def test_ten_million_point_cloud_stops_at_once_with_a_named_error(tmp_path: Path) -> None:
    from anomalib_3d.data.io import write_pcd

    rng = np.random.default_rng(0)
    part = tmp_path / "data" / "part"
    for i in range(2):
        write_pcd(part / "train" / f"{i}_template.pcd", rng.normal(size=(2048, 3)).astype(np.float32), binary=True)
    write_pcd(part / "test" / "0_good.pcd", rng.normal(size=(2048, 3)).astype(np.float32), binary=True)
    write_pcd(part / "test" / "1_good.pcd", rng.normal(size=(10_000_000, 3)).astype(np.float32), binary=True)
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(HUGE_CHILD))
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, env=ENV,
                          cwd=tmp_path, timeout=600, check=False)
    log = done.stdout + done.stderr
    refused = [line for line in done.stdout.splitlines() if line.startswith("REFUSED")]
    assert refused, log[-4000:]
    _, seconds, message = refused[0].split(" ", 2)
    assert "1_good.pcd" in message and "10,000,000 points" in message and "subsample" in message
    assert float(seconds) < 120  # a tiny fit and the reader's time for 120 MB, not a model's hours
    rss = float(next(line for line in done.stdout.splitlines() if line.startswith("MAXRSS_MB")).split()[1])
    assert rss < 3000, f"peak RSS {rss:.0f} MB"  # the cloud itself is 120 MB; no model ran on it
    print(f"10^7 points refused {seconds} s after the fit started, peak RSS {rss:.0f} MB")  # noqa: T201
