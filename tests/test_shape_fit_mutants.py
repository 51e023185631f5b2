"""The robust (Cauchy-reweighted) shape-basis fit: its rounds against the documented weights
``w0 / (1 + (r / c)²)``, and gross errors it ignores where the plain fit does not (found by
`make mutation`, where it had no test)."""

from __future__ import annotations

import numpy as np
import pytest

from occaist.geometry.shape_fit import fit_shape_basis, robust_fit_shape_basis

K, B, N = 14, 3, 4


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(K, 3))
    basis = np.linalg.qr(rng.normal(size=(K * 3, B)))[0].T.reshape(B, K, 3)
    sigma = np.array([0.5, 0.3, 0.2])
    beta = rng.normal(size=(N, B))
    shapes = mean + np.einsum("nb,b,bkc->nkc", beta, sigma, basis)
    truth = np.empty((N, K, 2))
    for i in range(N):
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        q = q * np.sign(np.diag(r))
        rot = q * np.linalg.det(q)
        truth[i] = 50.0 * (shapes[i] @ rot.T)[:, :2] + rng.uniform(100, 200, size=2)
    observed = truth.copy()
    observed[:, 3] += [40.0, -30.0]  # one gross error per instance (a wrong detection)
    weights = np.ones((N, K))
    weights[:, 10] = 0.0  # one unobserved keypoint, with garbage
    observed[:, 10] = 1e4
    size = np.full(N, 100.0)
    return observed, truth, weights, mean, basis, sigma, size


def test_rounds_reweight_by_the_cauchy_function_of_the_last_residuals() -> None:
    points, _, w0, mean, basis, sigma, size = _problem()
    kw = {"iterations": 5, "ridge": 0.05}
    one = robust_fit_shape_basis(points, w0, mean, basis, sigma, size, rounds=1, **kw)
    plain = fit_shape_basis(points, w0, mean, basis, sigma, **kw)
    for key in plain:
        np.testing.assert_array_equal(one[key], plain[key])
    # three rounds by hand, Cauchy scale 0.05 of the size
    fit = plain
    for _ in range(2):
        r = np.sqrt(((fit["projection"] - points) ** 2).sum(-1))
        fit = fit_shape_basis(points, w0 / (1.0 + (r / (0.05 * size[:, None])) ** 2), mean, basis,
                              sigma, **kw)  # fmt: skip
    three = robust_fit_shape_basis(points, w0, mean, basis, sigma, size, 0.05, rounds=3, **kw)
    for key in fit:
        np.testing.assert_allclose(three[key], fit[key], rtol=1e-12, atol=1e-12)


def test_robust_fit_ignores_gross_errors_that_drag_the_plain_fit() -> None:
    points, truth, w0, mean, basis, sigma, size = _problem(1)
    clean = [k for k in range(K) if k not in (3, 10)]
    plain = fit_shape_basis(points, w0, mean, basis, sigma, iterations=100, ridge=0.0)
    robust = robust_fit_shape_basis(points, w0, mean, basis, sigma, size, ridge=0.0)
    plain_error = np.abs(plain["projection"][:, clean] - truth[:, clean]).max()
    robust_error = np.abs(robust["projection"][:, clean] - truth[:, clean]).max()
    assert plain_error > 2.0
    assert robust_error < 0.2 * plain_error
    # the unobserved keypoint is predicted from the shape, not from its garbage value
    assert np.abs(robust["projection"][:, 10] - truth[:, 10]).max() < 3.0


def test_defaults_are_3_percent_and_6_rounds() -> None:
    points, _, w0, mean, basis, sigma, size = _problem(2)
    default = robust_fit_shape_basis(points, w0, mean, basis, sigma, size)
    explicit = robust_fit_shape_basis(points, w0, mean, basis, sigma, size, 0.03, 6, 50, 1e-2)
    for key in default:
        np.testing.assert_array_equal(default[key], explicit[key])
    other = robust_fit_shape_basis(points, w0, mean, basis, sigma, size, 0.03, 5, 50, 1e-2)
    assert not np.array_equal(default["projection"], other["projection"])
    wider = robust_fit_shape_basis(points, w0, mean, basis, sigma, size, 0.04)
    assert not np.array_equal(default["beta"], wider["beta"])


def _noisy(seed: int = 3):
    points, _, w0, mean, basis, sigma, _ = _problem(seed)
    points = points + np.random.default_rng(seed).normal(scale=2.0, size=points.shape)
    return points, w0, mean, basis, sigma


