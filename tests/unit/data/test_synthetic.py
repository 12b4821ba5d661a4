"""Synthetic dataset generator: shapes, exact defect labels, determinism, both on-disk layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from anomalib_3d.data.errors import PointCloudError, UnknownCategoryError
from anomalib_3d.data.io import read_gt_txt, read_mask_png, read_organized_xyz, read_point_cloud, read_rgb
from anomalib_3d.data.synthetic import (
    DEFECT_TYPES,
    SHAPE_FAMILIES,
    default_camera,
    derive_seed,
    generate_synthetic_dataset,
    list_categories,
    make_defect,
    make_mesh,
    make_sample,
    make_scan,
    sample_surface,
)
from anomalib_3d.data.synthetic.generator import SCENE_SCALE
from anomalib_3d.data.synthetic.scanner import raycast
from anomalib_3d.data.synthetic.shapes import Mesh

o3d = pytest.importorskip("open3d")

SMALL = {"num_train": 1, "num_test_good": 1, "num_test_per_defect": 1, "progress": False}


def _signed_distance_to(mesh: Mesh, points: np.ndarray) -> np.ndarray:
    """Exact signed point-to-surface distance (Open3D, independent of our code); > 0 outside."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(mesh.vertices.astype(np.float32), mesh.faces.astype(np.uint32))
    return scene.compute_signed_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------


def test_ten_categories_one_per_family():
    assert list_categories() == list(SHAPE_FAMILIES)
    assert len(list_categories()) == 10
    assert DEFECT_TYPES == ("bulge", "concavity", "hole", "break", "bending", "crack")


@pytest.mark.parametrize("family", list(SHAPE_FAMILIES))
def test_families_are_closed_oriented_parts_that_vary(family):
    extents = []
    for seed in (0, 1):
        mesh = make_mesh(family, seed)
        edges = np.concatenate([mesh.faces[:, [0, 1]], mesh.faces[:, [1, 2]], mesh.faces[:, [2, 0]]])
        # Closed and consistently oriented: every directed edge once, and its reverse present.
        keys = edges[:, 0] * len(mesh.vertices) + edges[:, 1]
        reverse = edges[:, 1] * len(mesh.vertices) + edges[:, 0]
        assert len(np.unique(keys)) == len(keys)
        assert np.isin(reverse, keys).all()
        assert mesh.signed_volume > 0  # outward normals
        assert (mesh.face_areas > 0).all()
        assert mesh.vertices[:, 2].min() == pytest.approx(0.0, abs=1e-9)  # stands on z = 0
        extent = mesh.vertices.max(0) - mesh.vertices.min(0)
        assert 0.3 < extent.max() < 1.5
        assert len(mesh.faces) > 5000  # dense enough for real geometric defects
        extents.append(extent)
    assert not np.allclose(extents[0], extents[1])  # per-sample shape variation


@pytest.mark.parametrize("family", list(SHAPE_FAMILIES))
def test_surfaces_do_not_fold_through_themselves(family):
    # Open3D's manifold checks as a second opinion, and no fold-over: stepping 2e-3 along the
    # outward normal of any surface point leaves the solid (exact signed distance). This is what
    # catches e.g. a vessel's inner wall poking through its outer wall.
    mesh = make_mesh(family, 0)
    o3d_mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(mesh.vertices), o3d.utility.Vector3iVector(mesh.faces))
    assert o3d_mesh.is_edge_manifold() and o3d_mesh.is_vertex_manifold() and o3d_mesh.is_orientable()
    sample = make_sample(family, None, 0, 2048)
    assert not sample.labels.any() and sample.defect is None
    np.testing.assert_allclose(np.linalg.norm(sample.normals, axis=1), 1.0, atol=1e-5)
    assert np.abs(_signed_distance_to(mesh, sample.points)).max() < 1e-5  # points on the surface
    assert (_signed_distance_to(mesh, sample.points + 2e-3 * sample.normals) > 0).all()


def test_sample_surface_is_area_uniform():
    # Two triangles with areas 1 : 3 -> a quarter of the points on the first one.
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [2, 0, 1], [5, 0, 1], [2, 2, 1]], float)
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    points, face_index, bary = sample_surface(vertices, faces, 20000, np.random.default_rng(0))
    assert abs(np.mean(face_index == 0) - 0.25) < 0.01
    np.testing.assert_allclose(points, np.einsum("nk,nkd->nd", bary, vertices[faces[face_index]]))
    inside_first = points[face_index == 0]
    assert abs(np.mean(inside_first[:, 0] < 0.5) - 0.75) < 0.02  # uniform inside the triangle


