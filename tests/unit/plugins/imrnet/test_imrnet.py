"""IMRNet plugin: components, switches, determinism, checkpoint weights and bad inputs.

A tiny configuration keeps every test well under a second or two on a CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from anomalib_3d.data.dataclasses import PointCloudBatch, PointCloudItem
from anomalib_3d.data.errors import InvalidPointsError, MissingWeightsError, PointCloudError
from anomalib_3d_plugins.imrnet import IMRNet, IMRNetModel
from anomalib_3d.nn.point_mae import map_point_mae_state_dict
from anomalib_3d_plugins.imrnet.loss import masked_patch_chamfer_loss, patch_chamfer_scores, patch_point_distances
from doubles.imrnet import TINY_NETWORK, batch_of, blob, tiny_imrnet

TINY = {
    "num_points": 256,
    "num_groups": 16,
    **TINY_NETWORK,
    "template_size": 64,
    # The pre-diagnosis scoring (point + template feature score, one pass of window masks, no
    # geometric residual): the tests below were written for it; the new switches have their own.
    "use_point_score": True,
    "geometric_score_weight": 0.0,
    "test_masks": "windows",
    "test_mask_passes": 1,
}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(**overrides: object) -> IMRNetModel:
    return tiny_imrnet(TINY, **overrides)


def calibrated(model: IMRNetModel) -> IMRNetModel:
    model.calibrate([batch_of(blob(300, 1), blob(300, 2)), batch_of(blob(320, 3))])
    return model


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------
def test_patch_losses_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 3, 5, 3)).astype(np.float32)
    b = rng.normal(size=(2, 3, 7, 3)).astype(np.float32)
    expected_patch = np.zeros((2, 3))
    expected_point = np.zeros((2, 3, 5))
    for i in range(2):
        for j in range(3):
            d = cdist(a[i, j], b[i, j], "sqeuclidean")
            expected_patch[i, j] = d.min(1).mean() + d.min(0).mean()
            expected_point[i, j] = d.min(1)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    np.testing.assert_allclose(patch_chamfer_scores(ta, tb).numpy(), expected_patch, rtol=1e-5)
    np.testing.assert_allclose(patch_point_distances(ta, tb).numpy(), expected_point, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(masked_patch_chamfer_loss(ta, tb)), expected_patch.mean(), rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Point-MAE checkpoint
# --------------------------------------------------------------------------------------------
def point_mae_state_dict(dim: int, group_size: int, depth: int = 1, decoder_depth: int = 2) -> dict[str, torch.Tensor]:
    """Keys and shapes of Point-MAE's released ``pretrain.pth`` ``base_model`` (at ``dim`` wide)."""
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    sd = {
        "MAE_encoder.encoder.first_conv.0.weight": r(128, 3, 1),
        "MAE_encoder.encoder.first_conv.0.bias": r(128),
        "MAE_encoder.encoder.first_conv.1.weight": r(128),
        "MAE_encoder.encoder.first_conv.1.bias": r(128),
        "MAE_encoder.encoder.first_conv.1.running_mean": r(128),
        "MAE_encoder.encoder.first_conv.1.running_var": r(128).abs(),
        "MAE_encoder.encoder.first_conv.1.num_batches_tracked": torch.tensor(7),
        "MAE_encoder.encoder.first_conv.3.weight": r(256, 128, 1),
        "MAE_encoder.encoder.first_conv.3.bias": r(256),
        "MAE_encoder.encoder.second_conv.0.weight": r(512, 512, 1),
        "MAE_encoder.encoder.second_conv.0.bias": r(512),
        "MAE_encoder.encoder.second_conv.1.weight": r(512),
        "MAE_encoder.encoder.second_conv.1.bias": r(512),
        "MAE_encoder.encoder.second_conv.3.weight": r(dim, 512, 1),
        "MAE_encoder.encoder.second_conv.3.bias": r(dim),
        "MAE_encoder.pos_embed.0.weight": r(128, 3),
        "MAE_encoder.pos_embed.0.bias": r(128),
        "MAE_encoder.pos_embed.2.weight": r(dim, 128),
        "MAE_encoder.pos_embed.2.bias": r(dim),
        "MAE_encoder.norm.weight": r(dim),
        "MAE_encoder.norm.bias": r(dim),
        "MAE_encoder.cls_token": r(1, 1, dim),  # not in the pretraining model: must be reported
        "mask_token": r(1, 1, dim),
        "decoder_pos_embed.0.weight": r(128, 3),
        "decoder_pos_embed.0.bias": r(128),
        "decoder_pos_embed.2.weight": r(dim, 128),
        "decoder_pos_embed.2.bias": r(dim),
        "MAE_decoder.norm.weight": r(dim),
        "MAE_decoder.norm.bias": r(dim),
        "increase_dim.0.weight": r(3 * group_size, dim, 1),
        "increase_dim.0.bias": r(3 * group_size),
    }
    for prefix, n in (("MAE_encoder.blocks.blocks", depth), ("MAE_decoder.blocks", decoder_depth)):
        for i in range(n):
            base = f"{prefix}.{i}"
            sd.update({
                f"{base}.norm1.weight": r(dim), f"{base}.norm1.bias": r(dim),
                f"{base}.attn.qkv.weight": r(3 * dim, dim),
                f"{base}.attn.proj.weight": r(dim, dim), f"{base}.attn.proj.bias": r(dim),
                f"{base}.norm2.weight": r(dim), f"{base}.norm2.bias": r(dim),
                f"{base}.mlp.fc1.weight": r(4 * dim, dim), f"{base}.mlp.fc1.bias": r(4 * dim),
                f"{base}.mlp.fc2.weight": r(dim, 4 * dim), f"{base}.mlp.fc2.bias": r(dim),
            })
    return sd


