"""IMRNet's scoring switches from the held-out study: feature normalisation, the per-cloud-maximum
score scale, denser patches when scoring, and the smoothed geometric residual - each checked
against an independent computation (scipy / numpy in float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

from anomalib_3d.ops import normalize_clouds
from anomalib_3d_plugins.imrnet import PAPER_LITERAL, IMRNet, IMRNetModel
from anomalib_3d_plugins.imrnet.calibration import mean_cloud_maximum
from anomalib_3d_plugins.imrnet.scoring import nearest_template
from doubles.imrnet import TINY_NETWORK, batch_of, blob, tiny_imrnet

pytestmark = pytest.mark.usefixtures("one_thread")

# A tiny network scoring with the feature template (and, where a test asks, the geometric residual).
TINY = {
    "num_points": 256,
    "num_groups": 16,
    **TINY_NETWORK,
    "template_size": 256,  # holds every training patch: the template is all of them
    "geometric_score_weight": 0.0,
    "feature_normalization": "none",
    "score_scale": "mean",
    "test_num_groups": None,
    "geometric_smoothing_k": 0,
}


def tiny_model(**overrides: object) -> IMRNetModel:
    return tiny_imrnet(TINY, **overrides)


TRAIN = [blob(300, 1), blob(300, 2), blob(320, 3)]


def calibrated(model: IMRNetModel) -> IMRNetModel:
    model.calibrate([batch_of(*TRAIN)])
    return model


def raw_training_features(model: IMRNetModel) -> list[np.ndarray]:
    """Fused decoder features of each training cloud's patches, float64, as the model scores them."""
    out = []
    with torch.no_grad():
        for cloud in TRAIN:
            patches = model.make_patches(model.prepare(*batch_of(cloud)))
            out.append(model.decoder_features(patches.neighborhoods, patches.centers)[0].double().numpy())
    return out


# --------------------------------------------------------------------------------------------
# feature normalisation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["none", "center", "standardize"])
def test_feature_normalization_is_the_training_features_frame(mode: str) -> None:
    model = calibrated(tiny_model(feature_normalization=mode))
    features = np.concatenate(raw_training_features(model))
    mean = features.mean(0) if mode != "none" else np.zeros(features.shape[1])
    std = features.std(0, ddof=1).clip(1e-4) if mode == "standardize" else np.ones(features.shape[1])
    np.testing.assert_allclose(model.feature_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.feature_std.numpy(), std, rtol=1e-4, atol=1e-5)
    # The template holds the training features in that frame (all of them: the bank is big enough).
    template = model.template_bank[: int(model.template_count)].double().numpy()
    expected = (features - mean) / std
    assert template.shape == expected.shape
    np.testing.assert_allclose(np.sort(template, axis=0), np.sort(expected, axis=0), rtol=1e-3, atol=1e-3)


def test_centred_distances_keep_their_digits() -> None:
    # Layer-normalised features barely differ between patches: a large common part and small
    # differences, the case where float32 |a|^2 + |b|^2 - 2ab cancels. Centred, the distances are
    # exact to float32 precision; the raw ones are not.
    g = torch.Generator().manual_seed(0)
    common = torch.randn(64, generator=g) * 4.0
    bank = common + 1e-3 * torch.randn(300, 64, generator=g)
    queries = common + 1e-3 * torch.randn(40, 64, generator=g)
    exact = cdist(queries.double().numpy(), bank.double().numpy()).min(1)
    centre = bank.mean(0)
    _, centred = nearest_template(queries - centre, bank - centre)
    _, raw = nearest_template(queries, bank)
    np.testing.assert_allclose(centred.numpy(), exact, rtol=1e-3)
    assert np.abs(raw.numpy() - exact).max() > 10 * np.abs(centred.numpy() - exact).max()


