"""The robust (Cauchy-reweighted) shape-basis fit: its rounds against the documented weights
``w0 / (1 + (r / c)²)``, and gross errors it ignores where the plain fit does not (found by
`make mutation`, where it had no test)."""

from __future__ import annotations

import numpy as np

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
