"""Rigid registration recovers known transforms on synthetic parts (two independent samplings)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from anomalib_3d.data.synthetic import make_mesh, sample_surface
from anomalib_3d.ops import apply_transform, best_template, register, register_global, register_icp


def _cloud(category: str, sampling_seed: int, num_points: int = 3000, shape_seed: int = 0) -> torch.Tensor:
    mesh = make_mesh(category, shape_seed)
    points, _, _ = sample_surface(mesh.vertices, mesh.faces, num_points, np.random.default_rng(sampling_seed))
    return torch.from_numpy(points).double()


def _rigid(rotvec: np.ndarray, translation: list[float]) -> torch.Tensor:
    transform = torch.eye(4, dtype=torch.float64)
    transform[:3, :3] = torch.from_numpy(Rotation.from_rotvec(rotvec).as_matrix())
    transform[:3, 3] = torch.tensor(translation, dtype=torch.float64)
    return transform


def _errors(estimate: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """(rotation error in degrees, translation error)."""
    relative = estimate[:3, :3] @ truth[:3, :3].T
    angle = float(torch.rad2deg(torch.arccos(((torch.trace(relative) - 1) / 2).clamp(-1, 1))))
    return angle, float((estimate[:3, 3] - truth[:3, 3]).norm())


def test_apply_transform_matches_homogeneous_product() -> None:
    points = torch.randn(50, 3, dtype=torch.float64)
    transform = _rigid(np.array([0.1, -0.4, 0.3]), [1.0, 2.0, -3.0])
    homogeneous = torch.cat([points, torch.ones(50, 1, dtype=torch.float64)], dim=1) @ transform.T
    torch.testing.assert_close(apply_transform(points, transform), homogeneous[:, :3])
    with pytest.raises(ValueError, match="4, 4"):
        apply_transform(points, torch.eye(3))


@pytest.mark.parametrize("degrees", [10.0, 30.0])
def test_icp_recovers_moderate_rotation(degrees: float) -> None:
    target = _cloud("bracket", 1)
    axis = np.array([0.6, 0.8, 0.0])
    truth = _rigid(np.deg2rad(degrees) * axis, [0.05, -0.08, 0.03])
    # source = target moved by inverse(truth) and resampled: registration must give back `truth`.
    source = apply_transform(_cloud("bracket", 2), torch.linalg.inv(truth))
    transform, fitness, rmse = register_icp(source, target)
    angle, shift = _errors(transform, truth)
    assert angle < 1.5
    assert shift < 0.02
    assert fitness > 0.9
    assert rmse < 0.03


def test_global_registration_recovers_arbitrary_rotation() -> None:
    target = _cloud("bracket", 1)
    truth = _rigid(Rotation.random(random_state=7).as_rotvec(), [0.4, 0.2, -0.6])
    source = apply_transform(_cloud("bracket", 2), torch.linalg.inv(truth))
    # ICP alone cannot come back from a large rotation; the global stage must.
    icp_only = register(source, target, "icp")
    result = register(source, target, "global+icp")
    angle, shift = _errors(result.transform, truth)
    assert angle < 2.0
    assert shift < 0.03
    assert result.fitness > 0.9
    assert result.fitness >= icp_only.fitness
    coarse = register_global(source, target)
    assert _errors(coarse, truth)[0] < 15.0
    # Seeded: the same call gives the same transform.
    torch.testing.assert_close(register_global(source, target), coarse)


def test_none_is_identity_and_bad_method_raises() -> None:
    cloud = _cloud("plate", 0, 500)
    result = register(cloud, cloud, "none")
    torch.testing.assert_close(result.transform, torch.eye(4, dtype=torch.float64))
    assert result.fitness == pytest.approx(1.0)
    with pytest.raises(ValueError, match="method"):
        register(cloud, cloud, "magic")  # type: ignore[arg-type]


def test_best_template_picks_the_matching_part() -> None:
    truth = _rigid(np.deg2rad(20.0) * np.array([0.0, 0.0, 1.0]), [0.1, 0.0, 0.0])
    templates = [_cloud("cup", 1), _cloud("bracket", 1), _cloud("plate", 1)]
    source = apply_transform(_cloud("bracket", 3), torch.linalg.inv(truth))
    index, result = best_template(source, templates, method="icp")
    assert index == 1
    assert _errors(result.transform, truth)[0] < 2.0
    with pytest.raises(ValueError, match="at least one"):
        best_template(source, [])
