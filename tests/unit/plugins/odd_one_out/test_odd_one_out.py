"""Odd-One-Out network parts: cross-instance attention against brute force, switches, gradients."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from anomalib_3d_plugins.odd_one_out import CrossInstanceAttention, OddOneOutModel, cross_instance_attention


def _brute_force(q, k, v, match, object_batch, topk):  # noqa: ANN001, ANN202
    """Loops over objects, voxels and heads: Eq. 5-7 written out."""
    num, tokens, heads, dim = q.shape
    out = torch.zeros_like(q)
    for n in range(num):
        others = [m for m in range(num) if m != n and object_batch[m] == object_batch[n]]
        if not others:
            continue
        for i in range(tokens):
            pairs = []
            for m in others:
                similarity = match[m] @ match[n, i]
                chosen = similarity.topk(topk).indices if topk else torch.arange(tokens)
                pairs += [(m, int(j)) for j in chosen]
            for h in range(heads):
                logits = torch.stack([q[n, i, h] @ k[m, j, h] / math.sqrt(dim) for m, j in pairs])
                weights = torch.softmax(logits, dim=0)
                out[n, i, h] = sum(w * v[m, j, h] for w, (m, j) in zip(weights, pairs, strict=True))
    return out


@pytest.mark.parametrize("topk", [3, None])
def test_cross_instance_attention_matches_brute_force(topk: int | None) -> None:
    generator = torch.Generator().manual_seed(0)
    num, tokens, heads, dim = 5, 7, 2, 4
    q, k, v = (torch.randn(num, tokens, heads, dim, generator=generator, dtype=torch.float64) for _ in range(3))
    match = torch.randn(num, tokens, 6, generator=generator, dtype=torch.float64)
    object_batch = torch.tensor([0, 0, 0, 1, 1])
    fast = cross_instance_attention(q, k, v, match, object_batch, topk)
    assert torch.allclose(fast, _brute_force(q, k, v, match, object_batch, topk), atol=1e-10)


def test_attention_never_reads_its_own_instance_or_other_scenes() -> None:
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(4, 5, 1, 3, generator=generator) for _ in range(3))
    match = torch.randn(4, 5, 3, generator=generator)
    object_batch = torch.tensor([0, 0, 0, 1])
    base = cross_instance_attention(q, k, v, match, object_batch, 2)
    changed_v = v.clone()
    changed_v[0] += 100.0  # object 0's own values
    changed = cross_instance_attention(q, k, changed_v, match, object_batch, 2)
    assert torch.allclose(changed[0], base[0])
    assert not torch.allclose(changed[1], base[1])
    assert torch.all(base[3] == 0)  # alone in scene 1: nothing to compare with


def test_top1_correspondence_copies_the_matching_voxel() -> None:
    # Object 0, voxel 0 matches voxel 2 of object 1 best; with k = 1 and one other object the
    # softmax has a single term, so the output is exactly that voxel's value.
    match = torch.eye(3).expand(2, 3, 3).clone()
    match[1] = torch.eye(3)[[1, 2, 0]]  # voxel j of object 1 has the direction of voxel (j + 1) % 3
    q = torch.randn(2, 3, 1, 2)
    k = torch.randn(2, 3, 1, 2)
    v = torch.arange(12.0).view(2, 3, 1, 2)
    out = cross_instance_attention(q, k, v, match, torch.tensor([0, 0]), topk=1)
    assert torch.equal(out[0, 0], v[1, 2])  # direction of voxel 0 is held by voxel 2 of object 1
    assert torch.equal(out[0, 1], v[1, 0])


def test_attention_switches() -> None:
    tokens = torch.randn(3, 8, 16)
    match = torch.randn(3, 8, 4)
    batch = torch.tensor([0, 0, 0])
    assert torch.all(CrossInstanceAttention(16, 4, "none")(tokens, match, batch) == 0)
    sparse_all = CrossInstanceAttention(16, 4, "sparse", topk=8)
    dense = CrossInstanceAttention(16, 4, "dense")
    dense.load_state_dict(sparse_all.state_dict())
    assert torch.allclose(sparse_all(tokens, match, batch), dense(tokens, match, batch), atol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        CrossInstanceAttention(16, 4, "global")


def test_model_forward_scores_every_box_and_gradients_reach_the_encoder() -> None:
    torch.manual_seed(0)
    model = OddOneOutModel(grid_shape=(16, 16, 8), voxel_size=0.08, grid_center=(0.0, 0.0, 0.0), feature_dim=8,
                           projection_dim=8, crop_size=4, num_blocks=1, heads=2, token_dim=16, topk=5)
    from anomalib_3d.data.synthetic.scenes import orbit_cameras

    import numpy as np

    k, poses = orbit_cameras(4, np.random.default_rng(0), image_size=32)
    intrinsics = torch.from_numpy(k).float().expand(2, 2, 3, 3)
    world_to_camera = torch.from_numpy(poses).float().view(2, 2, 4, 4)
    images = torch.rand(2, 2, 3, 32, 32)
    boxes = torch.tensor([[[0.1, 0.1, 0.1], [0.2, 0.2, 0.2]]]).repeat(5, 1, 1)
    object_batch = torch.tensor([0, 0, 0, 1, 1])
    render_k = intrinsics * torch.tensor([0.25, 0.25, 1.0]).view(1, 1, 3, 1)
    out = model(images, intrinsics, world_to_camera, boxes, object_batch, render_k, world_to_camera, (8, 8), 16)
    assert out.object_logits.shape == (5,)
    assert out.render.features.shape == (2, 2, 3 + 8, 8, 8)
    loss = out.object_logits.sum() + out.render.features.mean()
    loss.backward()
    assert model.encoder.net[0].weight.grad.abs().sum() > 0
    assert model.blocks[0].attention.to_qkv.weight.grad.abs().sum() > 0


def test_paint_object_scores_uses_scene_local_indices() -> None:
    from anomalib_3d_plugins.odd_one_out import paint_object_scores

    scores = torch.tensor([0.1, 0.2, 0.9, 0.4, 0.5])
    object_batch = torch.tensor([0, 0, 0, 1, 1])
    index = torch.full((2, 1, 2, 2), -1)
    index[0, 0, 0, 0] = 2
    index[1, 0, 1, 1] = 0
    index[1, 0, 0, 1] = 1
    maps = paint_object_scores(scores, index, object_batch)
    assert torch.allclose(maps, torch.tensor([[[[0.9, 0.0], [0.0, 0.0]]], [[[0.0, 0.5], [0.0, 0.4]]]]))


@pytest.mark.slow
def test_engine_fits_and_tests_on_synthetic_scenes(tmp_path) -> None:  # noqa: ANN001
    from anomalib.engine import Engine

    from anomalib_3d.data.datamodules.multiview_scenes import MultiViewScenes
    from anomalib_3d_plugins.odd_one_out import OddOneOut

    datamodule = MultiViewScenes(
        root=tmp_path / "data",
        synthetic={"categories": ["nut", "cup"], "unseen_categories": ["ring"], "num_train": 4, "num_test": 2,
                   "num_test_unseen": 2, "num_views": 10, "image_size": 48, "points_per_object": 1500},
    )
    model = OddOneOut(grid_shape=(24, 24, 8), voxel_size=0.06, grid_center=(0.0, 0.0, 0.12), feature_dim=8,
                      projection_dim=8, crop_size=4, num_blocks=1, heads=2, token_dim=16, topk=5,
                      render_size=(12, 12), num_samples=16, render_epochs=1, lr_schedule="cosine",
                      gradient_clip_val=1.0)
    engine = Engine(max_epochs=2, accelerator="cpu", devices=1, default_root_dir=tmp_path / "results",
                    enable_progress_bar=False, logger=False)
    engine.fit(model=model, datamodule=datamodule)
    # The model's schedule and clipping reach Lightning: the cosine rate has decayed to 0 after the last epoch.
    assert engine.trainer.gradient_clip_val == 1.0
    assert engine.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    results = engine.test(model=model, datamodule=datamodule)
    assert "object_AUROC" in results[0] and 0.0 <= results[0]["object_AUROC"] <= 1.0
    assert "object_SceneAUROC" in results[0] and not any(name.startswith("pixel_") for name in results[0])
    batch = next(iter(datamodule.test_dataloader()))
    predicted = model.predict_step(batch, 0)
    assert predicted.object_scores.shape == batch.object_labels.shape
    assert predicted.anomaly_map.shape == (batch.batch_size, 5, 48, 48)
    assert torch.all(predicted.pred_score >= 0)
    exported = model(batch)  # anomalib's forward: post-processed InferenceBatch
    assert exported.pred_score.shape == (batch.batch_size,)
    # The paper's object accuracy (here on ground-truth boxes) and one scene picture per test scene.
    assert 0.0 <= results[0]["object_Accuracy"] <= 1.0 and 0.0 <= results[0]["object_PooledAccuracy"] <= 1.0
    pictures = list((tmp_path / "results").rglob("images/**/*.png"))
    assert len(pictures) == len(datamodule.test_data)

    # Save -> load -> identical predictions (every constructor switch travels in the checkpoint).
    checkpoint = tmp_path / "odd_one_out.ckpt"
    engine.trainer.save_checkpoint(checkpoint)
    reloaded = OddOneOut.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    model.eval()
    with torch.no_grad():
        again = reloaded.predict_step(batch, 0)
        first = model.predict_step(batch, 0)
    assert reloaded.grid == model.grid
    assert torch.equal(again.object_scores, first.object_scores)
    assert torch.equal(again.anomaly_map, first.anomaly_map)

    # Proposals instead of ground-truth boxes: the untrained density is faint, so a low threshold.
    model.boxes, model.proposal_threshold = "proposals", 1e-3
    model.eval()
    with torch.no_grad():
        proposed = model.predict_step(batch, 0)
    assert proposed.pred_boxes is not None and proposed.pred_boxes.shape[1:] == (2, 3)
    assert proposed.pred_object_scores.shape == proposed.pred_object_batch.shape == (proposed.pred_boxes.shape[0],)
    assert proposed.object_scores.shape == batch.object_labels.shape  # each GT object reads its best proposal


@pytest.mark.parametrize(("crop", "layers"), [(8, 3), (6, 3), (4, 2), (1, 0)])
def test_conv_readout_downsamples_the_crop_to_one_cell(crop: int, layers: int) -> None:
    from anomalib_3d_plugins.odd_one_out.torch_model import ObjectReadout

    readout = ObjectReadout(16, crop, "conv")
    assert sum(isinstance(m, torch.nn.Conv3d) for m in readout.down) == layers  # 8^3 -> 1: 1/8, as the paper
    tokens = torch.randn(5, crop**3, 16)
    assert readout(tokens).shape == (5,)
    # The conv readout sees where a voxel is; the mean readout does not.
    moved = tokens.clone()
    moved[:, [0, -1]] = tokens[:, [-1, 0]]
    mean = ObjectReadout(16, crop, "mean")
    assert torch.allclose(mean(moved), mean(tokens), atol=1e-6)
    if crop > 1:
        assert not torch.allclose(readout(moved), readout(tokens))
    with pytest.raises(ValueError, match="readout"):
        ObjectReadout(16, crop, "max")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "match"),
    [({"proposal_method": "kmeans"}, "proposal_method"), ({"proposal_threshold": 1.5}, "proposal_threshold"),
     ({"proposal_threshold": 0.0}, "proposal_threshold"), ({"boxes": "predicted"}, "boxes"),
     ({"feature_loss": "l1"}, "feature_loss"), ({"image_loss": "bce"}, "image_loss"),
     ({"lr_schedule": "step"}, "lr_schedule"), ({"gradient_clip_val": -1.0}, "gradient_clip_val"),
     ({"unet_scales": 1}, "scales")],
)
def test_bad_options_fail_at_construction(option: dict, match: str) -> None:
    from anomalib_3d_plugins.odd_one_out import OddOneOut

    small = {"grid_shape": (8, 8, 4), "feature_dim": 8, "projection_dim": 8, "crop_size": 2, "token_dim": 16,
             "heads": 2, "num_blocks": 1, "visualizer": False, "evaluator": False}
    with pytest.raises(ValueError, match=match):
        OddOneOut(**small, **option)
    OddOneOut(**small)  # the same small model without the bad option builds


def test_gradient_clipping_is_passed_to_the_trainer_only_when_set() -> None:
    from anomalib_3d_plugins.odd_one_out import OddOneOut

    small = {"grid_shape": (8, 8, 4), "feature_dim": 8, "projection_dim": 8, "crop_size": 2, "token_dim": 16,
             "heads": 2, "num_blocks": 1, "visualizer": False, "evaluator": False}
    # anomalib's Engine lets a model's trainer_arguments override the user's: 0 must not erase
    # a --trainer.gradient_clip_val given on the command line.
    assert "gradient_clip_val" not in OddOneOut(**small).trainer_arguments
    assert OddOneOut(**small, gradient_clip_val=0.5).trainer_arguments["gradient_clip_val"] == 0.5


@pytest.mark.parametrize("scales", [2, 3, 4])
def test_volume_net_has_the_requested_number_of_resolutions(scales: int) -> None:
    from anomalib_3d_plugins.odd_one_out.torch_model import VolumeNet3D

    net = VolumeNet3D(5, 12, width=8, scales=scales)
    seen: list[tuple[int, ...]] = []
    hooks = [getattr(net, f"enc{level}").register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape[2:])))
             for level in range(scales)]
    volume = torch.randn(1, 5, 16, 24, 20, requires_grad=True)
    out = net(volume)
    for hook in hooks:
        hook.remove()
    # Full resolution, then halved (rounded up) per scale: the paper's backbone is "four-scale" (16 x 96 x 96
    # -> 2 x 12 x 12 at the deepest level).
    assert seen == [tuple(-(-size // 2**level) for size in (16, 24, 20)) for level in range(scales)]
    assert out.shape == (1, 12, 16, 24, 20)
    # The deepest level is on the output's path (not a dead branch): its weights get gradients.
    out.square().mean().backward()
    deepest = getattr(net, f"enc{scales - 1}")[0].weight.grad
    assert deepest is not None and deepest.abs().sum() > 0
    with pytest.raises(ValueError, match="multiples of 4"):
        VolumeNet3D(5, 6, width=8, scales=scales)  # GroupNorm's 4 groups, said in words


def test_three_scale_volume_net_keeps_the_earlier_networks_parameters() -> None:
    from anomalib_3d_plugins.odd_one_out.torch_model import VolumeNet3D

    # The network of the earlier presets, written out by hand: checkpoints trained with it must still load.
    w, cin, cout = 8, 5, 12
    earlier = {"enc0": (w, cin), "enc1": (2 * w, w), "enc2": (2 * w, 2 * w), "dec1": (w, 4 * w), "dec0": (cout, 2 * w)}
    net = VolumeNet3D(cin, cout, width=w, scales=3)
    shapes = {name: tuple(p.shape) for name, p in net.state_dict().items()}
    assert list(shapes) == [f"{m}.{k}" for m in earlier for k in ("0.weight", "0.bias", "1.weight", "1.bias")]
    for module, (out_channels, in_channels) in earlier.items():
        assert shapes[f"{module}.0.weight"] == (out_channels, in_channels, 3, 3, 3)


def test_unet_scales_default_and_the_preset_are_the_papers_four() -> None:
    import yaml

    from anomalib_3d_plugins.odd_one_out import OddOneOut

    small = {"grid_shape": (8, 8, 4), "feature_dim": 8, "projection_dim": 8, "crop_size": 2, "token_dim": 16,
             "heads": 2, "num_blocks": 1, "visualizer": False, "evaluator": False}
    assert OddOneOut(**small).model.volume_net.scales == 4
    assert OddOneOut(**small, unet_scales=3).model.volume_net.scales == 3
    preset = Path(__file__).resolve().parents[4] / "configs" / "experiments" / "odd_one_out_synthetic.yaml"
    assert yaml.safe_load(preset.read_text())["model"]["init_args"]["unet_scales"] == 4


def test_model_reads_its_switches_from_one_settings_object() -> None:
    from anomalib_3d_plugins.odd_one_out import OddOneOut
    from anomalib_3d_plugins.odd_one_out.settings import OddOneOutSettings

    small = {"grid_shape": [8, 8, 4], "feature_dim": 8, "projection_dim": 8, "crop_size": 2, "token_dim": 16,
             "heads": 2, "num_blocks": 1}
    model = OddOneOut(**small, visualizer=False, evaluator=False)
    assert model.model.settings == OddOneOutSettings(**{**small, "grid_shape": (8, 8, 4)})
    assert model.grid is model.model.grid and model.grid.shape == (8, 8, 4)
    assert model.pre_processor is None  # OddOneOut's own default (pre_processor=False)
    assert OddOneOutModel(**small).crop_margin == 0.1
    with pytest.raises(TypeError, match="no_such_switch"):
        OddOneOutModel(no_such_switch=1)
