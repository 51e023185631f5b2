"""Quaternion algebra against exact cases and against its own matrix form."""

from __future__ import annotations

import math

import pytest
import torch

from occaist.geometry.quaternion import (
    quaternion_conjugate,
    quaternion_from_axis_angle,
    quaternion_multiply,
    quaternion_normalize,
    quaternion_rotate,
    quaternion_to_axis_angle,
    quaternion_to_rotation_matrix,
    rotation_matrix_to_quaternion,
)


def _random_quaternions(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return quaternion_normalize(torch.randn(n, 4, generator=g, dtype=torch.float64))


def test_hamilton_units():
    one, i, j, k = torch.eye(4, dtype=torch.float64)
    assert torch.equal(quaternion_multiply(i, j), k)
    assert torch.equal(quaternion_multiply(j, k), i)
    assert torch.equal(quaternion_multiply(k, i), j)
    assert torch.equal(quaternion_multiply(i, i), -one)
    assert torch.equal(quaternion_multiply(j, i), -k)


def test_rotate_matches_explicit_sandwich_product():
    q = _random_quaternions(5) * 3.0  # non-unit: rotate normalises as upstream does
    p = torch.randn(5, 7, 3, dtype=torch.float64)
    qn = quaternion_normalize(q)[:, None, :]
    p4 = torch.cat((torch.zeros(5, 7, 1, dtype=torch.float64), p), -1)
    sandwich = quaternion_multiply(quaternion_multiply(qn, p4), quaternion_conjugate(qn))
    torch.testing.assert_close(sandwich[..., 0], torch.zeros(5, 7, dtype=torch.float64))
    torch.testing.assert_close(quaternion_rotate(p, q), sandwich[..., 1:])
    torch.testing.assert_close(quaternion_rotate(quaternion_rotate(p, q), q, inverse=True), p)


def test_rotation_matrix_agrees_and_round_trips():
    q = _random_quaternions(64, seed=1)
    R = quaternion_to_rotation_matrix(q)
    p = torch.randn(64, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(p @ R.transpose(-1, -2), quaternion_rotate(p, q))
    torch.testing.assert_close(
        R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(64, 3, 3)
    )
    assert torch.allclose(torch.linalg.det(R), torch.ones(64, dtype=torch.float64))
    q_back = rotation_matrix_to_quaternion(R)
    assert (q_back[:, 0] >= 0).all()
    canon = torch.where(q[:, :1] < 0, -q, q)
    torch.testing.assert_close(q_back, canon)


@pytest.mark.parametrize(
    "axis", [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 0.0)]
)
def test_half_turns_round_trip(axis):
    # Near 180 degrees the trace formula breaks down; Shepperd's method must not.
    q = quaternion_from_axis_angle(torch.tensor(axis, dtype=torch.float64), torch.tensor(math.pi))
    back = rotation_matrix_to_quaternion(quaternion_to_rotation_matrix(q))
    assert torch.allclose(back, q, atol=1e-12) or torch.allclose(back, -q, atol=1e-12)


def test_axis_angle_exact_and_round_trip():
    q = quaternion_from_axis_angle(
        torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), torch.tensor(math.pi / 2)
    )
    p = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(
        quaternion_rotate(p, q), torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    )
    qs = _random_quaternions(32, seed=2)
    axis, angle = quaternion_to_axis_angle(qs)
    assert ((angle >= 0) & (angle <= math.pi + 1e-12)).all()
    back = quaternion_from_axis_angle(axis, angle)
    canon = torch.where(qs[:, :1] < 0, -qs, qs)
    torch.testing.assert_close(back, canon)
    axis0, angle0 = quaternion_to_axis_angle(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert float(angle0) == 0.0 and axis0.tolist() == [1.0, 0.0, 0.0]


def test_composition_order():
    a, b = _random_quaternions(2, seed=3)
    p = torch.randn(1, 6, 3, dtype=torch.float64)
    torch.testing.assert_close(
        quaternion_rotate(p, quaternion_multiply(a, b)),
        quaternion_rotate(quaternion_rotate(p, b), a),
    )


def test_gradients_flow():
    q = _random_quaternions(3, seed=4).requires_grad_(True)
    p = torch.randn(3, 5, 3, dtype=torch.float64)
    quaternion_rotate(p, q).square().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
