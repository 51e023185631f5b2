"""The DPC camera against upstream's formulas, the pinhole camera against exact cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from occaist.geometry.camera import (
    DPC_CAMERA_DISTANCE,
    DPC_FOCAL_LENGTH,
    blender_extrinsic_from_quaternion,
    camera_from_blender,
    campos_from_azimuth_elevation,
    dpc_pinhole,
    dpc_project,
    dpc_to_pixels,
    intrinsic_matrix,
    look_at,
    project_points,
    projection_matrix,
    quaternion_from_campos,
)
from occaist.geometry.quaternion import quaternion_to_rotation_matrix


def _upstream_quaternion_from_campos(pos):
    """A line-by-line numpy transcription of upstream util/euler.py + util/camera.py."""

    def q_mul(a, b):
        w1, x1, y1, z1 = a
        w2, x2, y2, z2 = b
        return np.array(
            [
                w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
                w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                w1 * y2 + y1 * w2 + z1 * x2 - x1 * z2,
                w1 * z2 + z1 * w2 + x1 * y2 - y1 * x2,
            ]
        )

    def axis_angle(angle, axis):
        return np.array([math.cos(angle / 2), *(math.sin(angle / 2) * np.asarray(axis))])

    cx, cy, cz = pos
    dist = math.sqrt(cx * cx + cy * cy + cz * cz)
    cx, cy, cz = cx / dist, cy / dist, cz / dist
    t = math.sqrt(cx * cx + cy * cy)
    yaw = math.acos(cx / t)
    if cy / t > 0:
        yaw = 2 * math.pi - yaw
    yaw += math.pi
    pitch = math.asin(cz)
    q_yaw = axis_angle(yaw, [0, 1, 0])
    q_pitch = axis_angle(pitch, [0, 0, 1])
    q_roll = axis_angle(0.0, [1, 0, 0])
    return q_mul(q_roll, q_mul(q_pitch, q_yaw))


def test_quaternion_from_campos_matches_upstream():
    rng = np.random.default_rng(0)
    az = rng.uniform(0, 360, 50)
    el = rng.uniform(-20, 40, 50)
    pos = campos_from_azimuth_elevation(torch.tensor(az), torch.tensor(el), distance=1.7)
    ours = quaternion_from_campos(pos).numpy()
    ref = np.stack([_upstream_quaternion_from_campos(p) for p in pos.numpy()])
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_view_semantics():
    """Azimuth 0 sees the car's front (+x); positive elevation looks from above."""
    front = torch.tensor([[0.4, 0.0, 0.0]], dtype=torch.float64)
    top = torch.tensor([[0.0, 0.4, 0.0]], dtype=torch.float64)
    q0 = quaternion_from_campos(
        campos_from_azimuth_elevation(
            torch.tensor(0.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
        )
    )
    assert dpc_project(front, q0)[0, 0] < -0.39  # nearest the camera (camera at δ = -d)
    q_up = quaternion_from_campos(
        campos_from_azimuth_elevation(
            torch.tensor(30.0, dtype=torch.float64), torch.tensor(30.0, dtype=torch.float64)
        )
    )
    d = dpc_project(top, q_up)
    assert d[0, 0] < 0 and d[0, 1] > 0  # the roof comes closer and appears above the centre


def test_dpc_project_formula_and_pixels():
    q = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    p = torch.tensor([[0.5, 0.2, -0.1]], dtype=torch.float64)
    out = dpc_project(p, q)
    z = 0.5 + DPC_CAMERA_DISTANCE
    expected = torch.tensor(
        [[0.5, DPC_FOCAL_LENGTH * 0.2 / z, DPC_FOCAL_LENGTH * -0.1 / z]], dtype=torch.float64
    )
    torch.testing.assert_close(out, expected)
    row, col = dpc_to_pixels(out[..., 1], out[..., 2], 128, 64)
    torch.testing.assert_close(row, (0.5 - expected[..., 1]) * 128)
    torch.testing.assert_close(col, (expected[..., 2] + 0.5) * 64)


def test_dpc_pinhole_equals_dpc_projection():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(100, 3, generator=g, dtype=torch.float64) - 0.5
    pos = campos_from_azimuth_elevation(
        torch.tensor(123.0, dtype=torch.float64), torch.tensor(17.0, dtype=torch.float64)
    )
    q = quaternion_from_campos(pos)
    K, R, t = dpc_pinhole(q, 96, 128)
    xy, depth = project_points(projection_matrix(K, R, t), pts)
    d = dpc_project(pts, q)
    row, col = dpc_to_pixels(d[:, 1], d[:, 2], 96, 128)
    torch.testing.assert_close(xy[:, 0], col)
    torch.testing.assert_close(xy[:, 1], row)
    torch.testing.assert_close(depth, d[:, 0] + DPC_CAMERA_DISTANCE)
    assert torch.allclose(torch.linalg.det(R), torch.tensor(1.0, dtype=torch.float64))


def test_blender_extrinsic_round_trip():
    q = quaternion_from_campos(
        campos_from_azimuth_elevation(
            torch.tensor([10.0, 250.0], dtype=torch.float64),
            torch.tensor([-15.0, 35.0], dtype=torch.float64),
        )
    )
    ext = blender_extrinsic_from_quaternion(q)
    ours = camera_from_blender(ext)
    torch.testing.assert_close(ours[:, :3, :3], quaternion_to_rotation_matrix(q))
    torch.testing.assert_close(
        ours[:, :3, 3], torch.tensor([[2.0, 0.0, 0.0]] * 2, dtype=torch.float64)
    )
    assert torch.equal(ours[:, 3], torch.tensor([[0.0, 0.0, 0.0, 1.0]] * 2, dtype=torch.float64))


def test_look_at_and_projection_exact():
    eye = torch.tensor([3.0, 2.0, 0.0], dtype=torch.float64)
    target = torch.tensor([0.0, 2.0, 0.0], dtype=torch.float64)
    R, t = look_at(eye, target, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64))
    assert torch.allclose(torch.linalg.det(R), torch.tensor(1.0, dtype=torch.float64))
    K = intrinsic_matrix(100.0, 100.0, 320.0, 180.0)
    P = projection_matrix(K, R, t)
    pts = torch.tensor([[0.0, 2.0, 0.0], [0.0, 3.0, 0.0], [0.0, 2.0, 1.0]], dtype=torch.float64)
    xy, depth = project_points(P, pts)
    torch.testing.assert_close(depth, torch.full((3,), 3.0, dtype=torch.float64))
    # The target lands on the principal point, world up is image up (smaller y), and looking
    # down -x the camera's right is forward × up = (0, 0, -1), so world +z appears on the left.
    torch.testing.assert_close(xy[0], torch.tensor([320.0, 180.0], dtype=torch.float64))
    torch.testing.assert_close(
        xy[1], torch.tensor([320.0, 180.0 - 100.0 / 3], dtype=torch.float64)
    )
    torch.testing.assert_close(
        xy[2], torch.tensor([320.0 - 100.0 / 3, 180.0], dtype=torch.float64)
    )


@pytest.mark.parametrize("size", [(128, 128), (360, 640)])
def test_principal_point_is_the_image_centre(size):
    h, w = size
    q = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    K, R, t = dpc_pinhole(q, h, w)
    xy, _ = project_points(projection_matrix(K, R, t), torch.zeros(1, 3, dtype=torch.float64))
    torch.testing.assert_close(xy[0], torch.tensor([w / 2, h / 2], dtype=torch.float64))