# ----------------------------------------------------------------------------------------------
# Defects: fractions and exact labels
# ----------------------------------------------------------------------------------------------

DEFECT_CATEGORIES = ("bottle", "cup", "gear", "plate", "nut")


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_defect_labels_are_a_few_percent_and_are_the_changed_points(defect):
    displaced_share = []
    for k, category in enumerate(DEFECT_CATEGORIES):
        seed = 100 + k
        clean, result = make_defect(category, defect, seed)
        sample = make_sample(category, defect, seed, 4096)
        labels = sample.labels.astype(bool)
        assert sample.points.shape == (4096, 3) and sample.points.dtype == np.float32
        assert 0.005 <= labels.mean() <= 0.15, (category, labels.mean())
        distance = np.abs(_signed_distance_to(clean, sample.points))
        tolerance = result.label_tolerance
        # Unlabelled points lie on the clean surface (within the labelling tolerance)...
        assert distance[~labels].max() <= tolerance * (1 + 1e-3) + 1e-6
        if defect == "hole":
            # ...and a hole only removes surface: labelled rim points are untouched as well.
            assert distance.max() <= 1e-5
        else:
            displaced_share.append(np.mean(distance[labels] > 0.5 * tolerance))
    if defect != "hole":
        # ...while the labelled ones moved off it (some slide along the surface, e.g. the
        # flanks of gear teeth moved by a bulge, so not all of them).
        assert min(displaced_share) > 0.5 and np.mean(displaced_share) > 0.75, displaced_share


@pytest.mark.parametrize("category", ["bottle", "knob"])
def test_bulge_goes_out_and_concavity_and_crack_go_in(category):
    clean = make_mesh(category, 5)
    for defect, outside_share in (("bulge", lambda s: s > 0.7), ("concavity", lambda s: s < 0.3), ("crack", lambda s: s < 0.05)):
        sample = make_sample(category, defect, 5, 4096)
        signed = _signed_distance_to(clean, sample.points[sample.labels.astype(bool)])
        assert outside_share(np.mean(signed > 0)), (category, defect, np.mean(signed > 0))


def test_hole_leaves_no_point_inside_and_labels_exactly_the_rim():
    for k, category in enumerate(("cup", "plate", "knob")):
        _, result = make_defect(category, "hole", 7 + k)
        sample = make_sample(category, "hole", 7 + k, 8192)
        distance = np.linalg.norm(sample.points - result.center, axis=1)
        assert distance.min() > 0.9 * result.hole_radius
        rim = result.hole_radius + result.rim_width
        labels = sample.labels.astype(bool)
        np.testing.assert_array_equal(labels, distance <= rim + 1e-6)
        assert labels.any()


def test_break_flattens_a_chunk_into_one_cut_plane():
    for k, category in enumerate(("bottle", "gear", "ring")):
        _, result = make_defect(category, "break", 11 + k)
        sample = make_sample(category, "break", 11 + k, 8192)
        heights = sample.points.astype(np.float64) @ result.cut_normal
        plane = heights.max()
        labels = sample.labels.astype(bool)
        on_plane = np.abs(heights - plane) < 1e-5
        assert np.mean(on_plane[labels]) > 0.8  # the labelled region is the flat cut face
        assert not on_plane[~labels].any() or np.mean(on_plane[~labels]) < 0.01
        # The cut face's points carry the cut's outward normal (but for points on faces that
        # only touch the plane).
        assert np.mean(np.abs(sample.normals[on_plane & labels] @ result.cut_normal - 1.0) < 1e-5) > 0.98


def test_bending_moves_the_part_beyond_the_hinge_rigidly_far_from_it():
    clean, result = make_defect("bottle", "bending", 3)
    moved = np.linalg.norm(result.displacement, axis=1)
    assert moved.max() > 20 * result.label_tolerance  # a visible bend, not a nudge
    # Past the ramp the bent part moves rigidly: pairwise distances are preserved.
    far = np.flatnonzero(moved > 0.6 * moved.max())[:200]
    before = np.linalg.norm(clean.vertices[far, None] - clean.vertices[None, far], axis=2)
    after = np.linalg.norm(result.vertices[far, None] - result.vertices[None, far], axis=2)
    assert np.abs(before - after).max() < 0.2 * np.abs(before).max()


