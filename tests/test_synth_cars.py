"""Car meshes: keypoints on the surface, symmetry, the unit cube, the family's shape basis."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occaist.data.keypoints import FLIP_PERMUTATION, KEYPOINT_NAMES, LATERAL_AXIS
from occaist.geometry.camera import look_at
from occaist.geometry.shape_basis import ShapeBasis, mirror_keypoints
from occaist.synth.cars import BODY_TYPES, build_car, model_id, sample_car_params
from occaist.synth.raster import visible_points

CARS = [build_car(sample_car_params(np.random.default_rng([7, i]))) for i in range(40)]


def _point_triangle_distance(p, tri):
    """Distance from a point (3,) to the nearest of triangles (T, 3, 3): the plane distance where
    the projection falls inside a triangle, else the distance to its edges."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    n = np.cross(b - a, c - a)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    d = np.einsum("tc,tc->t", p - a, n)
    proj = p - d[:, None] * n
    inside = np.ones(len(tri), bool)
    for u, v in ((a, b), (b, c), (c, a)):
        inside &= np.einsum("tc,tc->t", np.cross(v - u, proj - u), n) >= -1e-12
    best = np.where(inside, np.abs(d), np.inf)
    for u, v in ((a, b), (b, c), (c, a)):
        e = v - u
        t = np.clip(np.einsum("tc,tc->t", p - u, e) / np.einsum("tc,tc->t", e, e), 0, 1)
        best = np.minimum(best, np.linalg.norm(p - (u + t[:, None] * e), axis=1))
    return best.min()


def test_body_types_and_unit_cube():
    assert {c.body_type for c in CARS} == set(BODY_TYPES)
    for car in CARS:
        v = car.vertices
        assert np.abs(v).max() < 0.5
        lo, hi = v.min(axis=0), v.max(axis=0)
        np.testing.assert_allclose(np.linalg.norm(hi - lo), 1.0)
        np.testing.assert_allclose(0.5 * (lo + hi), 0.0, atol=1e-12)
        assert hi[0] - lo[0] > hi[1] - lo[1] and hi[0] - lo[0] > hi[2] - lo[2]  # x is the length


def test_keypoints_lie_on_the_surface_and_are_symmetric():
    for car in CARS:
        kp = car.keypoints
        for j, name in enumerate(KEYPOINT_NAMES):
            dist = _point_triangle_distance(kp[j], car.triangles)
            if name != "Center":
                assert dist < 1e-9, (name, dist)
        np.testing.assert_allclose(
            mirror_keypoints(kp, FLIP_PERMUTATION, LATERAL_AXIS), kp, atol=1e-12
        )
        assert kp[0, 2] > 0 and kp[0, 0] > 0  # right front wheel: +z (right), +x (front)
        assert kp[9, 1] > kp[4, 1] > kp[0, 1]  # roof above lights above wheel hubs


def test_centre_is_inside_the_car():
    """The centre keypoint is hidden from every direction (it is the bounding-box centre)."""
    rng = np.random.default_rng(1)
    for car in CARS[:10]:
        for _ in range(10):
            eye = rng.normal(size=3)
            eye *= 3.0 / np.linalg.norm(eye)
            R, t = look_at(
                torch.from_numpy(eye),
                torch.zeros(3, dtype=torch.float64),
                torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64),
            )
            R, t = R.numpy(), t.numpy()
            cam_kp = car.keypoints @ R.T + t
            vis = visible_points(cam_kp, car.triangles @ R.T + t)
            assert not vis[13]
            assert vis[[0, 1, 2, 3]].sum() <= 3  # never all four wheel hubs at once


def test_surface_sampling_is_on_faces():
    rng = np.random.default_rng(0)
    car = CARS[0]
    pts = car.sample_surface(50, rng)
    assert pts.shape == (50, 3)
    assert max(_point_triangle_distance(p, car.triangles[car.surface]) for p in pts) < 1e-9


def test_shape_basis_of_the_family():
    kp = np.stack([c.keypoints for c in CARS])
    sb = ShapeBasis.fit(kp, 5, FLIP_PERMUTATION, LATERAL_AXIS)
    mirrored = mirror_keypoints(sb.mean, FLIP_PERMUTATION, LATERAL_AXIS)
    assert np.abs(sb.mean - mirrored).max() < 1e-6
    # The parametric family is low-dimensional: 5 components explain > 90 % (see docs).
    assert sb.explained_variance_ratio.sum() > 0.9
    resid = kp - sb.reconstruct(sb.project(kp))
    assert np.sqrt((resid**2).sum(axis=(1, 2)).mean()) < 0.05


@pytest.mark.parametrize("seed", [0, 1])
def test_model_ids_are_stable_hex(seed):
    ids = [model_id(seed, i) for i in range(50)]
    assert len(set(ids)) == 50 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert model_id(seed, 3) == model_id(seed, 3) != model_id(seed + 1, 3)
