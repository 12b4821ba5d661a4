"""Datamodules on folders in the public layouts, written independently of our writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from anomalib_3d.data.datamodules import MVTec3DPointCloud, Real3DAD, ZeroShot3D
from anomalib_3d.data.datamodules.zero_shot import DataSource
from anomalib_3d.data.errors import (
    CorruptFileError,
    DatasetRootNotFoundError,
    GroundTruthMismatchError,
    InvalidPointsError,
    UnknownCategoryError,
)


def test_real3d_layout_counts_labels_and_masks(real3d_root: Path) -> None:
    dm = Real3DAD(root=real3d_root, category=["airplane", "duck"], eval_batch_size=2)
    dm.setup()
    assert len(dm.train_data) == 6
    assert len(dm.test_data) == 10
    labels = sorted(int(x) for x in dm.test_data.samples.label_index)
    assert labels == [0] * 4 + [1] * 6
    assert set(dm.test_data.samples.defect_type) == {"good", "bulge", "concavity"}
    for i in range(len(dm.test_data)):
        item = dm.test_data[i]
        row = dm.test_data.samples.iloc[i]
        if row.mask_path:
            gt = np.loadtxt(row.mask_path)
            assert np.allclose(item.points.numpy(), gt[:, :3], atol=1e-6)
            assert np.array_equal(item.gt_mask.numpy(), gt[:, 3].astype(bool))
            assert bool(item.gt_label)
        else:
            assert not item.gt_mask.any() and not bool(item.gt_label)
    batch = next(iter(dm.test_dataloader()))
    assert batch.batch_size == 2 and batch.points.shape[0] == batch.num_points.sum()


def test_real3d_gt_in_another_order_is_aligned(real3d_root: Path) -> None:
    gt_file = real3d_root / "duck" / "gt" / "20_bulge.txt"
    gt = np.loadtxt(gt_file)
    perm = np.random.default_rng(0).permutation(len(gt))
    np.savetxt(gt_file, gt[perm], fmt="%.6f %.6f %.6f %d")
    dm = Real3DAD(root=real3d_root, category="duck")
    dm.setup()
    idx = [i for i, p in enumerate(dm.test_data.samples.image_path) if p.endswith("20_bulge.pcd")][0]
    item = dm.test_data[idx]
    assert np.array_equal(item.gt_mask.numpy(), gt[:, 3].astype(bool))


def test_mvtec3d_layout_counts_labels_and_masks(mvtec3d_root: Path) -> None:
    from PIL import Image

    dm = MVTec3DPointCloud(root=mvtec3d_root, category="bagel", remove_background=False, grid_size=None)
    dm.setup()
    assert len(dm.train_data) == 3
    assert len(dm.test_data) == 5
    for i in range(len(dm.test_data)):
        item = dm.test_data[i]
        row = dm.test_data.samples.iloc[i]
        mask = np.array(Image.open(row.mask_path)) > 0
        assert np.array_equal(item.pixel_gt_mask.numpy(), mask)
        flat = mask.reshape(-1)[item.grid_index.numpy()]
        assert np.array_equal(item.gt_mask.numpy(), flat)
        assert item.num_points == 32 * 28  # four rows of zeros dropped
        assert item.colors is not None and item.image.shape == (3, 32, 32)
    assert sorted(dm.test_data.samples.defect_type.unique()) == ["crack", "good", "hole"]


def test_mvtec3d_background_removal_drops_the_plane(tmp_path: Path) -> None:
    import tifffile

    h = w = 48
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / 100
    xyz = np.stack([xx, yy, np.full_like(xx, 0.5)], axis=-1)
    xyz[18:30, 18:30, 2] -= 0.03  # a 3 cm box on the plane, towards the camera
    for split in ("train", "test"):
        d = tmp_path / "cat" / split / "good" / "xyz"
        d.mkdir(parents=True)
        tifffile.imwrite(d / "000.tiff", xyz)
    dm = MVTec3DPointCloud(root=tmp_path, category="cat", remove_background=True, grid_size=None)
    dm.setup()
    item = dm.train_data[0]
    assert item.num_points == 12 * 12


def test_zero_shot_refuses_leakage_and_keeps_auxiliary_anomalies(real3d_root: Path) -> None:
    dm = ZeroShot3D(
        fit_sources=[DataSource("real3d_ad", str(real3d_root), ["airplane"], split="test")],
        test_sources=[DataSource("real3d_ad", str(real3d_root), ["duck"], split="test")],
    )
    dm.setup()
    assert set(dm.train_data.samples.category) == {"airplane"}
    assert int(dm.train_data.samples.label_index.sum()) == 3  # anomalies are training signal
    assert set(dm.test_data.samples.category) == {"duck"}
    leaky = ZeroShot3D(
        fit_sources=[DataSource("real3d_ad", str(real3d_root), ["airplane", "duck"], split="all")],
        test_sources=[DataSource("real3d_ad", str(real3d_root), ["duck"], split="test")],
    )
    with pytest.raises(ValueError, match="not zero-shot"):
        leaky.setup()
    excluded = ZeroShot3D(
        fit_sources=[DataSource("real3d_ad", str(real3d_root), ["airplane", "duck"], split="all", exclude=["duck"])],
        test_sources=[DataSource("real3d_ad", str(real3d_root), ["duck"], split="test")],
    )
    excluded.setup()
    assert set(excluded.train_data.samples.category) == {"airplane"}


# -- bad input: one named error each, naming the file ------------------------------------------
def test_missing_root_and_unknown_category(tmp_path: Path, real3d_root: Path) -> None:
    with pytest.raises(DatasetRootNotFoundError, match="nowhere"):
        Real3DAD(root=tmp_path / "nowhere", category="airplane").setup()
    with pytest.raises(UnknownCategoryError, match="found: airplane, duck"):
        Real3DAD(root=real3d_root, category="teapot").setup()


def _first_test_item(root: Path, category: str, stem: str) -> object:
    dm = Real3DAD(root=root, category=category)
    dm.setup()
    idx = [i for i, p in enumerate(dm.test_data.samples.image_path) if Path(p).stem == stem][0]
    return dm.test_data[idx]


def test_gt_length_mismatch_names_the_file(real3d_root: Path) -> None:
    gt_file = real3d_root / "duck" / "gt" / "21_sink.txt"
    gt = np.loadtxt(gt_file)
    np.savetxt(gt_file, gt[:-5], fmt="%.6f %.6f %.6f %d")
    with pytest.raises(GroundTruthMismatchError, match="21_sink.txt"):
        _first_test_item(real3d_root, "duck", "21_sink")


def test_nan_coordinates_name_the_file(real3d_root: Path) -> None:
    path = real3d_root / "duck" / "test" / "10_good.pcd"
    text = path.read_text().splitlines()
    text[-1] = "nan 0.0 0.0"
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(InvalidPointsError, match="10_good.pcd"):
        _first_test_item(real3d_root, "duck", "10_good")


def test_truncated_file_names_the_file(real3d_root: Path) -> None:
    path = real3d_root / "duck" / "test" / "11_good.pcd"
    text = path.read_text().splitlines()
    path.write_text("\n".join(text[:-40]) + "\n")
    with pytest.raises(CorruptFileError, match="11_good.pcd"):
        _first_test_item(real3d_root, "duck", "11_good")


def test_defective_sample_without_gt_is_refused(real3d_root: Path) -> None:
    (real3d_root / "duck" / "gt" / "22_bulge.txt").unlink()
    with pytest.raises(GroundTruthMismatchError, match="22_bulge.pcd"):
        Real3DAD(root=real3d_root, category="duck").setup()


def test_wrong_xyz_shape_names_the_file(mvtec3d_root: Path) -> None:
    import tifffile

    bad = mvtec3d_root / "bagel" / "train" / "good" / "xyz" / "000.tiff"
    tifffile.imwrite(bad, np.zeros((8, 8), np.float32))
    # The pre-flight check (validate="header", default) finds it at setup, before any training;
    # with the check off the same error comes when the file is read.
    dm = MVTec3DPointCloud(root=mvtec3d_root, category="bagel", remove_background=False, grid_size=None)
    with pytest.raises(CorruptFileError, match="000.tiff"):
        dm.setup()
    dm = MVTec3DPointCloud(root=mvtec3d_root, category="bagel", remove_background=False, grid_size=None,
                           validate="off")
    dm.setup()
    with pytest.raises(CorruptFileError, match="000.tiff"):
        dm.train_data[0]


def test_dataloader_yields_point_batches(real3d_root: Path) -> None:
    dm = Real3DAD(root=real3d_root, category="airplane", train_batch_size=3)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch.batch_size == 3
    assert torch.equal(batch.num_points, torch.tensor([200, 200, 200]))