def test_point_mae_checkpoint_loads_by_name_and_shape(tmp_path) -> None:
    # Point-MAE's tokenizer is 128/256/512 wide (tokenizer_width=256); patches of 32 points.
    model = tiny_model(tokenizer_width=256, group_size=16)
    source = point_mae_state_dict(dim=32, group_size=32)
    path = tmp_path / "pretrain.pth"
    torch.save({"base_model": {f"module.{k}": v for k, v in source.items()}, "epoch": 300}, path)
    loaded, skipped = model.load_point_mae(path)
    state = model.state_dict()
    torch.testing.assert_close(state["tokenizer.first_conv.0.weight"], source["MAE_encoder.encoder.first_conv.0.weight"][..., 0])
    torch.testing.assert_close(state["encoder.blocks.0.attn.qkv.weight"], source["MAE_encoder.blocks.blocks.0.attn.qkv.weight"])
    torch.testing.assert_close(state["decoder.blocks.1.mlp.fc2.bias"], source["MAE_decoder.blocks.1.mlp.fc2.bias"])
    torch.testing.assert_close(state["mask_token"], source["mask_token"])
    assert "tokenizer.first_conv.1.running_var" in loaded
    skipped_keys = {s.split(":")[0] for s in skipped}
    # increase_dim predicts 32 points, our head 16: reported, not loaded.
    assert {"module.increase_dim.0.weight", "module.MAE_encoder.cls_token"} <= skipped_keys
    assert all("shape" in s for s in skipped if "increase_dim" in s)
    assert len(loaded) + len(skipped) == len(source)


def test_point_mae_mapping_reports_shape_mismatch() -> None:
    model = tiny_model()
    mapped, loaded, skipped = map_point_mae_state_dict(point_mae_state_dict(dim=48, group_size=16), model.state_dict())
    assert "mask_token" not in mapped and any(s.startswith("mask_token") for s in skipped)
    assert set(loaded) == set(mapped)


def test_missing_pretrained_file_names_what_to_download(tmp_path) -> None:
    with pytest.raises(MissingWeightsError, match="pretrain.pth") as info:
        tiny_model().load_point_mae(tmp_path / "nope" / "pretrain.pth")
    assert "Point-MAE" in str(info.value) and str(tmp_path / "nope" / "pretrain.pth") in str(info.value)