def test_old_checkpoint_without_feature_frame_scores_as_before() -> None:
    old = calibrated(tiny_model())
    state = {k: v for k, v in old.state_dict().items() if k not in ("feature_mean", "feature_std")}
    new = tiny_model(feature_normalization="standardize")
    new.load_state_dict(state)
    cloud = blob(400, 9, bump=True)
    torch.testing.assert_close(new(cloud).anomaly_map, old(cloud).anomaly_map, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# score scales
# --------------------------------------------------------------------------------------------
def test_mean_cloud_maximum() -> None:
    values = torch.tensor([1.0, 3.0, float("inf"), 2.0, 5.0, 4.0])
    ids = torch.tensor([0, 0, 0, 1, 1, 2])
    assert mean_cloud_maximum(values, ids) == pytest.approx((3.0 + 5.0 + 4.0) / 3)


@pytest.mark.parametrize("score_scale", ["mean", "cloud_max"])
def test_feature_scale_from_held_out_clouds(score_scale: str) -> None:
    model = calibrated(tiny_model(feature_normalization="standardize", score_scale=score_scale))
    features = raw_training_features(model)
    frame = [(f - model.feature_mean.double().numpy()) / model.feature_std.double().numpy() for f in features]
    held_out = [cdist(f, np.concatenate([g for j, g in enumerate(frame) if j != i])).min(1) for i, f in enumerate(frame)]
    expected = np.concatenate(held_out).mean() if score_scale == "mean" else np.mean([h.max() for h in held_out])
    assert float(model.feature_score_scale) == pytest.approx(expected, rel=1e-3)


def test_geometric_scale_and_smoothing_by_brute_force() -> None:
    k = 6
    model = calibrated(tiny_model(
        geometric_score_weight=1.0, registration="none", template_points=None, score_scale="cloud_max", geometric_smoothing_k=k,
    ))
    frames = [normalize_clouds(c, torch.zeros(c.shape[0], dtype=torch.long)).double().numpy() for c in TRAIN]

    def knn_mean(points: np.ndarray, values: np.ndarray) -> np.ndarray:
        _, index = cKDTree(points).query(points, k)
        return values[index].mean(1)

    held_out = [
        knn_mean(f, cdist(f, np.concatenate([g for j, g in enumerate(frames) if j != i])).min(1)) for i, f in enumerate(frames)
    ]
    scale = np.mean([h.max() for h in held_out])
    assert float(model.geometric_score_scale) == pytest.approx(scale, rel=1e-4)
    cloud = blob(400, 9, bump=True)
    query = normalize_clouds(cloud, torch.zeros(400, dtype=torch.long)).double().numpy()
    # Neighbours are taken among the input points: in the input frame (any scale, same order).
    _, index = cKDTree(cloud.double().numpy()).query(cloud.double().numpy(), k)
    expected = cdist(query, np.concatenate(frames)).min(1)[index].mean(1) / scale
    np.testing.assert_allclose(model(cloud).geometric_map.numpy(), expected, rtol=1e-3, atol=1e-5)


def test_per_cloud_maximum_scale_puts_normal_maxima_near_one() -> None:
    model = calibrated(tiny_model(feature_normalization="standardize", score_scale="cloud_max", geometric_score_weight=1.0,
                                  registration="none"))
    out = model(*batch_of(blob(300, 4), blob(300, 5)))
    batch = torch.cat([torch.zeros(300, dtype=torch.long), torch.ones(300, dtype=torch.long)])
    for values in (out.feature_map, out.geometric_map):
        maxima = [float(values[batch == b].max()) for b in (0, 1)]
        assert all(0.3 < m < 3.0 for m in maxima), maxima


# --------------------------------------------------------------------------------------------
# denser patches when scoring
# --------------------------------------------------------------------------------------------
def test_more_test_patches_than_points_makes_every_point_a_centre() -> None:
    model = tiny_model(test_num_groups=10 * TINY["num_points"])
    model.eval()
    assert model.active_num_groups == TINY["num_points"]
    model.train()
    assert model.active_num_groups == TINY["num_groups"]


def test_a_cloud_smaller_than_test_num_groups_is_scored_with_fewer_patches() -> None:
    model = calibrated(tiny_model(test_num_groups=TINY["num_points"]))
    small = blob(TINY["num_groups"] + 8, 3)
    alone = model(small)
    assert torch.isfinite(alone.anomaly_map).all() and alone.anomaly_map.shape == (small.shape[0],)
    prepared = model.prepare(small, torch.zeros(small.shape[0], dtype=torch.long))
    assert model.groups_for(prepared) == small.shape[0]
    big = blob(400, 4)
    both = model(torch.cat([big, small]), torch.cat([torch.zeros(400), torch.ones(small.shape[0])]).long())
    assert both.pred_score.shape == (2,) and torch.isfinite(both.anomaly_map).all()


def test_test_num_groups_patches_scoring_only() -> None:
    model = tiny_model(test_num_groups=48)
    points, batch = batch_of(blob(300, 1))
    assert model.make_patches(model.prepare(points, batch)).centers.shape[1] == 48
    model.train()
    assert model.make_patches(model.prepare(points, batch)).centers.shape[1] == 16  # training keeps num_groups
    model.eval()
    calibrated(model)
    assert int(model.template_count) == min(3 * 48, 256)  # the template is made of scoring patches
    cloud = blob(400, 9, bump=True)
    dense, again = model(cloud), model(cloud)
    assert dense.anomaly_map.shape == (400,) and torch.isfinite(dense.anomaly_map).all()
    torch.testing.assert_close(dense.anomaly_map, again.anomaly_map, rtol=0, atol=0)
    sparse = calibrated(tiny_model())(cloud)
    assert not torch.allclose(dense.anomaly_map, sparse.anomaly_map)


def test_denser_scoring_patches_also_run_the_reconstruction_scores() -> None:
    model = calibrated(tiny_model(test_num_groups=40, use_point_score=True, feature_reference="reconstruction"))
    masks = model.test_masks(torch.device("cpu"), 0, 40)
    assert all(m.numel() == round(model.mask_ratio * 40) and int(m.max()) < 40 for m in masks)
    out = model(blob(400, 9, bump=True))
    assert torch.isfinite(out.point_map).all() and torch.isfinite(out.feature_map).all()


# --------------------------------------------------------------------------------------------
# presets and bad values
# --------------------------------------------------------------------------------------------
def test_paper_literal_keeps_the_papers_scoring_and_the_cpu_preset_uses_the_study() -> None:
    """The paper reading scores as the paper does; the CPU preset uses the scoring the held-out
    study confirmed (the benchmark's ``PREVIOUS_SCORING`` row is the paper's scoring)."""
    assert PAPER_LITERAL["feature_normalization"] == "none" and PAPER_LITERAL["score_scale"] == "mean"
    assert PAPER_LITERAL["test_num_groups"] is None and PAPER_LITERAL["geometric_smoothing_k"] == 0
    paper = IMRNet.paper_literal().model
    assert paper.feature_normalization == "none" and paper.score_scale == "mean"
    assert paper.test_num_groups is None and paper.geometric_smoothing_k == 0
    small = IMRNet.small().model
    assert small.feature_normalization == "standardize" and small.score_scale == "cloud_max"
    assert small.test_num_groups == 512 and small.geometric_smoothing_k > 1


@pytest.mark.parametrize(
    "kwargs",
    [{"feature_normalization": "whiten"}, {"score_scale": "max"}, {"test_num_groups": 1},
     {"geometric_smoothing_k": -1}],
)
def test_bad_scoring_switches_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        IMRNetModel(**{**TINY, **kwargs})
