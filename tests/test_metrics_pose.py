"""Quaternion angular error and PoseAccuracy against brute-force numpy rotation matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occaist.metrics import PoseAccuracy
from occaist.metrics.functional import quaternion_angle_deg


def _matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _angle_deg(qa: np.ndarray, qb: np.ndarray) -> float:
    rel = _matrix(qa).T @ _matrix(qb)
    return float(np.degrees(np.arccos(np.clip((np.trace(rel) - 1) / 2, -1, 1))))


def test_angle_matches_rotation_matrices_and_is_sign_invariant() -> None:
    rng = np.random.default_rng(0)
    qa, qb = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    got = quaternion_angle_deg(torch.from_numpy(qa), torch.from_numpy(qb))
    expected = np.array([_angle_deg(a, b) for a, b in zip(qa, qb, strict=True)])
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    flipped = quaternion_angle_deg(torch.from_numpy(-qa), torch.from_numpy(qb))
    np.testing.assert_allclose(flipped.numpy(), expected, atol=1e-5)


def test_angle_is_finite_for_identical_float32_quaternions() -> None:
    q = torch.nn.functional.normalize(torch.randn(100, 4), dim=-1)
    err = quaternion_angle_deg(q, q * 1.0000001)
    assert torch.isfinite(err).all() and err.max() < 0.1


def test_pose_accuracy_and_upper_median() -> None:
    angles = np.array([5.0, 10.0, 29.0, 31.0, 90.0, 170.0])
    axis = np.array([0.0, 0.0, 1.0])
    q_pred = np.stack(
        [np.r_[np.cos(np.radians(a) / 2), np.sin(np.radians(a) / 2) * axis] for a in angles]
    )
    q_gt = np.tile([1.0, 0.0, 0.0, 0.0], (len(angles), 1))
    metric = PoseAccuracy(threshold_deg=30.0)
    metric.update(torch.from_numpy(q_pred[:4]), torch.from_numpy(q_gt[:4]))
    metric.update(torch.from_numpy(q_pred[4:]), torch.from_numpy(q_gt[4:]))
    out = metric.compute()
    assert float(out["accuracy"]) == pytest.approx(3 / 6)
    assert float(out["median_deg"]) == pytest.approx(np.sort(angles)[len(angles) // 2], abs=1e-3)
    assert float(out["mean_deg"]) == pytest.approx(angles.mean(), abs=1e-3)
