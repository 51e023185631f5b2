"""Least-squares fit of a keypoint shape basis and a weak-perspective camera to 2D points.

The no-learning baseline beside the 3D-KGNN: for each instance, find shape coefficients
``beta`` and a scaled-orthographic camera ``(s, R, t)`` minimising

    sum_k w_k || s R_{2x3} (b_0 + sum_j beta_j sigma_j b_j)_k + t - p_k ||^2 + lambda ||beta||^2

over the 2D points ``p`` (pixels, so the error is isotropic) with per-point weights ``w`` (0 drops
a point), then project every keypoint of the fitted shape. Alternating least squares
(Ramakrishna et al., ECCV 2012, without the sparsity): the affine camera in closed form, projected
onto the nearest scaled rotation by SVD; then ``beta`` in closed form (ridge ``lambda``);
repeated ``iterations`` times from ``beta = 0``. Vectorised over instances with numpy.

:func:`robust_fit_shape_basis` repeats the fit with iteratively reweighted least squares
(Cauchy weights ``1 / (1 + (r / c)^2)`` on each point's residual ``r``, ``c`` a fraction of the
instance's size), so that a few gross errors of a heatmap detector (left/right swaps, a
keypoint on the wrong car) do not drag the whole shape.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_shape_basis", "robust_fit_shape_basis"]


def _camera(shape: np.ndarray, points: np.ndarray, w: np.ndarray):
    """Weighted scaled-orthographic camera ``(s (N,), R (N, 2, 3), t (N, 2))`` of shapes
    ``(N, K, 3)`` to points ``(N, K, 2)``."""
    wsum = w.sum(1, keepdims=True).clip(1e-12)[..., None]  # (N, 1, 1)
    s_mean = (w[..., None] * shape).sum(1, keepdims=True) / wsum
    p_mean = (w[..., None] * points).sum(1, keepdims=True) / wsum
    sc, pc = shape - s_mean, points - p_mean
    sws = np.einsum("nk,nki,nkj->nij", w, sc, sc) + 1e-9 * np.eye(3)
    pws = np.einsum("nk,nki,nkj->nij", w, pc, sc)  # (N, 2, 3)
    affine = pws @ np.linalg.inv(sws)
    u, sv, vt = np.linalg.svd(affine, full_matrices=False)  # (N,2,2), (N,2), (N,2,3)
    rot = u @ vt
    scale = sv.mean(-1)
    t = p_mean[:, 0] - scale[:, None] * np.einsum("nij,nj->ni", rot, s_mean[:, 0])
    return scale, rot, t


def fit_shape_basis(
    points: np.ndarray,
    weights: np.ndarray,
    mean: np.ndarray,
    basis: np.ndarray,
    sigma: np.ndarray,
    iterations: int = 50,
    ridge: float = 1e-2,
) -> dict[str, np.ndarray]:
    """Fit ``beta`` and a weak-perspective camera per instance (see module docstring).

    Args:
        points: ``(N, K, 2)`` observed keypoints (pixels).
        weights: ``(N, K)`` non-negative weights (0: not observed).
        mean: ``(K, 3)`` mean shape ``b_0``; basis: ``(B, K, 3)``; sigma: ``(B,)``.
        iterations: alternations.
        ridge: ``lambda`` relative to the mean diagonal of the normal equations (0: none).

    Returns:
        ``projection`` ``(N, K, 2)`` (every keypoint of the fitted shape), ``beta`` ``(N, B)``,
        ``scale`` ``(N,)``, ``rotation`` ``(N, 2, 3)``, ``translation`` ``(N, 2)``,
        ``residual`` ``(N,)`` weighted RMS error on the observed points.
    """
    points = np.asarray(points, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    n, k = w.shape
    components = np.asarray(basis, np.float64) * np.asarray(sigma, np.float64)[:, None, None]
    b = components.shape[0]
    beta = np.zeros((n, b))
    mean = np.asarray(mean, np.float64)
    for _ in range(max(iterations, 1)):
        shape = mean[None] + np.einsum("nb,bkc->nkc", beta, components)
        scale, rot, t = _camera(shape, points, w)
        if b == 0:
            break
        # residual after the mean shape, linear in beta: A[n, k, :, j] = s R c_jk
        resid = points - t[:, None] - scale[:, None, None] * np.einsum("nij,kj->nki", rot, mean)
        design = scale[:, None, None, None] * np.einsum("nij,bkj->nkib", rot, components)
        a = design.reshape(n, 2 * k, b)
        wr = np.repeat(w, 2, axis=1)  # (N, 2K)
        ata = np.einsum("nm,nmi,nmj->nij", wr, a, a)
        atr = np.einsum("nm,nmi,nm->ni", wr, a, resid.reshape(n, 2 * k))
        lam = ridge * np.trace(ata, axis1=1, axis2=2) / b
        beta = np.linalg.solve(ata + (lam[:, None, None] + 1e-12) * np.eye(b), atr[..., None])[
            ..., 0
        ]
    shape = mean[None] + np.einsum("nb,bkc->nkc", beta, components)
    scale, rot, t = _camera(shape, points, w)
    proj = scale[:, None, None] * np.einsum("nij,nkj->nki", rot, shape) + t[:, None]
    err = ((proj - points) ** 2).sum(-1)
    residual = np.sqrt((w * err).sum(1) / w.sum(1).clip(1e-12))
    return {
        "projection": proj,
        "beta": beta,
        "scale": scale,
        "rotation": rot,
        "translation": t,
        "residual": residual,
    }


def robust_fit_shape_basis(
    points: np.ndarray,
    weights: np.ndarray,
    mean: np.ndarray,
    basis: np.ndarray,
    sigma: np.ndarray,
    size: np.ndarray,
    cauchy: float = 0.03,
    rounds: int = 6,
    iterations: int = 50,
    ridge: float = 1e-2,
) -> dict[str, np.ndarray]:
    """:func:`fit_shape_basis` with ``rounds`` of Cauchy reweighting (module docstring):
    ``size`` ``(N,)`` the instances' sizes in pixels (e.g. the ROI's larger side), ``cauchy``
    the Cauchy scale as a fraction of it. Same returns."""
    w0 = np.asarray(weights, dtype=np.float64)
    scale = cauchy * np.asarray(size, dtype=np.float64)[:, None]
    w = w0
    fit = fit_shape_basis(points, w, mean, basis, sigma, iterations, ridge)
    for _ in range(rounds - 1):
        residual = np.linalg.norm(fit["projection"] - points, axis=-1)
        w = w0 / (1.0 + (residual / scale) ** 2)
        fit = fit_shape_basis(points, w, mean, basis, sigma, iterations, ridge)
    return fit
