"""Faults during work (issue #31), the quick part: real processes killed at random moments,
processes sharing a root, broken / foreign / incompatible checkpoints, a full or unwritable
results folder, a cloud over budget, a signal during a run.

The named-error cases also generate the "Faults during work" section of ``docs/bad_inputs.md``
(``UPDATE_DOCS=1 pytest tests/integration/test_faults.py`` rewrites it, a plain run checks it).
Slow, process-driving runs (SIGTERM during a coreset, two CLI runs, read-only and full results
folders, resume equality, a 10⁷-point cloud) are in ``tests/e2e/test_faults_e2e.py``.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from doubles.doc_tables import DOC, case_dirs, doc_message, table_head

from anomalib_3d.errors import (
    CloudTooLargeError,
    CorruptCheckpointError,
    ForeignCheckpointError,
    IncompatibleCheckpointError,
    MissingCheckpointError,
    OutputWriteError,
    PointCloudError,
    ResultsFolderError,
)
from anomalib_3d.runtime.files import FileLock, atomic_write, write_atomic
from anomalib_3d.runtime.signals import RunInterrupted, announcement, stop_on_signals

FAULTS_HEADING = "## Faults during work"
FORK = multiprocessing.get_context("fork")

#: A small generation: two categories, 2 + 1 + 2 samples each, 512 points.
GENERATION = {
    "categories": ["cup", "gear"],
    "num_train": 2,
    "num_test_good": 1,
    "num_test_per_defect": 1,
    "defect_types": ["bulge", "hole"],
    "num_points": 512,
    "progress": False,
    "num_workers": 0,
}


def tree_digest(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (folders by their files)."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _generate(root: Path) -> None:
    from anomalib_3d.data.synthetic import generate_synthetic_dataset

    generate_synthetic_dataset(root, **GENERATION)


def _generate_in_child(root: Path) -> None:
    """Target of a forked child that the test may kill. tqdm's write lock is a semaphore shared with
    forked children: a child killed while holding it (drawing its progress bar) would leave the
    test's own next progress bar waiting forever (it happened once in CI). The child takes a lock
    of its own first."""
    import threading

    import tqdm.auto
    import tqdm.std

    lock = threading.RLock()
    tqdm.std.tqdm.set_lock(lock)
    tqdm.auto.tqdm.set_lock(lock)
    _generate(root)


# ----------------------------------------------------------------------------------------------
# atomic writes and the lock
# ----------------------------------------------------------------------------------------------
def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "table.csv"
    write_atomic(target, "old\n")
    with pytest.raises(RuntimeError, match="half-way"), atomic_write(target, "w") as handle:
        handle.write("new, half")
        raise RuntimeError("failed half-way")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]  # no temporary file left
    with atomic_write(target, "w") as handle:
        handle.write("new\n")
        assert target.read_text() == "old\n"  # readers see the old file until the rename
    assert target.read_text() == "new\n"


def _write_over_size_limit(target: str, limit: int, queue: multiprocessing.Queue) -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, write() fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        with atomic_write(target) as handle:
            for _ in range(64):
                handle.write(b"\xff" * 4096)
    except OutputWriteError as err:
        queue.put((type(err).__name__, str(err), err.__cause__.errno if err.__cause__ else None))
    else:
        queue.put(("no error", "", None))


def _size_limit_failure(tmp: Path) -> tuple[str, str, int | None]:
    """A process whose writes fail half-way (file-size limit; the disk-full path is the same
    ``OSError`` from ``write``): what :func:`atomic_write` raised."""
    target = tmp / "heatmap.png"
    target.write_bytes(b"complete old picture")
    queue = FORK.Queue()
    process = FORK.Process(target=_write_over_size_limit, args=(str(target), 10_000, queue))
    process.start()
    result = queue.get(timeout=60)
    process.join(timeout=60)
    assert target.read_bytes() == b"complete old picture"
    assert sorted(p.name for p in tmp.iterdir()) == ["heatmap.png"]  # the partial temporary file is gone
    return result


def test_a_write_failing_half_way_names_the_file_and_leaves_no_partial_file(tmp_path: Path) -> None:
    name, message, code = _size_limit_failure(tmp_path)
    assert name == "OutputWriteError", message
    assert code == errno.EFBIG
    assert str(tmp_path / "heatmap.png") in message and "no partial file" in message


def test_file_lock_excludes_a_second_holder_until_released(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lock_path = tmp_path / ".lock"
    first = FileLock(lock_path, "the test data")
    first.acquire()
    with pytest.raises(TimeoutError, match="still locked"):
        FileLock(lock_path, "the test data", timeout=0.3, poll=0.05).acquire()
    got_it = threading.Event()

    def take() -> None:
        with FileLock(lock_path, "the test data", poll=0.05):
            got_it.set()

    with caplog.at_level(logging.WARNING, logger="anomalib_3d.runtime.files"):
        waiter = threading.Thread(target=take)
        waiter.start()
        time.sleep(0.3)
        assert not got_it.is_set()  # still waiting
        first.release()
        waiter.join(timeout=10)
    assert got_it.is_set()
    assert "waiting for it to finish" in caplog.text


# ----------------------------------------------------------------------------------------------
# data generation killed at random moments, and two generators on one root
# ----------------------------------------------------------------------------------------------
def test_generation_killed_at_random_moments_never_leaves_a_partial_dataset(tmp_path: Path) -> None:
    """SIGKILL at 24 random moments of a generation: after each kill, whatever the manifest lists
    is complete and byte-identical to a clean run, and the next run completes the root
    byte-identically (it regenerates what was unfinished, never loads it)."""
    import json

    reference = tmp_path / "reference"
    start = time.perf_counter()
    _generate(reference)
    duration = time.perf_counter() - start
    expected = tree_digest(reference)
    rng = np.random.default_rng(31)
    stages = {"nothing yet": 0, "inside a category": 0, "between categories": 0, "finished": 0}
    for trial in range(24):
        root = tmp_path / f"trial{trial}"
        process = FORK.Process(target=_generate_in_child, args=(root,))
        process.start()
        process.join(timeout=float(rng.uniform(0.0, 1.2 * duration)))
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
        process.join()
        listed = json.loads((root / "manifest.json").read_text())["categories"] if (root / "manifest.json").is_file() else []
        partial = root.is_dir() and any(p.name.endswith(".partial") for p in root.iterdir())
        stage = ("finished" if len(listed) == len(GENERATION["categories"]) else "inside a category" if partial
                 else "between categories" if listed else "nothing yet")
        stages[stage] += 1
        digest = tree_digest(root) if root.is_dir() else {}
        for category in listed:  # a listed category is never partial
            mine = {k: v for k, v in digest.items() if k.startswith(f"{category}/")}
            theirs = {k: v for k, v in expected.items() if k.startswith(f"{category}/")}
            assert mine == theirs, f"trial {trial}: category {category} listed but not complete after the kill"
        _generate(root)
        assert tree_digest(root) == expected, f"trial {trial} ({stage}): the rerun differs from a clean run"
        assert not [p for p in root.rglob("*") if ".partial" in p.name]
    # The kills landed at different stages of the work.
    assert stages["inside a category"] >= 3 and stages["nothing yet"] + stages["between categories"] >= 1, stages


def _generate_counting(root: Path, report: Path) -> None:
    import anomalib_3d.data.synthetic.generator as generator

    logging.basicConfig(filename=str(report) + ".log", level=logging.WARNING, force=True)
    written = []
    original = generator._run_task

    def counting(task: tuple) -> None:
        written.append(task[3])
        original(task)

    generator._run_task = counting
    _generate_in_child(root)
    report.write_text(str(len(written)))


def test_two_processes_on_one_root_take_turns_and_reuse(tmp_path: Path) -> None:
    """Both wait while the test holds the root's lock; released, one writes everything, the other
    waits for it and then reuses the data (it writes no sample)."""
    from anomalib_3d.data.synthetic.generator import LOCK_NAME

    reference = tmp_path / "reference"
    _generate(reference)
    root = tmp_path / "shared"
    root.mkdir()
    reports = [tmp_path / "a.txt", tmp_path / "b.txt"]
    with FileLock(root / LOCK_NAME, "the test"):
        processes = [FORK.Process(target=_generate_counting, args=(root, r)) for r in reports]
        for process in processes:
            process.start()
        time.sleep(0.5)
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    written = sorted(int(r.read_text()) for r in reports)
    per_category = GENERATION["num_train"] + GENERATION["num_test_good"] + len(GENERATION["defect_types"])
    total = len(GENERATION["categories"]) * per_category
    assert written == [0, total], written
    assert tree_digest(root) == tree_digest(reference)
    logs = [Path(str(r) + ".log").read_text() for r in reports]
    assert all("waiting for it to finish" in log for log in logs), logs


def test_scene_generation_takes_the_lock_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scene generator's body runs only while holding ``<root>/.lock`` (the body itself is the
    generator's; here it only records when it ran)."""
    import anomalib_3d.data.synthetic.scenes as scenes

    ran = threading.Event()
    monkeypatch.setattr(scenes, "_generate_scenes_locked", lambda *args, **kwargs: ran.set())
    root = tmp_path / "scenes"
    root.mkdir()
    with FileLock(root / scenes.LOCK_NAME, "the test"):
        thread = threading.Thread(target=scenes.generate_scene_dataset, kwargs={"root": root})
        thread.start()
        time.sleep(0.5)
        assert not ran.is_set()  # waiting on the lock
    thread.join(timeout=60)
    assert ran.is_set()


