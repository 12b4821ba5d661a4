"""Real-size clouds: blocked neighbour search gives exactly the unblocked result, and a 1,000,000-point
cloud goes through BTF's and Reg3DAD's prediction with memory bounded per point (resident-set
high-water mark of a fresh process, in bytes per input point: a machine-independent scale)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from anomalib_3d.ops import available_backends, interpolate_nearest, knn, knn_blocks, smooth_scores

pytestmark = pytest.mark.usefixtures("one_thread")

KNN_BACKENDS = [b for b in ("torch", "scipy", "pykdtree", "torch_cluster") if b in available_backends()]


def _clouds(sizes: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(sum(sizes), 3, generator=generator)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return points, batch


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_knn_blocks_are_the_rows_of_knn(backend: str) -> None:
    """Blocks of 7 queries, clouds of unequal sizes (one without queries): every block is the
    matching slice of the one-shot result, blocks cover the queries once, in order."""
    points, batch = _clouds([40, 25, 33])
    queries, query_batch = _clouds([30, 0, 19], seed=1)
    query_batch[query_batch == 1] = 2  # no query in cloud 1
    expected_index, expected_sq = knn(points, queries, 5, batch, query_batch, backend=backend)
    starts = []
    for start, index, sq in knn_blocks(points, queries, 5, batch, query_batch, backend=backend, block=7):
        starts.append(start)
        assert index.shape[0] <= 7
        assert torch.equal(index, expected_index[start : start + index.shape[0]])
        assert torch.equal(sq, expected_sq[start : start + index.shape[0]])
    assert starts == [0, 7, 14, 21, 28, 30, 37, 44]
    with pytest.raises(ValueError, match="block"):
        next(knn_blocks(points, queries, 5, batch, query_batch, block=0))


def test_knn_blocks_reference_and_gradients() -> None:
    """Against brute force on one cloud larger than a block; gradients still reach the points."""
    points = torch.rand(300, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
    index, sq = knn(points, points[:200], 4)
    brute = torch.cdist(points[:200], points).pow(2)
    expected_sq, expected_index = brute.topk(4, largest=False)
    assert torch.equal(index, expected_index)
    torch.testing.assert_close(sq, expected_sq)
    sq.sum().backward()
    assert points.grad is not None and bool(points.grad.abs().sum() > 0)


def test_smoothing_and_interpolation_over_blocks_match_the_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    """kNN Gaussian smoothing and inverse-distance interpolation on a cloud several blocks long
    (the query block shrunk to 64) equal the dense formula."""
    points = torch.rand(500, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    scores = torch.rand(500, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    sq = torch.cdist(points, points).pow(2)
    near_sq, near = sq.topk(6, largest=False)
    weight = torch.exp(-near_sq / (2 * 0.05**2))
    expected_smooth = (weight * scores[near]).sum(1) / weight.sum(1)
    src = points[:100]
    d, nearest = torch.cdist(points, src).topk(3, largest=False)
    inverse = 1 / d.clamp_min(1e-12)
    expected_interp = (inverse * scores[:100][nearest]).sum(1) / inverse.sum(1)
    expected_interp[:100] = scores[:100]  # a destination on a source point takes its value
    monkeypatch.setattr("anomalib_3d.ops.neighbors.QUERY_BLOCK", 64)
    smoothed = smooth_scores(points, scores, k=6, sigma=0.05)
    interpolated = interpolate_nearest(src, scores[:100], points, k=3)
    torch.testing.assert_close(smoothed, expected_smooth)
    torch.testing.assert_close(interpolated, expected_interp)


# A fresh interpreter: the resident-set peak is then that of one prediction, and glibc's mmap
# threshold is pinned low so freed blocks leave the resident set at once.
_PREDICT_1M = textwrap.dedent(
    """
    import json, sys, torch
    torch.set_num_threads(1)
    from anomalib_3d.data.dataclasses import PointCloudBatch, PointCloudItem
    from anomalib_3d.data.synthetic import make_sample

    def status(key):
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) * 1024 for line in handle if line.startswith(key + ":"))

    def batch(samples):
        return PointCloudBatch.collate([
            PointCloudItem(points=torch.from_numpy(s.points), gt_mask=torch.from_numpy(s.labels.astype(bool)),
                           gt_label=torch.tensor(bool(s.labels.any())))
            for s in samples
        ])

    name, num_points = sys.argv[1], int(sys.argv[2])
    if name == "btf":
        from anomalib_3d_plugins.btf import BTF as Model
    else:
        from anomalib_3d_plugins.reg3dad import Reg3DAD as Model
    module = Model(visualizer=False)
    module.training_step(batch([make_sample("gear", None, seed=s, num_points=8192) for s in range(2)]), 0)
    module.fit()
    module.eval()
    result = {}
    for size in (num_points // 4, num_points):
        big = batch([make_sample("gear", "bulge", seed=9, num_points=size)])
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        start = status("VmRSS")
        with torch.no_grad():
            out = module.predict_step(big, 0)
        result[size] = status("VmHWM") - start
        del big, out
    from sklearn.metrics import roc_auc_score
    big = batch([make_sample("gear", "bulge", seed=9, num_points=num_points)])
    with torch.no_grad():
        out = module.predict_step(big, 0)
    auroc = roc_auc_score(big.gt_mask.numpy(), out.anomaly_map.numpy())
    print(json.dumps({"quarter": result[num_points // 4], "full": result[num_points],
                      "points": int(out.anomaly_map.shape[0]), "p_auroc": auroc}))
    """
)


def _can_reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux") or not _can_reset_peak(), reason="needs /proc/self/clear_refs")
@pytest.mark.parametrize("model", ["btf", "reg3dad"])
def test_a_million_point_cloud_is_predicted_in_bounded_memory(model: str) -> None:
    """One prediction of a 1M-point cloud and of a 250k-point one: the peak resident growth per
    added point stays under 64 bytes (the cloud itself is 12 B/point of float32 coordinates, its
    score map 4; FPFH on every point, or unblocked neighbour lists of every point, would need
    several hundred), and the whole peak under 256 MiB (fixed-size blocks: bank queries, features of
    the bounded subsample)."""
    num_points = 1_000_000
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(
        [sys.executable, "-c", _PREDICT_1M, model, str(num_points)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["points"] == num_points
    per_point = (result["full"] - result["quarter"]) / (num_points - num_points // 4)
    assert per_point < 64, result
    assert result["full"] < 256 * 2**20, result
    # BTF still finds the bulge at full resolution (Reg3DAD is near chance on Synthetic3D gear at
    # any size: see the leaderboard).
    assert result["p_auroc"] > (0.8 if model == "btf" else 0.0), result