# --------------------------------------------------------------------------------------------
# inference behaviour
# --------------------------------------------------------------------------------------------
def test_every_input_point_gets_a_score() -> None:
    model = calibrated(tiny_model())
    points, batch = batch_of(blob(700, 10), blob(180, 11))  # one subsampled, one used whole
    out = model(points, batch)
    assert out.anomaly_map.shape == (880,)
    assert out.pred_score.shape == (2,)
    assert torch.isfinite(out.anomaly_map).all()
    torch.testing.assert_close(out.anomaly_map, out.point_map + out.feature_map)
    maxima = torch.stack([out.anomaly_map[batch == b].max() for b in range(2)])
    torch.testing.assert_close(out.pred_score, maxima)


def test_scores_do_not_depend_on_pose_scale_or_batch() -> None:
    model = calibrated(tiny_model())
    cloud = blob(400, 5, bump=True)
    alone = model(cloud).anomaly_map
    moved = model(cloud * 0.01 - 7.0).anomaly_map
    torch.testing.assert_close(alone, moved, rtol=1e-3, atol=1e-4)
    points, batch = batch_of(blob(300, 6), cloud)
    torch.testing.assert_close(model(points, batch).anomaly_map[batch == 1], alone, rtol=1e-4, atol=1e-5)


def test_predictions_are_reproducible_and_seeded() -> None:
    model = calibrated(tiny_model())
    cloud = blob(400, 7)
    first = model(cloud).anomaly_map
    torch.testing.assert_close(model(cloud).anomaly_map, first, rtol=0, atol=0)
    model.apply_settings(model.settings.replace(seed=1))  # other test masks
    assert not torch.allclose(model(cloud).anomaly_map, first)


def test_test_masks_cover_every_patch_with_different_windows() -> None:
    model = tiny_model()  # 16 patches, mask 0.4 -> 6 masked, 3 iterations
    masks = model.test_masks(torch.device("cpu"))
    assert len(masks) == 3 and all(m.numel() == 6 for m in masks)
    assert len({tuple(m.tolist()) for m in masks}) == 3
    assert torch.cat(masks).unique().numel() == 16
    for m in masks:
        assert m.unique().numel() == 6


def test_iterations_that_cannot_cover_all_patches_warn() -> None:
    with pytest.warns(UserWarning, match="do not cover"):
        IMRNetModel(**{**TINY, "num_iterations": 1})


def test_iterative_reconstruction_feeds_outputs_back() -> None:
    model = tiny_model()
    neighborhoods = torch.randn(2, 16, 16, 3) * 0.1
    centers = torch.randn(2, 16, 3)
    iterative = model.iterative_reconstruct(neighborhoods, centers)
    model.apply_settings(model.settings.replace(iterative_reconstruction=False))
    one_shot = model.iterative_reconstruct(neighborhoods, centers)
    masks = model.test_masks(torch.device("cpu"))
    # Patches masked only in the first window are reconstructed from the original input either way.
    first_only = sorted(set(masks[0].tolist()) - set(torch.cat(masks[1:]).tolist()))
    assert first_only
    torch.testing.assert_close(iterative[:, first_only], one_shot[:, first_only])
    # Later windows see reconstructed context only when iterating.
    assert not torch.allclose(iterative[:, masks[-1]], one_shot[:, masks[-1]])
    # One-shot: each window equals a single reconstruction from the original input.
    expected = model.reconstruct(neighborhoods, centers, masks[-1].unsqueeze(0).expand(2, -1))
    torch.testing.assert_close(one_shot[:, masks[-1]], expected)


