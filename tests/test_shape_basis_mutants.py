"""Shape basis edges found by `make mutation`: the component-count bounds, degenerate data,
integer input, projection on and off the span (zero-variance components), float32 results for
float32 coefficients, files without the variance ratio or in float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occaist.geometry.shape_basis import ShapeBasis, mirror_keypoints

PERM = [1, 0, 2, 3]  # joints 0 and 1 are a left/right pair
AXIS = 0


def _shapes(m: int, j: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(m, j, 3))


def test_component_count_must_lie_in_one_to_min_of_samples_minus_one_and_3j() -> None:
    three = _shapes(3)  # 6 samples with the mirrors, 4 joints: at most min(5, 12) = 5
    assert ShapeBasis.fit(three, 1, PERM, AXIS).num_components == 1
    assert ShapeBasis.fit(three, 5, PERM, AXIS).num_components == 5
    for bad in (0, 6):
        with pytest.raises(ValueError, match="n_components"):
            ShapeBasis.fit(three, bad, PERM, AXIS)
    many = _shapes(10, j=2)  # 20 samples, 2 joints: at most min(19, 6) = 6
    assert ShapeBasis.fit(many, 6, [1, 0], AXIS).num_components == 6
    with pytest.raises(ValueError, match="n_components"):
        ShapeBasis.fit(many, 7, [1, 0], AXIS)
    with pytest.raises(ValueError, match="keypoints must have shape"):
        ShapeBasis.fit(_shapes(3)[..., :2], 1, PERM, AXIS)  # (M, J, 2)


def test_identical_symmetric_shapes_have_zero_variance_ratios_not_nan() -> None:
    shape = np.array([[1.0, 2.0, 3.0], [-1.0, 2.0, 3.0], [0.0, 1.0, 0.0], [0.0, -1.0, 2.0]])
    basis = ShapeBasis.fit(np.stack([shape] * 4), 2, PERM, AXIS)
    assert basis.explained_variance_ratio.tolist() == [0.0, 0.0]
    np.testing.assert_allclose(basis.mean, shape)


def test_mirror_of_integer_keypoints() -> None:
    kp = np.array([[[1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 1, 0]]])
    out = mirror_keypoints(kp, PERM, AXIS)
    assert out.dtype == np.float64
    assert out[0].tolist() == [[-4, 5, 6], [-1, 2, 3], [-7, 8, 9], [0, 1, 0]]


def test_project_inverts_reconstruct_and_skips_zero_deviations() -> None:
    basis = ShapeBasis.fit(_shapes(8), 3, PERM, AXIS)
    beta = np.random.default_rng(1).normal(size=(2, 5, 3))  # two leading dimensions
    np.testing.assert_allclose(basis.project(basis.reconstruct(beta)), beta, atol=1e-10)
    # a component with zero deviation: its coefficient is the raw dot product, not divided
    flat = ShapeBasis(basis.mean, basis.basis, np.array([basis.sigma[0], 0.0, basis.sigma[2]]),
                      basis.explained_variance_ratio)  # fmt: skip
    offset = basis.mean + 0.5 * basis.basis[1]
    np.testing.assert_allclose(flat.project(offset), [0.0, 0.5, 0.0], atol=1e-12)


def test_reconstruct_in_float32_for_float32_coefficients() -> None:
    basis = ShapeBasis.fit(_shapes(8), 3, PERM, AXIS)
    beta = torch.tensor([[0.5, -1.0, 2.0]])
    out = basis.reconstruct(beta)
    assert out.dtype == torch.float32 and out.shape == (1, 4, 3)
    np.testing.assert_allclose(out.numpy(), basis.reconstruct(beta.numpy()), rtol=1e-5, atol=1e-5)


def test_load_fills_a_missing_variance_ratio_and_returns_float64(tmp_path) -> None:
    basis = ShapeBasis.fit(_shapes(8), 3, PERM, AXIS)
    path = tmp_path / "old.npz"
    arrays = {"mean": basis.mean, "basis": basis.basis, "sigma": basis.sigma}
    np.savez(path, **{k: v.astype(np.float32) for k, v in arrays.items()})
    loaded = ShapeBasis.load(path)
    assert np.isnan(loaded.explained_variance_ratio).all()
    assert loaded.explained_variance_ratio.shape == (3,)
    for name in ("mean", "basis", "sigma", "explained_variance_ratio"):
        assert getattr(loaded, name).dtype == np.float64
    path32 = tmp_path / "f32.npz"
    arrays["explained_variance_ratio"] = basis.explained_variance_ratio
    np.savez(path32, **{k: v.astype(np.float32) for k, v in arrays.items()})
    assert ShapeBasis.load(path32).explained_variance_ratio.dtype == np.float64
