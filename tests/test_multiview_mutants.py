"""Multi-view geometry with two batch dimensions and one-sided broadcasting, found by
`make mutation`: skew matrices, trifocal tensors, their normalisation, the residual of 3-D point
arrays and DLT triangulation, each against the per-item result or its defining property."""

from __future__ import annotations

import torch

from occaist.geometry.multiview import (
    normalize_trifocal,
    project,
    skew,
    triangulate,
    trifocal_residual,
    trifocal_tensor,
)


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _cameras(*batch: int, seed: int) -> torch.Tensor:
    P = _randn(*batch, 3, 4, seed=seed)
    P[..., 2, 3] += 6.0
    return P


def test_skew_with_two_batch_dimensions_is_the_cross_product() -> None:
    v, w = _randn(2, 3, 3, seed=0), _randn(2, 3, 3, seed=1)
    S = skew(v)
    assert S.shape == (2, 3, 3, 3)
    torch.testing.assert_close((S @ w[..., None])[..., 0], torch.linalg.cross(v, w))


def test_trifocal_tensor_broadcasts_any_one_batched_camera() -> None:
    batched, single = _cameras(2, seed=2), _cameras(seed=3)
    other = _cameras(seed=4)
    for position in range(3):
        cams = [single, other, _cameras(seed=5)]
        cams[position] = batched
        T = trifocal_tensor(*cams)
        assert T.shape == (2, 3, 3, 3)
        for b in range(2):
            per_item = [c[b] if c.dim() == 3 else c for c in cams]
            torch.testing.assert_close(T[b], trifocal_tensor(*per_item))


def test_normalized_trifocal_tensors_have_unit_norm_each() -> None:
    T = trifocal_tensor(_cameras(2, seed=6), _cameras(2, seed=7), _cameras(2, seed=8))
    T = T * torch.tensor([1e-3, 50.0], dtype=torch.float64)[:, None, None, None]
    unit = normalize_trifocal(T)
    norms = unit.flatten(-3).norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(unit[0] * T[0].norm(), T[0])


def test_residual_of_point_arrays_with_a_batch_of_three() -> None:
    """x of shape (2, 3, 2): the last axis, not axis 1, tells pixels from homogeneous points."""
    P1, P2, P3 = (_cameras(2, 3, seed=s) for s in (9, 10, 11))
    X = _randn(2, 3, 3, seed=12) * 0.5
    T = trifocal_tensor(P1, P2, P3)
    r = trifocal_residual(T, project(P1, X), project(P2, X), project(P3, X))
    assert r.shape == (2, 3, 3, 3)
    assert r.abs().max() < 1e-8 * T.abs().max()


def test_triangulation_with_two_batch_dimensions_and_rescaled_cameras() -> None:
    Ps = _cameras(2, 3, 4, seed=13)  # (2, 3) points seen by 4 views
    X = _randn(2, 3, 3, seed=14) * 0.5
    xs = project(Ps, X[:, :, None].expand(2, 3, 4, 3))
    torch.testing.assert_close(triangulate(Ps, xs), X)
    noisy = xs + 0.01 * _randn(2, 3, 4, 2, seed=15)
    base = triangulate(Ps, noisy)
    # a camera matrix is defined up to scale: rows are normalised, so rescaling changes nothing
    scaled = Ps * torch.tensor([1e-3, 1.0, 7.0, 1.0], dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(triangulate(scaled, noisy), base)
    per_item = torch.stack(
        [torch.stack([triangulate(Ps[i, j], noisy[i, j]) for j in range(3)]) for i in range(2)]
    )
    torch.testing.assert_close(base, per_item)