# ----------------------------------------------------------------------------------------------
# signals
# ----------------------------------------------------------------------------------------------
def test_sigterm_raises_in_the_main_thread_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    reached = 0
    with pytest.raises(RunInterrupted) as info, stop_on_signals("a long loop"):
        for reached in range(10**9):  # noqa: B007 - a pure-Python loop the signal must break
            if reached == 1000:
                os.kill(os.getpid(), signal.SIGTERM)
    assert info.value.code == 128 + signal.SIGTERM
    assert str(info.value) == "stopped by SIGTERM during a long loop"
    assert reached < 10**6
    assert signal.getsignal(signal.SIGTERM) == before


def _generate_and_report(root: Path) -> None:
    _generate_in_child(root)


def test_sigterm_during_generation_stops_it_and_drops_the_unfinished_category(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    start = time.perf_counter()
    _generate(reference)
    duration = time.perf_counter() - start
    root = tmp_path / "stopped"
    process = FORK.Process(target=_generate_and_report, args=(root,))
    process.start()
    process.join(timeout=duration / 3)
    if not process.is_alive():
        pytest.skip("the generation finished before the signal could be sent")
    os.kill(process.pid, signal.SIGTERM)
    process.join(timeout=30)
    assert process.exitcode == 128 + signal.SIGTERM
    assert not [p for p in root.rglob("*") if ".partial" in p.name]  # nothing unfinished is left behind
    _generate(root)
    assert tree_digest(root) == tree_digest(reference)


@pytest.mark.parametrize("stage", ["train", "test"])
def test_sigterm_during_feature_extraction_or_testing_stops_the_run(
    tmp_path: Path, fitted: dict[str, Path], stage: str
) -> None:
    """BTF's training steps are its feature extraction; a real SIGTERM in either stage ends the
    run at once, writes nothing more, and leaves the handlers as they were."""
    from lightning.pytorch import Callback

    class SignalAtFirstBatch(Callback):
        def __init__(self) -> None:
            self.batches_after = 0

        def _maybe_signal(self, batch_idx: int) -> None:
            if batch_idx == 0:
                os.kill(os.getpid(), signal.SIGTERM)
            self.batches_after += 1

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            if stage == "train":
                self._maybe_signal(batch_idx)

        def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
            if stage == "test":
                self._maybe_signal(batch_idx)

    spy = SignalAtFirstBatch()
    before = signal.getsignal(signal.SIGTERM)
    engine = _engine(tmp_path / "results", callbacks=[spy])
    with pytest.raises(RunInterrupted, match=f"SIGTERM during {'fit' if stage == 'train' else 'test'}"):
        if stage == "train":
            engine.fit(model=_btf(), datamodule=_datamodule(fitted["data"]))
        else:
            engine.test(model=_btf(), datamodule=_datamodule(fitted["data"]), ckpt_path=fitted["btf"])
    assert spy.batches_after == 0  # the signal's own batch never ran
    assert signal.getsignal(signal.SIGTERM) == before
    assert not list((tmp_path / "results").rglob("*.ckpt")) and not list((tmp_path / "results").rglob(".*partial-*"))


def test_interrupted_pickles_for_worker_processes() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(RunInterrupted(signal.SIGTERM, "fit, epoch 2")))
    assert (error.signum, error.stage, error.code) == (signal.SIGTERM, "fit, epoch 2", 143)


