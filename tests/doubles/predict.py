"""For the predict tests: folders of new scans as other tools write them (Open3D, numpy, tifffile, PIL;
none of our writers) — every supported format, an organized scan with its RGB, bad files — and the
test outputs of a run, to compare predict with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lightning.pytorch import Callback

from doubles.clouds import write_ascii_pcd

#: What :func:`write_mixed_scans` writes: file -> what predict must make of it.
SCORED = ("a_scan.pcd", "b_scan.ply", "c_scan.xyz", "sub/d_scan.txt", "e_scan.npy", "f_scan.tiff")
CORRUPT = "g_broken.pcd"
NOT_A_SCAN = "notes.md"


def write_open3d_ply(path: Path, points: np.ndarray) -> None:
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    path.parent.mkdir(parents=True, exist_ok=True)
    assert o3d.io.write_point_cloud(str(path), cloud, write_ascii=False)


def write_organized(path: Path, xyz: np.ndarray, rgb: np.ndarray | None) -> None:
    """``path`` (float32 ``(H, W, 3)`` TIFF) and, if given, the RGB PNG of the same stem."""
    import tifffile
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, xyz.astype(np.float32), photometric="rgb")
    if rgb is not None:
        Image.fromarray(rgb.astype(np.uint8)).save(path.with_suffix(".png"))


def truncated_binary_pcd(path: Path, declared: int = 100) -> None:
    """A binary PCD whose body was cut short (the header check catches it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
        + f"WIDTH {declared}\nHEIGHT 1\nPOINTS {declared}\nDATA binary\n".encode()
        + b"\x00\x01"
    )


def short_ascii_pcd(path: Path, points: np.ndarray) -> None:
    """An ASCII PCD that declares more points than it holds (only reading the body finds it)."""
    write_ascii_pcd(path, points)
    text = path.read_text().replace(f"POINTS {len(points)}", f"POINTS {len(points) + 5}")
    path.write_text(text.replace(f"WIDTH {len(points)}", f"WIDTH {len(points) + 5}"))


def write_mixed_scans(
    folder: Path,
    clouds: list[np.ndarray],
    organized: tuple[np.ndarray, np.ndarray | None],
) -> Path:
    """One scan per format (:data:`SCORED`), one corrupt PCD (:data:`CORRUPT`), one text file that is
    not a scan (:data:`NOT_A_SCAN`) and a hidden file.

    Args:
        folder: where to write (created).
        clouds: five ``(N, 3)`` clouds for the ``.pcd .ply .xyz .txt .npy`` files.
        organized: ``(xyz (H, W, 3), rgb (H, W, 3) uint8 or None)`` of the ``.tiff`` scan.
    """
    folder.mkdir(parents=True, exist_ok=True)
    write_ascii_pcd(folder / "a_scan.pcd", clouds[0])
    write_open3d_ply(folder / "b_scan.ply", clouds[1])
    np.savetxt(folder / "c_scan.xyz", clouds[2], fmt="%.6f")
    (folder / "sub").mkdir(exist_ok=True)
    np.savetxt(folder / "sub" / "d_scan.txt", clouds[3], fmt="%.6f")
    np.save(folder / "e_scan.npy", clouds[4].astype(np.float32))
    write_organized(folder / "f_scan.tiff", *organized)
    truncated_binary_pcd(folder / CORRUPT)
    (folder / NOT_A_SCAN).write_text("line 7, shift 2\n")
    (folder / ".DS_Store").write_bytes(b"\0\0")
    return folder


class TestOutputs(Callback):
    """Keeps the output batches of ``engine.test``. Read them after the run: anomalib's post-processor,
    a model callback called after this trainer callback, normalises them in place."""

    __test__ = False

    def __init__(self) -> None:
        self.batches: list = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        self.batches.append(outputs)

    def per_file(self) -> dict[str, tuple[float, np.ndarray]]:
        """``{point_path: (pred_score, per-point anomaly_map)}`` after post-processing."""
        out = {}
        for batch in self.batches:
            assert batch.pred_label is not None  # post-processed
            ptr = batch.ptr.tolist()
            for b, path in enumerate(batch.point_path):
                out[path] = (float(batch.pred_score[b]), batch.anomaly_map[ptr[b] : ptr[b + 1]].numpy().copy())
        return out