def test_noise_and_random_pose_options():
    base = make_sample("nut", "crack", 1, 1024)
    noisy = make_sample("nut", "crack", 1, 1024, noise_std=0.01)
    np.testing.assert_array_equal(base.labels, noisy.labels)
    assert 0.005 < np.std(noisy.points - base.points) < 0.02
    posed = make_sample("nut", "crack", 1, 1024, random_pose=True)
    # A rigid motion keeps all pairwise distances.
    d0 = np.linalg.norm(base.points[:100, None] - base.points[None, :100], axis=2)
    d1 = np.linalg.norm(posed.points[:100, None] - posed.points[None, :100], axis=2)
    np.testing.assert_allclose(d0, d1, atol=1e-5)
    assert not np.allclose(base.points, posed.points)


# ----------------------------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------------------------


def test_same_seed_same_sample_different_seed_different():
    a = make_sample("gear", "bulge", 42, 2048)
    b = make_sample("gear", "bulge", 42, 2048)
    c = make_sample("gear", "bulge", 43, 2048)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.points, c.points)
    assert derive_seed(0, "gear", "test") != derive_seed(0, "nut", "test")
    assert derive_seed(0, "gear") == derive_seed(0, "gear")


def test_real3d_files_are_byte_identical_per_seed_and_category_independent(tmp_path):
    kwargs = dict(SMALL, num_points=1024)
    first = generate_synthetic_dataset(tmp_path / "a", categories=["ring", "nut"], seed=3, num_workers=0, **kwargs)
    second = generate_synthetic_dataset(tmp_path / "b", categories=["ring", "nut"], seed=3, num_workers=2, **kwargs)
    assert _files(first) == _files(second)  # workers do not change bytes
    alone = generate_synthetic_dataset(tmp_path / "c", categories=["nut"], seed=3, **kwargs)
    nut_full = {k: v for k, v in _files(first).items() if k.startswith("nut/")}
    nut_alone = {k: v for k, v in _files(alone).items() if k.startswith("nut/")}
    assert nut_full == nut_alone
    other = generate_synthetic_dataset(tmp_path / "d", categories=["nut"], seed=4, **kwargs)
    assert _files(other)["nut/test/0_good.pcd"] != nut_alone["nut/test/0_good.pcd"]


def test_cache_reuse_overwrite_and_parameter_mismatch(tmp_path):
    root = tmp_path / "ds"
    generate_synthetic_dataset(root, categories=["ring"], num_points=512, **SMALL)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["categories"] == ["ring"] and manifest["seed"] == 0 and manifest["version"]
    probe = root / "ring" / "train" / "0_template.pcd"
    stamp = probe.stat().st_mtime_ns
    generate_synthetic_dataset(root, categories=["ring"], num_points=512, **SMALL)
    assert probe.stat().st_mtime_ns == stamp  # reused, not rewritten
    generate_synthetic_dataset(root, categories=["ring", "nut"], num_points=512, **SMALL)
    assert probe.stat().st_mtime_ns == stamp
    assert json.loads((root / "manifest.json").read_text())["categories"] == ["ring", "nut"]
    with pytest.raises(PointCloudError, match="different parameters") as err:
        generate_synthetic_dataset(root, categories=["ring"], num_points=256, **SMALL)
    assert str(root) in str(err.value)
    generate_synthetic_dataset(root, categories=["ring"], num_points=256, overwrite=True, **SMALL)
    assert len(read_point_cloud(probe)) == 256
    assert not (root / "nut").exists()  # stale categories of the old parameters are removed
    assert not list(root.glob(".*partial"))


def test_unknown_category_and_defect():
    with pytest.raises(UnknownCategoryError, match="teapot"):
        make_sample("teapot")
    with pytest.raises(ValueError, match="scratch"):
        make_sample("gear", "scratch")
    with pytest.raises(UnknownCategoryError):
        generate_synthetic_dataset("/tmp/never-written", categories=["teapot"], progress=False)


# ----------------------------------------------------------------------------------------------
# Layouts
# ----------------------------------------------------------------------------------------------