@pytest.mark.parametrize(
    ("switch", "value"),
    [
        ("iterative_reconstruction", False),
        ("num_iterations", 4),
        ("mask_ratio", 0.6),
        ("sampler", "fps"),
        ("sampler", "random"),
        ("sampler", "voxel"),
        ("point_score_mode", "patch" if IMRNetModel().point_score_mode == "point" else "point"),
        ("point_aggregation", "max"),
        ("smoothing_k", 8),
        ("feature_reference", "reconstruction"),
        ("point_score_weight", 2.0),
    ],
)
def test_each_switch_changes_the_scores(switch: str, value: object) -> None:
    cloud = blob(400, 9, bump=True)
    reference = calibrated(tiny_model())(cloud).anomaly_map
    changed = calibrated(tiny_model(**{switch: value}))(cloud).anomaly_map
    assert changed.shape == reference.shape
    assert not torch.allclose(changed, reference)


def test_feature_score_switch() -> None:
    cloud = blob(400, 9, bump=True)
    full = calibrated(tiny_model())(cloud)
    points_only = calibrated(tiny_model(use_feature_score=False))(cloud)
    features_only = calibrated(tiny_model(use_point_score=False))(cloud)
    assert points_only.feature_map is None and features_only.point_map is None
    assert not torch.allclose(points_only.anomaly_map, full.anomaly_map)
    torch.testing.assert_close(points_only.anomaly_map, full.point_map)
    torch.testing.assert_close(features_only.anomaly_map, full.feature_map)
    with pytest.raises(ValueError, match="at least one"):
        tiny_model(use_point_score=False, use_feature_score=False)


def test_template_regularization_replaces_only_far_features() -> None:
    model = tiny_model()
    dim = model.template_bank.shape[1]
    model.template_bank[:2] = torch.stack([torch.zeros(dim), torch.full((dim,), 10.0)])
    model.template_count.fill_(2)
    model.template_delta.fill_(1.0)
    near = torch.full((dim,), 0.01)
    far = torch.full((dim,), 8.0)
    out = model.regularize(torch.stack([near, far]).view(1, 2, dim))
    torch.testing.assert_close(out[0, 0], near)
    torch.testing.assert_close(out[0, 1], torch.full((dim,), 10.0))
    model.apply_settings(model.settings.replace(template_regularization=False))
    torch.testing.assert_close(model.regularize(torch.stack([near, far]).view(1, 2, dim))[0, 1], far)


def test_template_regularization_switch_changes_paper_literal_scores() -> None:
    cloud = blob(400, 9, bump=True)
    # δ at the 10 % quantile: most reconstruction features are farther and get replaced.
    literal = {"feature_reference": "reconstruction", "template_quantile": 0.1}
    regularized = calibrated(tiny_model(**literal))(cloud)
    plain = calibrated(tiny_model(**literal, template_regularization=False))(cloud)
    torch.testing.assert_close(regularized.point_map, plain.point_map)
    assert not torch.allclose(regularized.feature_map, plain.feature_map)


def test_template_score_scale_uses_held_out_clouds() -> None:
    model = calibrated(tiny_model())
    # Against a template holding them, training clouds would score ~0; the scale must not.
    assert float(model.feature_score_scale) > 1e-3
    train_points, train_batch = batch_of(blob(300, 1), blob(300, 2))
    _, _, feature_scores, covered = model.raw_scores(train_points, train_batch)
    assert float(feature_scores[covered].mean()) < 0.1 * float(model.feature_score_scale)


def test_training_patches_are_cached_per_file() -> None:
    model = tiny_model().train()
    points, batch = batch_of(blob(700, 1), blob(300, 2))
    first = model.training_patches(points, batch, paths=["a.pcd", "b.pcd"])
    assert len(model._patch_cache) == 2
    again = model.training_patches(points, batch, paths=["a.pcd", "b.pcd"])
    torch.testing.assert_close(first[0], again[0], rtol=0, atol=0)
    # The cached patches are the deterministic test-time patches.
    reference = model.make_patches(model.prepare(points, batch, stochastic=False), stochastic=False)
    torch.testing.assert_close(first[0], reference.neighborhoods)
    torch.testing.assert_close(first[1], reference.centers)
    model.training_patches(points, batch)  # no paths: nothing cached
    assert len(model._patch_cache) == 2


