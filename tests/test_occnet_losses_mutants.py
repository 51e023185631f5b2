"""Occlusion-Net losses at their edges, found by `make mutation`: a one-point mask, the
reprojection defaults, the trifocal loss per point in both error forms and its dtype, point
transfer with two batch dimensions, a loss without a weight."""

from __future__ import annotations

import pytest
import torch

from occaist.geometry.multiview import normalize_trifocal, project, trifocal_tensor
from occaist.models.occlusion_net.losses import (
    masked_l2,
    reprojection_loss,
    trifocal_loss,
    trifocal_transfer,
    weighted_sum,
)


def _skew(v: torch.Tensor) -> torch.Tensor:
    x, y, z = v.tolist()
    return torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]], dtype=torch.float64)


def _cameras(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    P = torch.randn(n, 3, 4, generator=g, dtype=torch.float64)
    P[:, 2, 3] += 6.0  # points near the origin lie in front
    return P


def test_masked_l2_over_one_point_is_its_squared_distance() -> None:
    pred = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])
    target = torch.tensor([[[1.0, 0.0], [5.0, 5.0]]])
    assert masked_l2(pred, target, torch.tensor([[True, False]])).item() == 4.0
    empty = masked_l2(pred.requires_grad_(), target, torch.tensor([[False, False]]))
    assert empty.item() == 0.0
    empty.backward()
    assert pred.grad is not None


def test_reprojection_defaults_to_the_refined_target_with_gradient() -> None:
    n, k = 1, 14
    refined = torch.zeros(n, k, 3, requires_grad=True)
    out = {"keypoints_3d": torch.ones(n, k, 2), "refined": refined, "keypoints_2d": None}
    labelled = torch.ones(n, k, dtype=torch.bool)
    loss = reprojection_loss(out, torch.zeros(n, k, 2), labelled)
    assert loss.item() == pytest.approx(2.0)  # |(1, 1) - (0, 0)|² on the 12 kept nodes
    loss.backward()
    assert refined.grad is not None and refined.grad[..., :2].abs().sum() > 0


def _trifocal_scene():
    g = torch.Generator().manual_seed(0)
    n, k = 2, 3
    P1 = _cameras(n, 1)
    P2 = _cameras(n * k, 2).view(n, k, 3, 4)
    P3 = _cameras(n * k, 3).view(n, k, 3, 4)
    X = torch.randn(n, k, 3, generator=g, dtype=torch.float64) * 0.5
    x1 = project(P1[:, None].expand(n, k, 3, 4), X)
    x2, x3 = project(P2, X), project(P3, X)
    pred = x1 + 0.05 * torch.randn(n, k, 2, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    return pred, P1, P2, P3, x1, x2, x3, mask


def test_trifocal_loss_is_the_mean_squared_frobenius_residual_per_point_by_default() -> None:
    pred, P1, P2, P3, _, x2, x3, mask = _trifocal_scene()
    expected = []
    for i, j in mask.nonzero().tolist():
        T = normalize_trifocal(trifocal_tensor(P1[i], P2[i, j], P3[i, j]))
        x1h = torch.cat((pred[i, j], torch.ones(1, dtype=torch.float64)))
        middle = sum(x1h[m] * T[m] for m in range(3))
        r = _skew(torch.cat((x2[i, j], torch.ones(1)))) @ middle
        r = r @ _skew(torch.cat((x3[i, j], torch.ones(1))))
        expected.append((r**2).sum())
    got = trifocal_loss(pred, P1, P2, P3, x2, x3, mask)
    assert got.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-9)


def test_trifocal_transfer_error_is_the_mean_squared_offset_per_point() -> None:
    pred, P1, P2, P3, x1, x2, x3, mask = _trifocal_scene()
    got = trifocal_loss(pred, P1, P2, P3, x2, x3, mask, error="transfer")
    # exact correspondences: the transferred point is the true projection x1
    expected = ((pred - x1) ** 2).sum(-1)[mask].mean()
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # float32 predictions with float64 cameras: the loss is float32 in both forms
    for error in ("algebraic", "transfer"):
        loss = trifocal_loss(pred.float(), P1, P2, P3, x2, x3, mask, error=error)
        assert loss.dtype == torch.float32


def test_trifocal_transfer_with_two_batch_dimensions_equals_per_item() -> None:
    _, P1, P2, P3, x1, x2, x3, _ = _trifocal_scene()
    T = normalize_trifocal(trifocal_tensor(P1[:, None].expand_as(P2), P2, P3))  # (2, 3, ...)
    both = trifocal_transfer(T, x2, x3)
    assert both.shape == (2, 3, 2)
    torch.testing.assert_close(both, x1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(both[1], trifocal_transfer(T[1], x2[1], x3[1]))


def test_a_loss_without_a_weight_is_an_error() -> None:
    losses = {"a": torch.tensor(1.0), "b": torch.tensor(2.0)}
    assert weighted_sum(losses, {"a": 0.5, "b": 2.0}).item() == 4.5
    with pytest.raises(KeyError, match="'b'"):
        weighted_sum(losses, {"a": 1.0})
