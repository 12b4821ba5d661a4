"""Zero-shot data: source spellings and the one leak check (the protocol module), the auxiliary loader,
the fit route through a datamodule, the organized task-irrelevant scans and the foreground of organized grids."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from anomalib_3d.data.dataclasses import PointCloudBatch, PointCloudItem
from anomalib_3d.data.datamodules.zero_shot import DataSource, check_zero_shot, source_dict, source_dicts
from anomalib_3d.data.zero_shot import (
    ModelTrainData,
    auxiliary_loader,
    auxiliary_sources,
    foreground_mask,
    read_organized_scans,
    target_categories,
    target_samples,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# -- sources -----------------------------------------------------------------------------------
def test_every_spelling_of_a_source_gives_the_same_plain_dict() -> None:
    full = {"dataset": "real3d_ad", "root": "/data/r3d", "categories": ["duck"], "split": "test", "exclude": [],
            "options": {}}
    as_dataclass = DataSource("real3d_ad", Path("/data/r3d"), "duck")  # a path root, a single category
    assert source_dict(as_dataclass) == full
    assert source_dict(SimpleNamespace(**full, _private=1)) == full
    assert source_dict({"dataset": "real3d_ad", "root": Path("/data/r3d"), "categories": "duck"}) == {
        "dataset": "real3d_ad", "root": "/data/r3d", "categories": ["duck"]}
    assert source_dicts(None) is None
    assert source_dicts(full) == [full]
    assert source_dicts([as_dataclass, full]) == [full, full]


@pytest.mark.parametrize(("source", "error", "message"), [
    ({"dataset": "real3d_ad", "root": "r", "categories": ["a"], "splits": "test"}, ValueError, "unknown keys"),
    ({"dataset": "real3d_ad", "categories": ["a"]}, ValueError, "lacks 'root'"),
    ("real3d_ad:duck", TypeError, "DataSource or a dict"),
])
def test_bad_sources_are_named(source: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        source_dict(source)


# -- the leak check ----------------------------------------------------------------------------
def _table(paths: list[str], categories: list[str], column: str = "image_path") -> pd.DataFrame:
    return pd.DataFrame({column: paths, "category": categories})


def test_leak_check_by_category_on_tables_and_on_sources() -> None:
    fitting = _table(["a/1.pcd", "b/1.pcd"], ["airplane", "duck"])
    check_zero_shot(fitting, target_categories=["car"])  # nothing shared
    message = r"task-irrelevant data holds the target categories \['duck'\]: not zero-shot"
    with pytest.raises(ValueError, match=message):
        check_zero_shot(fitting, target_categories=["duck", "car"], role="task-irrelevant")
    sources = [DataSource("real3d_ad", "r", ["airplane", "duck"])]
    with pytest.raises(ValueError, match="not zero-shot"):
        check_zero_shot(sources, target_categories=["duck"])
    excluded = [DataSource("real3d_ad", "r", ["airplane", "duck"], exclude=["duck"])]
    check_zero_shot(excluded, target_categories=["duck"])  # checked without reading any file


def test_leak_check_by_file_resolves_paths_and_reads_depth_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    fitting = _table(["cat/test/xyz/000.tiff", "cat/test/xyz/001.tiff"], ["cat", "cat"])
    other = _table([str(tmp_path / "dog/test/xyz/000.tiff")], ["dog"])
    check_zero_shot(fitting, other)
    same_file = _table([str(tmp_path / "cat/test/./xyz/001.tiff")], ["cat"])  # absolute, not normalised
    with pytest.raises(ValueError, match=r"1 auxiliary samples are also target samples \(e.g. .*001.tiff\)"):
        check_zero_shot(fitting, same_file, role="auxiliary")
    # anomalib's depth tables name the RGB image in image_path and the xyz grid in depth_path
    anomalib_table = pd.DataFrame({"image_path": [str(tmp_path / "cat/test/rgb/000.png")],
                                   "depth_path": [str(tmp_path / "cat/test/xyz/000.tiff")]})
    with pytest.raises(ValueError, match="not zero-shot"):
        check_zero_shot(fitting, anomalib_table)


def test_target_categories_and_samples_of_each_kind_of_datamodule() -> None:
    zero_shot = SimpleNamespace(test_categories=lambda: {"nut", "bowl"}, categories=["bowl", "nut"])
    assert target_categories(zero_shot) == ["bowl", "nut"]
    assert target_categories(SimpleNamespace(categories=["cup", "gear"], category=["cup", "gear"])) == ["cup", "gear"]
    assert target_categories(SimpleNamespace(category="bagel")) == ["bagel"]
    assert target_categories(None) == []
    test = SimpleNamespace(samples=_table(["t.pcd"], ["a"]))
    val = SimpleNamespace(samples=_table(["v.pcd"], ["a"]))
    assert list(target_samples(SimpleNamespace(test_data=test, val_data=val)).image_path) == ["t.pcd", "v.pcd"]
    assert target_samples(SimpleNamespace()) is None
    assert target_samples(None) is None


# -- PointAD's auxiliary set ---------------------------------------------------------------------
def test_auxiliary_sources_in_order_of_precedence(tmp_path: Path) -> None:
    from anomalib_3d.data.datamodules import Synthetic3D
    from anomalib_3d.data.synthetic import list_categories

    explicit = [{"dataset": "real3d_ad", "root": "r", "categories": ["duck"]}]
    zero_shot = SimpleNamespace(fit_sources=[DataSource("mvtec3d", "m", ["carrot"])])
    assert auxiliary_sources(explicit, zero_shot) == explicit
    assert auxiliary_sources(None, zero_shot) == [asdict(DataSource("mvtec3d", "m", ["carrot"]))]
    default = auxiliary_sources(None, SimpleNamespace(category="bagel"))
    assert default[0]["categories"] == ["bottle", "cup", "gear", "bracket"] and default[0]["split"] == "test"
    synthetic = auxiliary_sources(None, Synthetic3D(root=tmp_path, category=["bottle", "gear"]))
    expected = [c for c in list_categories() if c not in {"bottle", "gear"}][:4]
    assert synthetic[0]["categories"] == expected and not {"bottle", "gear"} & set(expected)


def test_auxiliary_loader_keeps_labels_shuffles_by_seed_and_refuses_target_samples(real3d_root: Path) -> None:
    sources = [{"dataset": "real3d_ad", "root": str(real3d_root), "categories": ["airplane"], "split": "test"}]
    first = auxiliary_loader(sources, batch_size=2, seed=3)
    second = auxiliary_loader(sources, batch_size=2, seed=3)
    batches = list(first)
    assert sum(b.batch_size for b in batches) == 5  # 2 good + 3 defective test clouds
    assert [p for b in batches for p in b.point_path] == [p for b in second for p in b.point_path]
    assert sum(int(b.gt_label.sum()) for b in batches) == 3
    assert all(b.gt_mask is not None and b.gt_mask.shape[0] == b.points.shape[0] for b in batches)
    duck = DataSource("real3d_ad", str(real3d_root), ["duck"]).samples()
    target = SimpleNamespace(test_data=SimpleNamespace(samples=duck))
    auxiliary_loader(sources, datamodule=target)  # another category: fine
    leaky = SimpleNamespace(test_data=SimpleNamespace(samples=DataSource("real3d_ad", str(real3d_root),
                                                                         ["airplane"]).samples()))
    with pytest.raises(ValueError, match="auxiliary samples are also target samples"):
        auxiliary_loader(sources, datamodule=leaky)
    with pytest.raises(ValueError, match="has no category left"):
        auxiliary_loader([{**sources[0], "exclude": ["airplane"]}])


# -- the fit reads the model's loader through a datamodule ---------------------------------------
def _items(name: str, count: int) -> list[PointCloudItem]:
    return [PointCloudItem(points=torch.rand(5, 3), gt_label=0, point_path=f"{name}/{i}") for i in range(count)]


class _Recorder(pl.LightningModule):
    """Records the files of every training batch; its own fitting data is ``model/*``."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[str] = []
        self.fail = fail

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_items("model", 4), batch_size=2, collate_fn=PointCloudBatch.collate)

    def training_step(self, batch: PointCloudBatch, batch_idx: int) -> torch.Tensor:
        del batch_idx
        if self.fail:
            msg = "training failed"
            raise RuntimeError(msg)
        self.seen.extend(batch.point_path)
        return (self.weight - 1.0).pow(2).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def configure_callbacks(self) -> list[pl.Callback]:
        return [ModelTrainData()]


class _GuardedTarget(pl.LightningDataModule):
    def train_dataloader(self) -> DataLoader:
        msg = "the target's train split must not be read"
        raise AssertionError(msg)


def _trainer() -> pl.Trainer:
    return pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)


def test_fit_through_a_datamodule_reads_the_model_loader_and_gives_the_hook_back() -> None:
    model, target = _Recorder(), _GuardedTarget()
    _trainer().fit(model, datamodule=target)
    assert model.seen == ["model/0", "model/1", "model/2", "model/3"] * 2
    assert "train_dataloader" not in target.__dict__  # the datamodule's own hook again
    failing, target = _Recorder(fail=True), _GuardedTarget()
    with pytest.raises(RuntimeError, match="training failed"):
        _trainer().fit(failing, datamodule=target)
    assert "train_dataloader" not in target.__dict__  # given back after a failed fit too


def test_loaders_passed_to_fit_are_the_fitting_data() -> None:
    model = _Recorder()
    passed = DataLoader(_items("passed", 2), batch_size=2, collate_fn=PointCloudBatch.collate)
    _trainer().fit(model, train_dataloaders=passed)
    assert model.seen == ["passed/0", "passed/1"] * 2
    alone = _Recorder()
    _trainer().fit(alone)  # no datamodule, no loader: the model's own hook
    assert alone.seen == ["model/0", "model/1", "model/2", "model/3"] * 2


# -- organized scans and their foreground --------------------------------------------------------
def _plane_with_box(size: int = 32, box: bool = True) -> torch.Tensor:
    """``(size, size, 3)`` sensor-frame grid: a plane 0.5 m away, optionally an 8-pixel box 3 cm towards the camera."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    xyz = torch.stack([(cols - size / 2) * 0.002, (rows - size / 2) * 0.002, torch.full((size, size), 0.5)], -1)
    if box:
        xyz[12:20, 12:20, 2] -= 0.03
    return xyz


def _organized_item(xyz: torch.Tensor, keep: torch.Tensor, path: str) -> PointCloudItem:
    index = keep.reshape(-1).nonzero().squeeze(1)
    return PointCloudItem(points=xyz.reshape(-1, 3)[index], grid_index=index, grid_shape=torch.tensor(xyz.shape[:2]),
                          point_path=path, gt_label=0)


def test_foreground_drops_the_support_plane_of_each_cloud() -> None:
    full = torch.ones(32, 32, dtype=torch.bool)
    with_box = _organized_item(_plane_with_box(), full, "box")
    plane_only = _organized_item(_plane_with_box(box=False), full, "plane")
    batch = PointCloudBatch.collate([with_box, plane_only])
    keep = foreground_mask(batch)
    expected_box = torch.zeros(32, 32, dtype=torch.bool)
    expected_box[12:20, 12:20] = True
    assert keep.shape == (2048,) and keep.dtype == torch.bool
    assert torch.equal(keep[:1024], expected_box.reshape(-1))
    assert bool(keep[1024:].all())  # no object left: the plane-only scan keeps every point


def test_organized_scans_are_evenly_spread_and_resized() -> None:
    grids = [_plane_with_box() + i for i in range(5)]
    keep = torch.ones(32, 32, dtype=torch.bool)
    keep[0, :] = False  # a missing row stays zero / invalid
    items = [_organized_item(g, keep, f"scan/{i}") for i, g in enumerate(grids)]
    scans = read_organized_scans(items, 3, 32)
    assert [s.path for s in scans] == ["scan/0", "scan/2", "scan/4"]
    assert torch.equal(scans[1].valid, keep)
    assert torch.equal(scans[1].xyz[keep], grids[2][keep]) and bool((scans[1].xyz[~keep] == 0).all())
    small = read_organized_scans(items, 10, 16)
    assert len(small) == 5 and small[0].xyz.shape == (16, 16, 3) and small[0].valid.shape == (16, 16)
    # nearest resizing: every kept pixel is one of the scan's own points
    kept = small[0].xyz[small[0].valid]
    assert len(kept) >= 15 * 16 and bool((torch.cdist(kept, grids[0][keep]).amin(dim=1) == 0).all())
    assert read_organized_scans([], 4, 16) == []
