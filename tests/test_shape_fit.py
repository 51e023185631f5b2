"""Least-squares shape-basis fit: exact recovery from a noise-free visible subset."""

from __future__ import annotations

import numpy as np

from occaist.geometry.shape_fit import fit_shape_basis


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q * np.linalg.det(q)


def test_fit_recovers_hidden_keypoints_from_noise_free_visible_subset() -> None:
    rng = np.random.default_rng(0)
    k, b, n = 14, 4, 6
    mean = rng.normal(size=(k, 3))
    basis = np.linalg.qr(rng.normal(size=(k * 3, b)))[0].T.reshape(b, k, 3)
    sigma = np.array([0.6, 0.4, 0.3, 0.2])
    beta = rng.normal(size=(n, b))
    shapes = mean + np.einsum("nb,b,bkc->nkc", beta, sigma, basis)
    truth = np.stack([
        80.0 * (shapes[i] @ _rotation(rng).T)[:, :2] + rng.uniform(100, 300, size=2)
        for i in range(n)
    ])  # fmt: skip
    visible = np.zeros((n, k))
    for i in range(n):
        visible[i, rng.choice(k, size=8, replace=False)] = 1.0
    observed = np.where(visible[..., None] > 0, truth, 1e4)  # hidden points carry garbage
    fit = fit_shape_basis(observed, visible, mean, basis, sigma, iterations=300, ridge=0.0)
    assert fit["residual"].max() < 1e-4
    np.testing.assert_allclose(fit["projection"], truth, atol=1e-3)  # the hidden ones too
    np.testing.assert_allclose(fit["beta"], beta, atol=1e-4)
    # with the basis dropped (mean shape only) it cannot explain the points
    mean_only = fit_shape_basis(observed, visible, mean, basis[:0], sigma[:0])
    assert mean_only["residual"].min() > 1.0
