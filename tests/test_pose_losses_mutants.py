"""The pose regression losses on small hand-built scenes, against per-sample and per-pixel
brute force written here (found by `make mutation`; no data set needed, so each runs in ms)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from occaist.geometry.quaternion import quaternion_to_rotation_matrix
from occaist.models.pose_regression.losses import (
    box_loss,
    decode_translation,
    projection_loss,
    rotation_loss,
    soft_silhouette,
    translation_loss,
    weight_regularizer,
)

# a pinhole camera with distinct focal lengths and an off-centre principal point (20 px image)
K1 = torch.tensor([[30.0, 0.0, 9.0], [0.0, 24.0, 11.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _rotations(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(n, 4, generator=g, dtype=torch.float64), dim=-1)
    return quaternion_to_rotation_matrix(q)


def _silhouette_brute_force(points, R, t, K, image_size, grid, sigma):
    """Per pixel (row, col): 1 - exp(-Σ_points Gaussian), points in front of the camera only."""
    out = torch.zeros(len(points), grid, grid, dtype=torch.float64)
    for b in range(len(points)):
        for x in points[b]:
            cam = R[b] @ x + t[b]
            if cam[2] <= 1e-6:
                continue
            u, v = (K[b] @ cam)[:2] / cam[2]
            gu = (u + 0.5) * grid / image_size - 0.5
            gv = (v + 0.5) * grid / image_size - 0.5
            rows, cols = torch.meshgrid(
                torch.arange(grid, dtype=torch.float64),
                torch.arange(grid, dtype=torch.float64),
                indexing="ij",
            )
            out[b] += torch.exp(-((gu - cols) ** 2 + (gv - rows) ** 2) / (2 * sigma**2))
    return 1.0 - torch.exp(-out)


def _scene(batch: int = 2):
    g = torch.Generator().manual_seed(0)
    points = (torch.rand(batch, 5, 3, generator=g, dtype=torch.float64) - 0.5) * 0.8
    R = _rotations(batch, seed=1)
    t = torch.tensor([[0.1, -0.2, 3.0], [-0.3, 0.1, 4.0]], dtype=torch.float64)[:batch]
    K = K1.expand(batch, 3, 3).clone()
    K[1:, 0, 0] = 20.0  # the second camera differs
    return points, R, t, K


def test_decode_translation_inverts_the_pinhole_projection() -> None:
    t = torch.tensor([[0.3, -0.2, 4.0], [-1.0, 0.5, 7.0], [0.0, 0.0, 2.5]], dtype=torch.float64)
    K = K1.expand(3, 3, 3).clone()
    K[2, 1, 1] = 40.0
    diameter = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    size = 20
    uv = torch.stack([(K[b] @ t[b])[:2] / t[b, 2] for b in range(3)])
    centre = (uv + 0.5) / size - 0.5
    decoded = decode_translation(centre, torch.log(t[:, 2] / diameter), K, diameter, size)
    assert torch.allclose(decoded, t, rtol=1e-10, atol=1e-10)


def test_box_and_translation_losses_average_per_sample_norms() -> None:
    pred = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    gt = torch.tensor([[1.0, 2.0, 0.0, 0.0], [0.0, 6.0, 0.0, 8.0]])
    assert box_loss(pred, gt).item() == pytest.approx((5.0 + 10.0) / 2)
    t_pred = torch.tensor([[1.0, 1.0, 1.0], [3.0, 0.0, 5.0]])
    t_gt = torch.tensor([[1.0, 1.0, 1.0], [0.0, 4.0, 5.0]])
    diameter = torch.tensor([2.0, 10.0])
    assert translation_loss(t_pred, t_gt, diameter).item() == pytest.approx((0.0 + 0.5) / 2)


def test_rotation_loss_matches_per_point_brute_force_with_a_rotated_truth() -> None:
    R_pred, R_gt = _rotations(3, seed=2), _rotations(3, seed=3)
    points = torch.randn(3, 7, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    diameter = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    expected = (
        sum(
            sum((R_gt[b] @ x - R_pred[b] @ x).norm() for x in points[b]) / 7 / diameter[b]
            for b in range(3)
        )
        / 3
    )
    got = rotation_loss(R_pred, R_gt, points, diameter)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    # shared (P, 3) points
    shared = rotation_loss(R_pred, R_gt, points[0], diameter)
    expected_shared = rotation_loss(R_pred, R_gt, points[0].expand(3, 7, 3), diameter)
    assert shared.item() == pytest.approx(expected_shared.item(), rel=1e-12)


@pytest.mark.parametrize(("grid", "sigma"), [(8, 1.0), (6, 0.7)])
def test_soft_silhouette_matches_per_pixel_brute_force(grid: int, sigma: float) -> None:
    points, R, t, K = _scene()
    points[1, 0] = torch.tensor([0.0, 0.0, -10.0], dtype=torch.float64)  # behind the camera
    points[1, 0] = R[1].T @ (points[1, 0] - t[1])  # so that it lands at z = -10 in camera space
    got = soft_silhouette(points, R, t, K, 20, grid, sigma)
    expected = _silhouette_brute_force(points, R, t, K, 20, grid, sigma)
    assert got.shape == (2, grid, grid)
    assert torch.allclose(got, expected, atol=1e-12)


def test_projection_loss_is_one_minus_the_soft_iou_with_defaults_32_and_1() -> None:
    points, R, t, K = _scene()
    R_pred = _rotations(2, seed=5)
    t_pred = t + torch.tensor([[0.2, 0.0, 0.3], [0.0, -0.1, -0.5]], dtype=torch.float64)
    a = _silhouette_brute_force(points, R_pred, t_pred, K, 20, 32, 1.0)
    b = _silhouette_brute_force(points, R, t, K, 20, 32, 1.0)
    iou = torch.minimum(a, b).flatten(1).sum(-1) / torch.maximum(a, b).flatten(1).sum(-1)
    expected = (1.0 - iou).mean()
    got = projection_loss(points, R_pred, t_pred, R, t, K, 20)
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)
    assert projection_loss(points, R, t, R, t, K, 20).item() == 0.0


def test_projection_loss_sends_gradients_to_the_prediction_only() -> None:
    points, R, t, K = _scene()
    t_pred = (t + torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64)).requires_grad_(True)
    t_gt = t.clone().requires_grad_(True)
    projection_loss(points, R, t_pred, R, t_gt, K, 20, grid=8).backward()
    assert t_pred.grad is not None and t_pred.grad.abs().sum() > 0
    assert t_gt.grad is None


def test_weight_regularizer_sums_squared_conv_and_linear_weights_only() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(0.5)
    # conv 2·1·3·3 = 18 and linear 4·3 = 12 weights of 0.25 each; biases and BN left out
    assert weight_regularizer(net).item() == pytest.approx(30 * 0.25)
