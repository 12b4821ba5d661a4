"""TemplateBank: canonical order, registration into one frame, distances and scale vs brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.spatial.transform import Rotation

from anomalib_3d.data.synthetic import make_mesh, sample_surface
from anomalib_3d.ops import normalize_clouds
from anomalib_3d.ops.templates import (
    TemplateBank,
    cloud_checksums,
    fps_subsample,
    leave_one_out_distances,
    template_key,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def part(shape_seed: int, sampling_seed: int = 0, num_points: int = 600, category: str = "bracket") -> torch.Tensor:
    mesh = make_mesh(category, shape_seed)
    points, _, _ = sample_surface(mesh.vertices, mesh.faces, num_points, np.random.default_rng(sampling_seed))
    return torch.from_numpy(points).float()


def batch_of(*clouds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat(clouds), torch.cat([torch.full((len(c),), i) for i, c in enumerate(clouds)])


def turned(cloud: torch.Tensor, degrees: float) -> torch.Tensor:
    rotation = torch.from_numpy(Rotation.from_euler("z", degrees, degrees=True).as_matrix()).float()
    return cloud @ rotation.T + torch.tensor([0.3, -0.1, 0.2])


def fitted(clouds: list[torch.Tensor], **kwargs: object) -> TemplateBank:
    bank = TemplateBank(**kwargs)
    bank.fit(bank.prepare(*batch_of(*clouds)))
    return bank


def test_prepare_normalises_and_subsamples_each_cloud() -> None:
    clouds = [part(0), part(1, num_points=200)]
    bank = TemplateBank(normalization="rms", template_points=300)
    prepared = bank.prepare(*batch_of(*clouds))
    assert [p.shape[0] for p in prepared] == [300, 200]
    for cloud, kept in zip(clouds, prepared, strict=True):
        frame = normalize_clouds(cloud, torch.zeros(len(cloud), dtype=torch.long), "rms")
        # Every kept point is a point of the normalised cloud, none twice.
        distance = cdist(kept.numpy(), frame.numpy()).min(1)
        assert distance.max() < 1e-6 and torch.unique(kept, dim=0).shape[0] == kept.shape[0]
    torch.testing.assert_close(prepared[1], normalize_clouds(clouds[1], torch.zeros(200, dtype=torch.long), "rms"))


def test_fit_order_depends_on_content_only() -> None:
    clouds = [part(s) for s in range(4)]
    forward = fitted(clouds, registration="none", num_templates=2, template_points=None)
    backward = TemplateBank(registration="none", num_templates=2, template_points=None)
    ordered = backward.fit(backward.prepare(*batch_of(*clouds[2:])) + backward.prepare(*batch_of(*clouds[1::-1])))
    torch.testing.assert_close(forward.points, backward.points, rtol=0, atol=0)
    # The templates are the first clouds in lexicographic order of their content keys.
    keys = np.stack([template_key(c).numpy() for c in ordered])
    assert [tuple(k) for k in keys] == sorted(tuple(k) for k in keys)
    assert len(forward.templates) == 2 and forward.templates[0].shape == (600, 3)
    # Given keys decide the order instead.
    prepared = backward.prepare(*batch_of(*clouds))
    reverse = backward.fit(prepared, keys=-torch.arange(4.0))
    torch.testing.assert_close(reverse[0], prepared[3])


def test_templates_share_the_reference_frame() -> None:
    reference, other = part(0, sampling_seed=1, num_points=1500), part(0, sampling_seed=2, num_points=1500)
    bank = TemplateBank(normalization="none", registration="icp", template_points=None)
    bank.fit([reference, turned(other, 12.0)], keys=torch.tensor([0.0, 1.0]))
    moved_back = bank.templates[1]
    # The second template was registered onto the first: the turn is undone.
    distance = cdist(moved_back.numpy(), reference.numpy()).min(1)
    assert distance.mean() < 0.01 < cdist(turned(other, 12.0).numpy(), reference.numpy()).min(1).mean()


def test_distances_match_brute_force_without_registration() -> None:
    clouds = [part(s, num_points=300) for s in range(3)]
    query = part(7, num_points=250)
    frames = [normalize_clouds(c, torch.zeros(len(c), dtype=torch.long)) for c in clouds]
    frame = normalize_clouds(query, torch.zeros(len(query), dtype=torch.long)).numpy()
    everything = fitted(clouds, registration="none", template_points=None)
    expected = cdist(frame, torch.cat(frames).numpy()).min(1)
    np.testing.assert_allclose(everything.distances(query, torch.zeros(250, dtype=torch.long)).numpy(), expected,
                               rtol=1e-5, atol=1e-6)
    # "best": the single template that fits best (identity transform), measured alone.
    best = fitted(clouds, registration="none", template_points=None, distance_to="best")
    aligned, index = best.align(torch.from_numpy(frame))
    torch.testing.assert_close(aligned, torch.from_numpy(frame))
    single = best.distance(aligned, index, best.candidates(aligned)).numpy()
    np.testing.assert_allclose(single, cdist(frame, best.templates[index].numpy()).min(1), rtol=1e-5, atol=1e-6)
    assert (single >= expected - 1e-6).all()


def test_nearest_selection_keeps_to_the_clouds_own_kind() -> None:
    gears = [part(s, num_points=300, category="gear") for s in range(2)]
    brackets = [part(s, num_points=300) for s in range(2)]
    bank = fitted(gears + brackets, registration="none", template_points=None, registration_templates=2,
                  selection="nearest")
    query = part(5, num_points=250)
    frame = normalize_clouds(query, torch.zeros(250, dtype=torch.long))
    chosen = bank.candidates(frame)
    assert len(chosen) == 2
    own = [normalize_clouds(c, torch.zeros(300, dtype=torch.long)) for c in brackets]
    assert sorted(float(bank.templates[i].sum()) for i in chosen) == pytest.approx(sorted(float(c.sum()) for c in own))
    expected = cdist(frame.numpy(), torch.cat(own).numpy()).min(1)
    np.testing.assert_allclose(bank.distances(query, torch.zeros(250, dtype=torch.long)).numpy(), expected,
                               rtol=1e-5, atol=1e-6)


def test_leave_one_out_scale_matches_brute_force() -> None:
    clouds = [part(s, num_points=200) for s in range(3)]
    bank = fitted(clouds, registration="none", template_points=None)
    templates = [t.numpy() for t in bank.templates]
    expected = np.concatenate([
        cdist(t, np.concatenate([u for j, u in enumerate(templates) if j != i])).min(1) for i, t in enumerate(templates)
    ])
    assert bank.leave_one_out_scale() == pytest.approx(float(expected.mean()), rel=1e-5)
    np.testing.assert_allclose(leave_one_out_distances(bank.templates).numpy(), expected, rtol=1e-5, atol=1e-6)
    single = fitted(clouds[:1], registration="none", template_points=None)
    extent = float((single.points.amax(0) - single.points.amin(0)).double().norm())
    assert single.leave_one_out_scale() == pytest.approx(extent / 40)


@pytest.mark.parametrize("keep_coarse", [False, True])
def test_registration_undoes_a_turn_of_the_test_cloud(keep_coarse: bool) -> None:
    clouds = [part(0, sampling_seed=s, num_points=1200) for s in (1, 2)]
    same_part = part(0, sampling_seed=3, num_points=1200)
    batch = torch.zeros(1200, dtype=torch.long)

    def mean_distance(method: str, query: torch.Tensor) -> float:
        bank = fitted(clouds, normalization="rms", registration=method, template_points=None,
                      keep_coarse_if_better=keep_coarse, distance_to="best")
        return float(bank.distances(query, batch).mean())

    # Floor: the same part, another sampling, in the same pose.
    floor = mean_distance("none", same_part)
    query = turned(same_part, 35.0)
    assert mean_distance("none", query) > 3 * floor
    assert mean_distance("icp", query) < 1.05 * floor
    assert mean_distance("global+icp", query) < 1.05 * floor


@pytest.mark.parametrize("keep_coarse", [False, True])
def test_keep_coarse_if_better_refuses_a_worse_refinement(monkeypatch, keep_coarse: bool) -> None:  # noqa: ANN001
    """With the switch, a refinement that fits worse than the first registration is not taken."""
    import anomalib_3d.ops.templates as templates_module
    from anomalib_3d.ops import Registration, apply_transform, default_voxel_size, register

    clouds = [part(0, sampling_seed=s, num_points=800) for s in (1, 2)]
    bank = fitted(clouds, registration="icp", template_points=None, keep_coarse_if_better=keep_coarse)
    cloud = bank.normalize(part(0, sampling_seed=3, num_points=800), torch.zeros(800, dtype=torch.long))
    target = bank.templates[0].double()
    first = register(fps_subsample(cloud, bank.registration_points).double(), target, "icp",
                     voxel_size=default_voxel_size(target))
    coarse = apply_transform(cloud, first.transform)
    # A refinement that fits nothing (fitness 0), shifted far away.
    shift = torch.eye(4, dtype=torch.float64)
    shift[0, 3] = 5.0
    monkeypatch.setattr(templates_module, "best_template", lambda *a, **k: (1, Registration(shift, 0.0, 1.0)))
    aligned, index = bank.align(cloud)
    if keep_coarse:
        torch.testing.assert_close(aligned, coarse)
        assert index == 0
    else:
        torch.testing.assert_close(aligned, cloud + torch.tensor([5.0, 0.0, 0.0]))
        assert index == 1


def test_state_dict_round_trip_takes_the_stored_sizes() -> None:
    bank = fitted([part(s, num_points=300) for s in range(3)], registration="none", template_points=200)
    fresh = TemplateBank(registration="none")
    fresh.load_state_dict(bank.state_dict())
    assert [t.shape[0] for t in fresh.templates] == [200, 200, 200]
    query = part(9, num_points=250)
    batch = torch.zeros(250, dtype=torch.long)
    torch.testing.assert_close(fresh.distances(query, batch), bank.distances(query, batch), rtol=0, atol=0)


def test_content_keys() -> None:
    a, b = part(0, num_points=100), part(1, num_points=120)
    points, batch = batch_of(a, b)
    sums = [float(c.double().sum()) for c in (a, b)]
    squares = [float(c.double().pow(2).sum()) for c in (a, b)]
    expected = [n * 1e6 + s + 1e-3 * q for n, s, q in zip((100, 120), sums, squares, strict=True)]
    np.testing.assert_allclose(cloud_checksums(points, batch).numpy(), expected, rtol=1e-12)
    key = template_key(a).numpy()
    np.testing.assert_allclose(key[:4], [100, *a.double().mean(0).numpy()])
    np.testing.assert_allclose(key[10:], a.double().amax(0).numpy())
    assert fps_subsample(a, None) is a and fps_subsample(a, 40).shape == (40, 3)


@pytest.mark.parametrize(
    "kwargs",
    [{"registration": "ransac"}, {"selection": "all"}, {"distance_to": "mean"}, {"normalization": "unit"},
     {"num_templates": 0}, {"registration_templates": 0}],
)
def test_bad_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        TemplateBank(**kwargs)


def test_empty_bank_cannot_score() -> None:
    with pytest.raises(RuntimeError, match="empty"):
        TemplateBank().distances(part(0), torch.zeros(600, dtype=torch.long))