def test_calibration_lives_in_the_state_dict() -> None:
    model = calibrated(tiny_model())
    assert bool(model.calibrated) and 0 < int(model.template_count) <= 64
    assert float(model.template_delta) > 0 and float(model.point_score_scale) != 1.0
    fresh = IMRNetModel(**TINY).eval()
    fresh.load_state_dict(model.state_dict())
    cloud = blob(400, 12, bump=True)
    torch.testing.assert_close(fresh(cloud).anomaly_map, model(cloud).anomaly_map, rtol=0, atol=0)


def test_checkpoint_with_flat_geometric_buffers_loads_and_predicts_the_same() -> None:
    model = calibrated(tiny_model(geometric_score_weight=0.5, registration="icp", template_points=200))
    flat = {
        {"geometric_bank.points": "geometric_templates", "geometric_bank.ptr": "geometric_ptr"}.get(k, k): v
        for k, v in model.state_dict().items()
    }
    assert "geometric_templates" in flat and not any(k.startswith("geometric_bank.") for k in flat)
    fresh = IMRNetModel(**{**TINY, "geometric_score_weight": 0.5, "registration": "icp"}).eval()
    fresh.load_state_dict(flat)
    cloud = blob(400, 12, bump=True)
    expected = model(cloud)
    for name, value in zip(expected._fields, fresh(cloud), strict=True):
        torch.testing.assert_close(value, getattr(expected, name), rtol=0, atol=0)
    # Inside the anomalib module too (keys under "model.").
    module = lightning_tiny(geometric_score_weight=0.5, registration="icp").eval()
    state = {k: v for k, v in module.state_dict().items() if not k.startswith("model.")}
    module.load_state_dict({**state, **{f"model.{k}": v for k, v in flat.items()}})
    torch.testing.assert_close(module.model(cloud).anomaly_map, expected.anomaly_map, rtol=0, atol=0)


def test_registration_settings_live_on_the_template_bank() -> None:
    model = tiny_model(registration="icp", template_selection="first", seed=3)
    assert model.geometric_bank.registration == "icp" and model.geometric_bank.seed == 3
    model.apply_settings(model.settings.replace(registration="none", template_selection="nearest", seed=5))
    assert model.geometric_bank.registration == "none" and model.geometric_bank.selection == "nearest"
    assert model.geometric_bank.seed == 5 and model.seed == 5
    assert model.settings.registration == "none"


def test_settings_are_read_once_and_switch_a_built_model() -> None:
    from anomalib_3d_plugins.imrnet.settings import IMRNetSettings

    settings = IMRNetSettings(**TINY)
    model = IMRNetModel(settings)
    assert model.settings is settings and model.feature_layers == (1, 2) and model.test_masks_mode == "windows"
    assert IMRNetModel(settings, object_score="topk").object_score == "topk"
    with pytest.raises(TypeError, match="no_such_switch"):
        IMRNetModel(**TINY, no_such_switch=1)
    model.apply_settings(settings.replace(use_point_score=False, test_masks="random"))
    assert not model.use_point_score and model.test_masks_mode == "random"
    with pytest.raises(ValueError, match="embed_dim"):
        model.apply_settings(settings.replace(embed_dim=64))  # parameters are built: a new model is needed
    assert model.settings.embed_dim == 32
    # YAML gives lists: the settings hold tuples, so configs and Python build equal settings.
    assert IMRNetSettings(**{**TINY, "feature_layers": [1, 2]}) == settings


def test_template_keeps_farthest_features_when_full() -> None:
    model = tiny_model(template_size=20)
    stats = model.calibrate([batch_of(blob(300, 1), blob(300, 2))])
    assert stats["template_count"] == 20


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
def test_too_small_cloud_is_a_clear_error() -> None:
    model = tiny_model()
    points, batch = batch_of(blob(300, 1), blob(10, 2))
    with pytest.raises(InvalidPointsError, match=r"cloud 1 has 10 points.*16 patches of 16 points") as info:
        model(points, batch, paths=["a.pcd", "tiny.pcd"])
    assert "tiny.pcd" in str(info.value) and "Fix:" in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [{"sampler": "octree"}, {"mask_ratio": 1.0}, {"feature_layers": (3,)}, {"num_points": 8}, {"object_score": "mean"}],
)
def test_bad_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        IMRNetModel(**{**TINY, **kwargs})