# ----------------------------------------------------------------------------------------------
# checkpoints, results folder, cloud budget: named errors (these build the doc table)
# ----------------------------------------------------------------------------------------------
TINY_IMRNET = {
    "num_points": 256, "num_groups": 16, "group_size": 16, "gps_k": 8, "embed_dim": 32, "tokenizer_width": 32,
    "encoder_depth": 1, "decoder_depth": 1, "num_heads": 2, "drop_path_rate": 0.0, "feature_layers": (1,),
    "template_size": 128,
}


def _engine(root: Path, **kwargs: object):  # noqa: ANN202
    from anomalib.engine import Engine

    return Engine(default_root_dir=root, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                  enable_model_summary=False, **kwargs)


def _datamodule(root: Path):  # noqa: ANN202
    from anomalib_3d.data.datamodules.synthetic import Synthetic3D

    return Synthetic3D(root=root, category="cup", num_train=2, num_test_good=1, num_test_per_defect=1,
                       defect_types=["bulge"], num_points=512, train_batch_size=2, eval_batch_size=2, num_workers=0)


def _btf():  # noqa: ANN202
    from anomalib_3d_plugins.btf import BTF

    return BTF(feature_mode="fpfh", visualizer=False)


def _imrnet(**overrides: object):  # noqa: ANN202
    from anomalib_3d_plugins.imrnet import IMRNet

    return IMRNet(**{**TINY_IMRNET, **overrides}, visualizer=False)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A BTF and an IMRNet checkpoint on a tiny Synthetic3D split, and the split's root."""
    base = tmp_path_factory.mktemp("fitted")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    paths = {"data": base / "data", "base": base}
    for name, factory in (("btf", _btf), ("imrnet", _imrnet)):
        engine = _engine(base / "results", max_epochs=1)
        engine.fit(model=factory(), datamodule=_datamodule(paths["data"]))
        paths[name] = Path(engine.trainer.checkpoint_callback.best_model_path)
    yield paths
    torch.set_num_threads(threads)


