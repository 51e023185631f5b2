"""Keypoint shape basis: PCA exactness, symmetric mean, file round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occaist.data.keypoints import FLIP_PERMUTATION, LATERAL_AXIS
from occaist.geometry.shape_basis import ShapeBasis, mirror_keypoints


def _symmetric_template(rng: np.random.Generator) -> np.ndarray:
    """A random left-right symmetric 14-keypoint shape (right side +z)."""
    kp = np.zeros((14, 3))
    for right, left in ((0, 1), (2, 3), (4, 5), (6, 7), (9, 10), (11, 12)):
        x, y, z = rng.uniform(-0.4, 0.4), rng.uniform(-0.2, 0.2), rng.uniform(0.05, 0.2)
        kp[right] = (x, y, z)
        kp[left] = (x, y, -z)
    kp[8] = (rng.uniform(-0.4, -0.3), -0.05, 0.0)
    return kp


def test_fit_recovers_a_low_rank_family_exactly():
    rng = np.random.default_rng(0)
    mean = _symmetric_template(rng)
    dirs = np.stack([_symmetric_template(rng) for _ in range(3)])  # symmetric directions
    coeff = rng.normal(size=(40, 3)) * np.array([0.3, 0.1, 0.03])
    shapes = mean + np.einsum("mk,kjc->mjc", coeff, dirs)
    sb = ShapeBasis.fit(shapes, 3, FLIP_PERMUTATION, LATERAL_AXIS)
    assert sb.basis.shape == (3, 14, 3) and sb.sigma.shape == (3,)
    np.testing.assert_allclose(sb.explained_variance_ratio.sum(), 1.0, atol=1e-10)
    assert np.all(np.diff(sb.sigma) <= 0)
    beta = sb.project(shapes)
    np.testing.assert_allclose(sb.reconstruct(beta), shapes, atol=1e-10)
    flat = sb.basis.reshape(3, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(3), atol=1e-10)
    # σ_k is the sample deviation over the 2M mirror-augmented shapes (these are symmetric, so
    # each appears twice): β then has variance (2M - 1) / 2M around 0 (ddof=0).
    m2 = 2 * len(shapes)
    np.testing.assert_allclose(beta.std(axis=0), np.sqrt((m2 - 1) / m2), rtol=1e-8)


def test_mean_is_left_right_symmetric_for_asymmetric_data():
    rng = np.random.default_rng(1)
    shapes = rng.normal(size=(25, 14, 3))
    sb = ShapeBasis.fit(shapes, 4, FLIP_PERMUTATION, LATERAL_AXIS)
    mirrored = mirror_keypoints(sb.mean, FLIP_PERMUTATION, LATERAL_AXIS)
    np.testing.assert_allclose(sb.mean, mirrored, atol=1e-12)
    assert 0 < sb.explained_variance_ratio.sum() < 1


def test_truncated_basis_is_the_best_rank_k_fit():
    rng = np.random.default_rng(2)
    shapes = np.stack([_symmetric_template(rng) for _ in range(30)])
    full = ShapeBasis.fit(shapes, 10, FLIP_PERMUTATION, LATERAL_AXIS)
    two = ShapeBasis.fit(shapes, 2, FLIP_PERMUTATION, LATERAL_AXIS)
    resid = shapes - two.reconstruct(two.project(shapes))
    # Residual variance equals the share the first two components leave unexplained.
    total = ((shapes - two.mean) ** 2).sum()
    np.testing.assert_allclose(
        (resid**2).sum() / total, 1 - full.explained_variance_ratio[:2].sum(), rtol=1e-8
    )


def test_save_load_round_trip_and_torch_reconstruct(tmp_path):
    rng = np.random.default_rng(3)
    shapes = np.stack([_symmetric_template(rng) for _ in range(12)])
    sb = ShapeBasis.fit(shapes, 5, FLIP_PERMUTATION, LATERAL_AXIS)
    path = tmp_path / "basis.npz"
    sb.save(path)
    with np.load(path) as f:
        assert sorted(f.files) == ["basis", "explained_variance_ratio", "mean", "sigma"]
        assert f["mean"].shape == (14, 3) and f["basis"].shape == (5, 14, 3)
    back = ShapeBasis.load(path)
    for name in ("mean", "basis", "sigma", "explained_variance_ratio"):
        np.testing.assert_array_equal(getattr(back, name), getattr(sb, name))
    beta = torch.randn(2, 5, dtype=torch.float64)
    torch.testing.assert_close(
        back.reconstruct(beta), torch.from_numpy(sb.reconstruct(beta.numpy()))
    )


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"occaist\.synth"):
        ShapeBasis.load(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="n_components"):
        ShapeBasis.fit(np.zeros((3, 14, 3)), 10, FLIP_PERMUTATION, LATERAL_AXIS)