def test_real3d_layout_round_trips_through_the_readers(tmp_path):
    root = generate_synthetic_dataset(tmp_path, categories=["cup"], num_points=2048, seed=1, **SMALL)
    cup = root / "cup"
    assert sorted(p.name for p in (cup / "train").iterdir()) == ["0_template.pcd"]
    test_names = sorted(p.name for p in (cup / "test").iterdir())
    expected_defects = [f"{i + 1}_{d}" for i, d in enumerate(DEFECT_TYPES)]
    assert test_names == sorted(["0_good.pcd"] + [f"{n}.pcd" for n in expected_defects])
    assert sorted(p.name for p in (cup / "gt").iterdir()) == sorted(f"{n}.txt" for n in expected_defects)
    for name in expected_defects:
        cloud = read_point_cloud(cup / "test" / f"{name}.pcd")
        gt_points, labels = read_gt_txt(cup / "gt" / f"{name}.txt")
        np.testing.assert_array_equal(gt_points, cloud.points)  # same points, same order
        assert 0.005 <= labels.mean() <= 0.15
    # The files hold exactly what make_sample gives for the derived seed.
    seed = derive_seed(1, "cup", "test", "crack", 0)
    np.testing.assert_array_equal(read_point_cloud(cup / "test" / "6_crack.pcd").points, make_sample("cup", "crack", seed, 2048).points)


def test_mvtec3d_layout_scans(tmp_path):
    size = (96, 128)
    root = generate_synthetic_dataset(
        tmp_path, categories=["knob"], layout="mvtec3d", image_size=size, num_validation=1, **SMALL
    )
    knob = root / "knob"
    for split in ("train", "validation"):
        assert sorted(p.name for p in (knob / split / "good").iterdir()) == ["rgb", "xyz"]
    assert sorted(p.name for p in (knob / "test").iterdir()) == sorted(["good", *DEFECT_TYPES])
    camera = default_camera(size)
    for folder in ["good", *DEFECT_TYPES]:
        xyz = read_organized_xyz(knob / "test" / folder / "xyz" / "000.tiff")
        rgb = read_rgb(knob / "test" / folder / "rgb" / "000.png")
        mask = read_mask_png(knob / "test" / folder / "gt" / "000.png")
        assert xyz.shape == (*size, 3) and rgb.shape == (*size, 3) and mask.shape == size
        empty = (xyz == 0).all(axis=2)
        # Background (ray hit nothing) <-> zeros in xyz <-> black in rgb; some of each.
        np.testing.assert_array_equal(empty, (rgb == 0).all(axis=2))
        assert 0 < empty.mean() < 0.5
        assert (xyz[~empty, 2] > 0).all()
        # The ground plane is there: back in world coordinates many hits have z == 0.
        world = xyz[~empty] @ camera.rotation + camera.position
        on_ground = np.abs(world[:, 2]) < 1e-6
        assert 0.3 < on_ground.mean() < 0.97
        assert world[:, 2].min() > -1e-6 and world[:, 2].max() > 0.01  # the part stands on it
        if folder == "good":
            assert not mask.any()
        else:
            assert 0 < mask.mean() < 0.2, folder
            if folder not in ("hole", "break"):
                assert not (mask & empty).any()  # surface defects are on seen surface


def test_scan_mask_follows_the_defective_surface():
    scan = make_scan("gear", "bulge", 2, (96, 96))
    good = make_scan("gear", None, 2, (96, 96))  # same part and pose, no defect
    _, result = make_defect("gear", "bulge", 2)
    tolerance = result.label_tolerance * SCENE_SCALE
    moved = np.linalg.norm(scan.xyz - good.xyz, axis=2)
    # Every pixel whose 3D point moved clearly is labelled, and labels sit where points moved.
    assert (moved > 3 * tolerance).any()
    assert not ((moved > 3 * tolerance) & ~scan.mask).any()
    assert scan.mask.sum() <= 2 * (moved > 1e-7).sum()


def test_raycast_matches_open3d():
    camera = default_camera((64, 80))
    mesh = make_mesh("gear", 1)
    vertices = 0.1 * mesh.vertices
    ours = raycast(camera, vertices, mesh.faces)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(vertices.astype(np.float32), mesh.faces.astype(np.uint32))
    directions = camera.ray_directions() @ camera.rotation
    rays = np.concatenate([np.broadcast_to(camera.position, directions.shape), directions], axis=-1)
    answer = scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))
    reference = answer["t_hit"].numpy()
    np.testing.assert_array_equal(np.isfinite(reference), ours.hit)
    np.testing.assert_allclose(ours.depth[ours.hit], reference[ours.hit], rtol=1e-5)
    culled = raycast(camera, vertices, mesh.faces, cull_back_faces=True)  # closed mesh: same
    np.testing.assert_array_equal(culled.face, ours.face)