def _test_with(fitted: dict[str, Path], ckpt: Path | str, factory: Callable = _btf) -> Callable[[], object]:
    def run() -> None:
        _engine(fitted["base"] / "results").test(model=factory(), datamodule=_datamodule(fitted["data"]), ckpt_path=ckpt)

    return run


def _truncated(tmp: Path, fitted: dict[str, Path]):  # noqa: ANN202
    source = fitted["btf"].read_bytes()
    path = tmp / "model.ckpt"
    path.write_bytes(source[: len(source) // 2])
    return _test_with(fitted, path), "model.ckpt"


def _empty(tmp: Path, fitted: dict[str, Path]):  # noqa: ANN202
    path = tmp / "model.ckpt"
    path.write_bytes(b"")
    return _test_with(fitted, path), "model.ckpt"


def _text_file(tmp: Path, fitted: dict[str, Path]):  # noqa: ANN202
    path = tmp / "notes.ckpt"
    path.write_text("not a checkpoint\n")
    return _test_with(fitted, path), "notes.ckpt"


def _folder(tmp: Path, fitted: dict[str, Path]):  # noqa: ANN202
    (tmp / "weights").mkdir()
    return _test_with(fitted, tmp / "weights"), "weights"


def _missing(tmp: Path, fitted: dict[str, Path]):  # noqa: ANN202
    return _test_with(fitted, tmp / "nowhere.ckpt"), "nowhere.ckpt"


def _last_without_run(tmp: Path, fitted: dict[str, Path]):  # noqa: ANN202
    def run() -> None:
        _engine(tmp / "results", max_epochs=2).fit(model=_imrnet(), datamodule=_datamodule(fitted["data"]), ckpt_path="last")

    return run, "IMRNet/Synthetic3D/cup"


def _other_model(tmp: Path, fitted: dict[str, Path]):  # noqa: ANN202
    del tmp
    return _test_with(fitted, fitted["imrnet"]), "model.ckpt"


def _other_model_unstamped(tmp: Path, fitted: dict[str, Path]):  # noqa: ANN202
    checkpoint = torch.load(fitted["imrnet"], map_location="cpu", weights_only=False)
    del checkpoint["anomalib_3d"]
    path = tmp / "old.ckpt"
    torch.save(checkpoint, path)
    return _test_with(fitted, path), "old.ckpt"


def _bare_state_dict(tmp: Path, fitted: dict[str, Path]):  # noqa: ANN202
    path = tmp / "pretrain.pth"
    torch.save({"base_model": {"encoder.weight": torch.zeros(2, 2)}}, path)
    return _test_with(fitted, path), "pretrain.pth"


def _newer_format(tmp: Path, fitted: dict[str, Path]):  # noqa: ANN202
    checkpoint = torch.load(fitted["btf"], map_location="cpu", weights_only=False)
    checkpoint["anomalib_3d"].update(format=2, version="9.0.0")
    path = tmp / "newer.ckpt"
    torch.save(checkpoint, path)
    return _test_with(fitted, path), "newer.ckpt"


def _other_settings(tmp: Path, fitted: dict[str, Path]):  # noqa: ANN202
    del tmp
    return _test_with(fitted, fitted["imrnet"], lambda: _imrnet(embed_dim=48)), "model.ckpt"


def _results_folder_is_a_file(tmp: Path, fitted: dict[str, Path]):  # noqa: ANN202
    (tmp / "results").write_text("a file where the results folder should be\n")

    def run() -> None:
        _engine(tmp / "results").fit(model=_btf(), datamodule=_datamodule(fitted["data"]))

    return run, "results"


def _results_disk_full(tmp: Path, fitted: dict[str, Path]):  # noqa: ANN202
    def run() -> None:
        free_mib = __import__("shutil").disk_usage(tmp).free / 2**20
        os.environ["ANOMALIB3D_MIN_FREE_MB"] = str(int(free_mib * 2))  # "needs" twice what is free
        try:
            _engine(tmp / "results").fit(model=_btf(), datamodule=_datamodule(fitted["data"]))
        finally:
            del os.environ["ANOMALIB3D_MIN_FREE_MB"]

    return run, "results"


def _huge_cloud(tmp: Path, fitted: dict[str, Path]):  # noqa: ANN202
    del fitted
    from anomalib_3d.data.dataclasses import PointCloudBatch
    from anomalib_3d.runtime.memory import check_cloud_sizes

    n = 10_000_000
    batch = PointCloudBatch(points=torch.zeros(n, 3), batch_index=torch.zeros(n, dtype=torch.long),
                            point_path=[str(tmp / "scan.pcd")])
    return (lambda: check_cloud_sizes(batch, _btf())), "scan.pcd"


@dataclass
class Fault:
    name: str
    what: str
    build: Callable[[Path, dict[str, Path]], tuple[Callable[[], object], str]]
    error: type[PointCloudError]
    match: str


FAULTS = [
    Fault("truncated", "`--ckpt_path` to a checkpoint cut in half (interrupted copy)", _truncated, CorruptCheckpointError, "truncated"),
    Fault("empty", "`--ckpt_path` to an empty file (save killed at once)", _empty, CorruptCheckpointError, "empty"),
    Fault("text", "`--ckpt_path` to a text file", _text_file, CorruptCheckpointError, "not a torch checkpoint"),
    Fault("folder", "`--ckpt_path` to a folder", _folder, CorruptCheckpointError, "is a folder"),
    Fault("missing", "`--ckpt_path` to a missing file", _missing, MissingCheckpointError, "does not exist"),
    Fault("last_without_run", "`--ckpt_path last` with no earlier run to resume", _last_without_run, MissingCheckpointError, "no last.ckpt"),
    Fault("other_model", "another model's checkpoint (IMRNet's, for BTF)", _other_model, ForeignCheckpointError, "written by IMRNet"),
    Fault("other_model_unstamped", "another model's checkpoint from before the stamp", _other_model_unstamped, ForeignCheckpointError, "shares none"),
    Fault("bare_state_dict", "pretrained weights (a bare state dict) as `--ckpt_path`", _bare_state_dict, ForeignCheckpointError, "not a Lightning checkpoint"),
    Fault("newer_format", "a checkpoint of a newer format of the same model", _newer_format, IncompatibleCheckpointError, "format 2"),
    Fault("other_settings", "the same model's checkpoint with other settings (IMRNet `embed_dim` 32 vs 48)", _other_settings, IncompatibleCheckpointError, "shapes differ"),
    Fault("results_file", "the results folder is a file", _results_folder_is_a_file, ResultsFolderError, "not writable"),
    Fault("results_full", "the results folder's disk has less room than the run needs", _results_disk_full, ResultsFolderError, "MiB free"),
    Fault("huge_cloud", "a 10⁷-point cloud (BTF's budget: 2·10⁶ points)", _huge_cloud, CloudTooLargeError, "10,000,000 points"),
]


def _run_fault(fault: Fault, tmp: Path, fitted: dict[str, Path]) -> PointCloudError:
    action, name = fault.build(tmp, fitted)
    with pytest.raises(fault.error, match=fault.match) as info:
        action()
    assert name in str(info.value), f"{fault.name}: the message does not name {name}: {info.value}"
    return info.value


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault_raises_its_named_error(tmp_path: Path, fitted: dict[str, Path], fault: Fault) -> None:
    _run_fault(fault, tmp_path, fitted)


def test_checkpoint_errors_come_before_the_model_is_touched(tmp_path: Path, fitted: dict[str, Path]) -> None:
    """A refused checkpoint leaves the model as built (nothing half-loaded)."""
    model = _imrnet(embed_dim=48)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(IncompatibleCheckpointError):
        _engine(tmp_path / "results").test(model=model, datamodule=_datamodule(fitted["data"]), ckpt_path=fitted["imrnet"])
    after = model.state_dict()
    assert [k for k in before if not torch.allclose(before[k], after[k], rtol=0, atol=0, equal_nan=True)] == []


def test_a_good_checkpoint_still_loads_and_is_stamped(tmp_path: Path, fitted: dict[str, Path]) -> None:
    stamp = torch.load(fitted["btf"], map_location="cpu", weights_only=False)["anomalib_3d"]
    assert stamp["model"] == "BTF" and stamp["format"] == 1
    results = _engine(tmp_path / "results").test(model=_btf(), datamodule=_datamodule(fitted["data"]), ckpt_path=fitted["btf"])
    assert 0.0 <= results[0]["image_AUROC"] <= 1.0


def test_cloud_budget_is_the_models_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    from anomalib_3d.data.dataclasses import PointCloudBatch
    from anomalib_3d.runtime.memory import DEFAULT_MAX_CLOUD_POINTS, check_cloud_sizes, cloud_budget

    class Small:
        max_cloud_points = 100

    batch = PointCloudBatch(points=torch.zeros(150, 3), batch_index=torch.tensor([0] * 50 + [1] * 100),
                            point_path=["a.pcd", "b.pcd"])
    check_cloud_sizes(batch, object())  # default budget: fine
    assert cloud_budget(object()) == DEFAULT_MAX_CLOUD_POINTS
    check_cloud_sizes(batch, Small())  # 100 points is within 100
    batch = PointCloudBatch(points=torch.zeros(151, 3), batch_index=torch.tensor([0] * 50 + [1] * 101),
                            point_path=["a.pcd", "b.pcd"])
    with pytest.raises(CloudTooLargeError, match="b.pcd: cloud has 101 points"):
        check_cloud_sizes(batch, Small())
    monkeypatch.setenv("ANOMALIB3D_MAX_CLOUD_POINTS", "0")
    check_cloud_sizes(batch, Small())  # switched off


def test_engine_workspace_guard_acts_for_our_models_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import anomalib.engine.engine as engine_module

    assert getattr(engine_module.create_versioned_dir, "__anomalib3d_guard__", False)  # armed by the import hook
    monkeypatch.setenv("ANOMALIB3D_MIN_FREE_MB", str(2**40))  # no disk has that much room
    with pytest.raises(ResultsFolderError, match="MiB free"):
        engine_module.create_versioned_dir(tmp_path / "results" / "BTF" / "Synthetic3D" / "cup")
    made = engine_module.create_versioned_dir(tmp_path / "results" / "Padim" / "MVTecAD" / "bottle")
    assert made.name == "v0"  # anomalib's own model: anomalib's behaviour


def test_results_folder_check_passes_on_a_writable_folder(tmp_path: Path) -> None:
    from anomalib_3d.runtime.workspace import check_results_folder

    assert check_results_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the probe is removed


# ----------------------------------------------------------------------------------------------
# the generated table
# ----------------------------------------------------------------------------------------------
#: Run-dependent parts of the fault messages (results paths, free space, sizes, version).
DOC_SUBSTITUTIONS = (
    (r"/\S*/fitted\d*/results/", "results/"),
    (r"\d+(\.\d+)? MiB free; this run needs about \d+ MiB", "N MiB free; this run needs about M MiB"),
    (r"\(\d+ bytes;", "(N bytes;"),
    (r"anomalib-3d \d+\.\d+\.\d+\S*\)", "anomalib-3d X)"),
)


def _doc_message(text: str, tmp: Path) -> str:
    return doc_message(text, tmp, DOC_SUBSTITUTIONS)


def faults_section(tmp_path: Path, fitted: dict[str, Path]) -> str:
    """The "Faults during work" section of docs/bad_inputs.md, from running every case."""
    from anomalib_3d.runtime.callback import RESUME_HINT

    lines = [
        FAULTS_HEADING,
        "",
        "Generated by `tests/integration/test_faults.py` (`UPDATE_DOCS=1 pytest tests/integration/test_faults.py`",
        "rewrites this section). What happens when a run is interrupted, shares its data with another run,",
        "meets a full disk, a broken checkpoint or a cloud far too large (`anomalib_3d.runtime`; README:",
        "\"Interruptions, concurrent runs and resuming\").",
        "",
        "Behaviours (no error):",
        "",
        "- **Killed at any moment (SIGKILL)** while `Synthetic3D` / the scene generator writes its cache: the next",
        "  run regenerates what is unfinished; the result is byte-identical to an uninterrupted run (tested at 24",
        "  random moments). Finished results files are complete: every writer writes a hidden temporary file,",
        "  `fsync`s it and renames it into place.",
        "- **Two processes, one root**: the second waits for the first (a lock file, `<root>/.lock`) and then",
        "  reuses its data; runs sharing a results folder get their own version folders (`v0`, `v1`).",
        "- **SIGTERM / Ctrl-C** (`docker stop`, Kubernetes, batch schedulers) at any stage, a coreset included:",
        "  the run stops within seconds with exit status 143 (130 for Ctrl-C) after printing",
        f"  `{announcement(signal.SIGTERM, 'fit (train), epoch 3', RESUME_HINT)}`",
        "- **Resume**: a fit stopped mid-way continues with `--ckpt_path last` and ends with the metrics of an",
        "  uninterrupted run at the same seed (IMRNet, ThreeDzAL, OddOneOut exactly; PointAD within 1e-5).",
        "",
        *table_head("fault"),
    ]
    for fault, tmp in case_dirs(tmp_path, FAULTS, "fault"):
        error = _run_fault(fault, tmp, fitted)
        lines.append(f"| {fault.what} | `{type(error).__name__}` | {_doc_message(str(error), tmp)} |")
    write_tmp = tmp_path / "write"
    write_tmp.mkdir()
    name, message, _ = _size_limit_failure(write_tmp)
    lines.append(f"| a results file whose write fails half-way (disk full, size limit) | `{name}` | {_doc_message(message, write_tmp)} |")
    return "\n".join(lines) + "\n"


def test_faults_table_is_up_to_date(tmp_path: Path, fitted: dict[str, Path]) -> None:
    """The section follows the bad-input table (``tests/unit/test_bad_inputs.py`` owns what is above it)."""
    section = faults_section(tmp_path, fitted)
    head, heading, tail = DOC.read_text().partition("\n" + FAULTS_HEADING)
    if os.environ.get("UPDATE_DOCS") == "1":
        DOC.write_text(head.rstrip("\n") + "\n\n" + section)
        head, heading, tail = DOC.read_text().partition("\n" + FAULTS_HEADING)
    assert heading, "docs/bad_inputs.md has no faults section: run with UPDATE_DOCS=1"
    assert (heading + tail)[1:] == section, "the faults section of docs/bad_inputs.md is out of date: run with UPDATE_DOCS=1"