def test_plain_fit_returns_its_documented_fields_and_weighted_rms_residual() -> None:
    points, w0, mean, basis, sigma = _noisy()
    w = w0 * np.linspace(0.2, 1.0, K)  # unequal weights
    w[1] = 0.0  # an instance with no observation at all
    fit = fit_shape_basis(points, w, mean, basis, sigma, iterations=5)
    assert set(fit) == {"projection", "beta", "scale", "rotation", "translation", "residual"}
    assert fit["scale"].shape == (N,) and fit["rotation"].shape == (N, 2, 3)
    assert fit["translation"].shape == (N, 2) and fit["beta"].shape == (N, B)
    err = ((fit["projection"] - points) ** 2).sum(-1)
    for i in (0, 2, 3):
        expected = np.sqrt((w[i] * err[i]).sum() / w[i].sum())
        assert fit["residual"][i] == pytest.approx(expected, rel=1e-12)
    assert fit["residual"][1] == 0.0  # nothing observed: no error, and no NaN anywhere
    assert np.isfinite(fit["projection"]).all()
    # the projection is s R shape + t of the returned camera and coefficients
    shape = mean + np.einsum("nb,b,bkc->nkc", fit["beta"], sigma, basis)
    again = fit["scale"][:, None, None] * shape @ fit["rotation"].transpose(0, 2, 1)
    np.testing.assert_allclose(again + fit["translation"][:, None], fit["projection"], atol=1e-9)


def test_plain_fit_is_invariant_to_the_weights_scale_and_equivariant_to_the_pixels() -> None:
    points, w0, mean, basis, sigma = _noisy(4)
    kw = {"iterations": 10, "ridge": 0.3}
    fit = fit_shape_basis(points, w0, mean, basis, sigma, **kw)
    light = fit_shape_basis(points, 0.01 * w0, mean, basis, sigma, **kw)
    np.testing.assert_allclose(light["projection"], fit["projection"], rtol=1e-6, atol=1e-6)
    assert light["residual"] == pytest.approx(fit["residual"], rel=1e-6)
    zoomed = fit_shape_basis(10.0 * points + 3.0, w0, mean, basis, sigma, **kw)
    np.testing.assert_allclose(zoomed["projection"], 10.0 * fit["projection"] + 3.0, rtol=1e-6)
    np.testing.assert_allclose(zoomed["beta"], fit["beta"], rtol=1e-5, atol=1e-8)


def test_ridge_is_relative_to_the_mean_diagonal_and_shrinks_the_coefficients() -> None:
    points, w0, mean, basis, sigma = _noisy(5)
    free = fit_shape_basis(points, w0, mean, basis, sigma, iterations=10, ridge=0.0)
    shrunk = fit_shape_basis(points, w0, mean, basis, sigma, iterations=10, ridge=0.5)
    assert (np.linalg.norm(shrunk["beta"], axis=1) < np.linalg.norm(free["beta"], axis=1)).all()
    # one component, or the same one padded with two zero components at 3 times the ridge:
    # lambda = ridge * trace / B is the same, so is the fit
    one = fit_shape_basis(points, w0, mean, basis[:1], sigma[:1], iterations=10, ridge=0.2)
    padded = fit_shape_basis(points, w0, mean, basis, np.array([sigma[0], 0.0, 0.0]),
                             iterations=10, ridge=0.6)  # fmt: skip
    np.testing.assert_allclose(padded["projection"], one["projection"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(padded["beta"][:, 0], one["beta"][:, 0], rtol=1e-9, atol=1e-12)
    assert np.abs(one["beta"]).min() > 1e-3  # a single component is fitted too


def test_iterations_defaults_and_at_least_one() -> None:
    points, w0, mean, basis, sigma = _noisy(6)
    default = fit_shape_basis(points, w0, mean, basis, sigma)
    explicit = fit_shape_basis(points, w0, mean, basis, sigma, 50, 1e-2)
    np.testing.assert_array_equal(default["projection"], explicit["projection"])
    assert not np.array_equal(
        default["projection"], fit_shape_basis(points, w0, mean, basis, sigma, 51)["projection"]
    )
    zero = fit_shape_basis(points, w0, mean, basis, sigma, iterations=0)
    one = fit_shape_basis(points, w0, mean, basis, sigma, iterations=1)
    two = fit_shape_basis(points, w0, mean, basis, sigma, iterations=2)
    np.testing.assert_array_equal(zero["beta"], one["beta"])
    assert not np.array_equal(one["beta"], two["beta"])
