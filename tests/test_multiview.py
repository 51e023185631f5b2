"""Trifocal tensor, incidence residual and DLT triangulation against exact cases."""

from __future__ import annotations

import torch

from occaist.geometry import trifocal_tensor
from occaist.geometry.multiview import (
    normalize_trifocal,
    project,
    skew,
    triangulate,
    trifocal_residual,
)


def _look_at_camera(center: torch.Tensor, focal: float = 500.0) -> torch.Tensor:
    """A 3x4 camera at ``center`` looking at the origin (float64)."""
    forward = -center / center.norm()
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    right = torch.linalg.cross(forward, up)
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    R = torch.stack([right, down, forward])
    K = torch.tensor([[focal, 0, 320.0], [0, focal, 240.0], [0, 0, 1]], dtype=torch.float64)
    return K @ torch.cat([R, (-R @ center)[:, None]], dim=1)


def _three_cameras() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    centers = torch.tensor(
        [[6.0, 0.5, 1.0], [0.5, 7.0, 2.0], [-5.0, -4.0, 1.5]], dtype=torch.float64
    )
    return tuple(_look_at_camera(c) for c in centers)


def test_skew_is_cross_product() -> None:
    v, w = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    assert torch.allclose(skew(v) @ w[..., None], torch.linalg.cross(v, w)[..., None])


def test_trifocal_incidence_exact_and_wrong_point_fails() -> None:
    # image coordinates scaled to O(1) (as the loss does) so that 1e-6 is a meaningful tolerance
    N = torch.diag(torch.tensor([1 / 640.0, 1 / 640.0, 1.0], dtype=torch.float64))
    P1, P2, P3 = (N @ P for P in _three_cameras())
    T = normalize_trifocal(trifocal_tensor(P1, P2, P3))
    assert T.shape == (3, 3, 3)
    X = torch.tensor([[0.3, -0.2, 0.4], [-0.5, 0.1, 0.0], [0.0, 0.0, 0.8]], dtype=torch.float64)
    x1, x2, x3 = (
        torch.cat([project(P, X), torch.ones(3, 1, dtype=torch.float64)], 1) for P in (P1, P2, P3)
    )
    # the documented index convention, written out
    res = skew(x2) @ torch.einsum("ni,ijk->njk", x1, T) @ skew(x3)
    assert res.abs().max() < 1e-6
    assert torch.allclose(res, trifocal_residual(T, x1, x2, x3))
    assert torch.allclose(res, trifocal_residual(T, x1[:, :2], x2[:, :2], x3[:, :2]))
    shift = torch.tensor([0.02, -0.015, 0.0], dtype=torch.float64)  # about 10 pixels
    for wrong in (
        trifocal_residual(T, x1 + shift, x2, x3),
        trifocal_residual(T, x1, x2, x3 + shift),
    ):
        assert wrong.abs().amax(dim=(-1, -2)).min() > 1e-4


def test_trifocal_batched_matches_single() -> None:
    P1, P2, P3 = _three_cameras()
    batch = trifocal_tensor(torch.stack([P1, P2]), torch.stack([P2, P3]), torch.stack([P3, P1]))
    assert torch.allclose(batch[1], trifocal_tensor(P2, P3, P1))


def test_triangulation_recovers_point_and_respects_mask() -> None:
    cams = torch.stack(_three_cameras())  # (3, 3, 4)
    X = torch.tensor([[0.2, -0.3, 0.5], [-0.4, 0.25, 0.1]], dtype=torch.float64)
    xs = project(cams[None], X[:, None])  # (2, 3, 2)
    assert torch.allclose(triangulate(cams.expand(2, 3, 3, 4), xs), X, atol=1e-8)
    corrupted = xs.clone()
    corrupted[:, 2] += 50.0
    mask = torch.tensor([[True, True, False]] * 2)
    assert torch.allclose(triangulate(cams.expand(2, 3, 3, 4), corrupted, mask), X, atol=1e-8)
    assert not torch.allclose(triangulate(cams.expand(2, 3, 3, 4), corrupted), X, atol=1e-3)