# --------------------------------------------------------------------------------------------
# training and the Lightning module
# --------------------------------------------------------------------------------------------
def test_training_reduces_the_reconstruction_loss() -> None:
    torch.manual_seed(0)
    model = IMRNetModel(**TINY).train()
    points, batch = batch_of(blob(300, 1), blob(300, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        loss = model.training_loss(points, batch, generator=gen)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    patches = model.make_patches(model.prepare(points, batch)).neighborhoods
    # Reference: predicting every point at the patch centre.
    trivial = float(masked_patch_chamfer_loss(torch.zeros_like(patches), patches))
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])
    assert np.mean(losses[-5:]) < 0.6 * trivial


def point_batch(labels: list[int], sizes: tuple[int, ...] = (300, 320)) -> PointCloudBatch:
    items = [
        PointCloudItem(points=blob(n, 20 + i), gt_label=label, gt_mask=torch.zeros(n, dtype=torch.bool),
                       point_path=f"cloud_{i}.pcd")
        for i, (n, label) in enumerate(zip(sizes, labels, strict=True))
    ]
    return PointCloudBatch.collate(items)


def lightning_tiny(**overrides: object) -> IMRNet:
    torch.manual_seed(0)
    return IMRNet(**{**TINY, **overrides}, evaluator=False, visualizer=False)


def test_training_step_refuses_anomalous_samples() -> None:
    model = lightning_tiny()
    assert torch.isfinite(model.training_step(point_batch([0, 0]), 0)["loss"])
    with pytest.raises(PointCloudError, match=r"anomalous.*cloud_1.pcd"):
        model.training_step(point_batch([0, 1]), 0)


def test_test_step_writes_predictions_for_point_and_depth_batches() -> None:
    from anomalib.data import DepthBatch

    model = lightning_tiny().eval()
    out = model.test_step(point_batch([0, 1]), 0)
    assert out.anomaly_map.shape == (620,) and out.pred_score.shape == (2,)

    h, w = 20, 24
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    xyz = torch.stack([xx, yy, 0.1 * torch.sin(4 * xx)], 0).unsqueeze(0).repeat(2, 1, 1, 1)
    xyz[:, :, :3] = 0.0  # pixels without a point
    depth = DepthBatch(
        image=torch.rand(2, 3, h, w),
        depth_map=xyz,
        gt_mask=torch.zeros(2, h, w, dtype=torch.bool),
        gt_label=torch.tensor([0, 1]),
    )
    out = model.test_step(depth, 0)
    assert out.anomaly_map.shape[-2:] == (h, w) and out.pred_score.shape == (2,)


def test_small_preset_and_learning_type() -> None:
    from anomalib import LearningType

    model = IMRNet.small(evaluator=False, visualizer=False)
    assert model.model.embed_dim == 128 and model.model.num_groups == 64 and model.model.group_size == 32
    assert len(model.model.encoder.blocks) == 4 and len(model.model.decoder.blocks) == 2
    assert model.learning_type == LearningType.ONE_CLASS
    assert model.trainer_arguments["num_sanity_val_steps"] == 0


def test_missing_pretrained_path_fails_at_fit_start(tmp_path) -> None:
    model = lightning_tiny(pretrained_path=str(tmp_path / "pretrain.pth"))
    with pytest.raises(MissingWeightsError, match="Point-MAE"):
        model.load_pretrained()


# --------------------------------------------------------------------------------------------
# diagnosis switches: geometric residual, registration, test masks, paper-literal preset
# --------------------------------------------------------------------------------------------
def _rotation_z(degrees: float) -> torch.Tensor:
    angle = torch.tensor(degrees * np.pi / 180)
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_geometric_residual_is_distance_to_templates_over_leave_one_out_mean() -> None:
    from anomalib_3d.ops import normalize_clouds

    model = calibrated(tiny_model(geometric_score_weight=0.5, registration="none", template_points=None))
    train = [blob(300, 1), blob(300, 2), blob(320, 3)]
    frames = [normalize_clouds(c, torch.zeros(c.shape[0], dtype=torch.long)) for c in train]
    # The templates are the normalised training clouds (in a canonical order: ranks do not matter).
    templates = sorted(model.geometric_template_list, key=lambda t: float(t.sum()))
    for template, frame in zip(templates, sorted(frames, key=lambda f: float(f.sum())), strict=True):
        torch.testing.assert_close(template, frame)
    # Leave-one-out scale, by brute force (scipy).
    held_out = [cdist(f.numpy(), torch.cat([g for j, g in enumerate(frames) if j != i]).numpy()).min(1) for i, f in enumerate(frames)]
    assert float(model.geometric_score_scale) == pytest.approx(float(np.concatenate(held_out).mean()), rel=1e-4)
    cloud = blob(400, 9, bump=True)
    query = normalize_clouds(cloud, torch.zeros(400, dtype=torch.long))
    expected = cdist(query.numpy(), torch.cat(frames).numpy()).min(1) / float(model.geometric_score_scale)
    out = model(cloud)
    np.testing.assert_allclose(out.geometric_map.numpy(), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.anomaly_map, out.point_map + out.feature_map + 0.5 * out.geometric_map)
    # A dent that leaves the bounding box as it is scores above the rest of the cloud.
    local = (blob(400, 9) - torch.tensor([5.0, -2.0, 1.0])) / 3.0
    dent = (local[:, 0].abs() < 0.4) & (local[:, 1] > 0.2) & (local[:, 2] > 0.2)
    dented = torch.where(dent.unsqueeze(1), local * 0.8, local) * 3.0
    geometric = model(dented).geometric_map
    assert dent.sum() > 5 and geometric[dent].mean() > 2 * geometric[~dent].mean()


def test_geometric_weight_zero_reproduces_the_old_scores() -> None:
    cloud = blob(400, 9, bump=True)
    old = calibrated(tiny_model())(cloud)
    off = calibrated(tiny_model(geometric_score_weight=0.0, registration="icp"))(cloud)
    torch.testing.assert_close(off.anomaly_map, old.anomaly_map, rtol=0, atol=0)
    assert off.geometric_map is None
    on = calibrated(tiny_model(geometric_score_weight=1.0, registration="none"))(cloud)
    assert not torch.allclose(on.anomaly_map, old.anomaly_map)


def test_geometric_score_needs_calibration() -> None:
    with pytest.raises(RuntimeError, match="calibrate"):
        tiny_model(geometric_score_weight=1.0)(blob(300, 1))


def test_registration_undoes_a_rotation_of_the_test_cloud() -> None:
    train = [blob(800, 1), blob(800, 2)]
    turned = blob(800, 1) @ _rotation_z(25.0).T  # a training part, turned
    rotated = {}
    for method in ("none", "icp"):
        model = tiny_model(geometric_score_weight=1.0, registration=method, use_point_score=False)
        model.calibrate([batch_of(*train)])
        rotated[method] = model.geometric_bank.distances(turned, torch.zeros(800, dtype=torch.long))
    # Unregistered, the rotation reads as a defect everywhere; registered, it mostly disappears.
    assert rotated["icp"].mean() < 0.3 * rotated["none"].mean()


def test_nearest_template_selection_keeps_to_the_clouds_own_kind() -> None:
    from anomalib_3d.ops import normalize_clouds

    g = torch.Generator().manual_seed(0)
    boxes = [torch.rand(300, 3, generator=g) * torch.tensor([2.0, 1.0, 0.2]) for _ in range(2)]
    blobs = [blob(300, 1), blob(300, 2)]
    cloud = blob(400, 9)
    scores = {}
    for selection in ("first", "nearest"):
        model = tiny_model(geometric_score_weight=1.0, registration="none", template_points=None,
                           registration_templates=2, template_selection=selection)
        model.calibrate([batch_of(*boxes, *blobs)])
        scores[selection] = model.geometric_bank.distances(cloud, torch.zeros(400, dtype=torch.long))
    frames = [normalize_clouds(c, torch.zeros(c.shape[0], dtype=torch.long)) for c in blobs]
    query = normalize_clouds(cloud, torch.zeros(400, dtype=torch.long))
    expected = cdist(query.numpy(), torch.cat(frames).numpy()).min(1)  # the blob templates only
    np.testing.assert_allclose(scores["nearest"].numpy(), expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(scores["first"].numpy(), expected)


def test_random_test_masks_are_fresh_per_iteration_and_run() -> None:
    model = tiny_model(test_masks="random", test_mask_passes=3)
    first, second = model.test_masks(torch.device("cpu"), 0), model.test_masks(torch.device("cpu"), 1)
    assert all(m.numel() == 6 and m.unique().numel() == 6 for m in first + second)
    assert len({tuple(sorted(m.tolist())) for m in first + second}) == 6
    torch.testing.assert_close(torch.stack(first), torch.stack(model.test_masks(torch.device("cpu"), 0)))
    cloud = blob(400, 9, bump=True)
    windows = calibrated(tiny_model())(cloud).point_map
    random_masks = calibrated(tiny_model(test_masks="random", test_mask_passes=3))(cloud).point_map
    assert not torch.allclose(windows, random_masks)


def test_test_mask_passes_average_runs_over_the_patches_they_masked() -> None:
    model = tiny_model(test_masks="random", test_mask_passes=2)
    neighborhoods = torch.randn(1, 16, 16, 3) * 0.1
    centers = torch.randn(1, 16, 3)
    scores, _ = model.patch_scores(neighborhoods, centers)
    runs = []
    for run in range(2):
        masked = torch.zeros(16)
        masked[torch.cat(model.test_masks(torch.device("cpu"), run))] = 1
        runs.append((patch_chamfer_scores(neighborhoods, model.iterative_reconstruct(neighborhoods, centers, run))[0], masked))
    expected = (runs[0][0] * runs[0][1] + runs[1][0] * runs[1][1]) / (runs[0][1] + runs[1][1]).clamp_min(1)
    torch.testing.assert_close(scores[0], expected)


def test_windows_single_pass_is_the_old_scoring() -> None:
    model = tiny_model()  # windows, one pass
    neighborhoods = torch.randn(1, 16, 16, 3) * 0.1
    centers = torch.randn(1, 16, 3)
    scores, _ = model.patch_scores(neighborhoods, centers)
    old = patch_chamfer_scores(neighborhoods, model.iterative_reconstruct(neighborhoods, centers))
    torch.testing.assert_close(scores, old)


def test_paper_literal_preset_and_new_defaults() -> None:
    from anomalib_3d_plugins.imrnet import PAPER_LITERAL

    paper = IMRNet.paper_literal(**{**TINY, **PAPER_LITERAL}).model
    assert paper.feature_reference == "reconstruction" and paper.use_point_score
    assert paper.geometric_score_weight == 0 and paper.registration == "none" and paper.test_masks_mode == "windows"
    default = IMRNet.small().model
    assert default.geometric_score_weight > 0 and default.registration == "icp" and not default.use_point_score
    assert default.feature_reference == "template" and default.test_masks_mode == "random"


@pytest.mark.parametrize(
    "kwargs",
    [{"test_masks": "nope"}, {"registration": "ransac"}, {"test_mask_passes": 0}, {"geometric_score_weight": -1.0},
     {"template_selection": "all"}],
)
def test_bad_diagnosis_switches_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        IMRNetModel(**{**TINY, **kwargs})
