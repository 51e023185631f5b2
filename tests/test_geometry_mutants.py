"""Camera and quaternion helpers on general inputs, found by `make mutation`: batched look-at,
the Blender matrix permutation on a random matrix, clamps hit by rounding, axis-angle of a
non-trivial rotation."""

from __future__ import annotations

import math

import pytest
import torch

from occaist.geometry.camera import (
    blender_extrinsic_from_quaternion,
    camera_from_blender,
    campos_from_azimuth_elevation,
    look_at,
    ypr_from_campos,
)
from occaist.geometry.quaternion import quaternion_to_axis_angle, quaternion_to_rotation_matrix


def _unit_quaternions(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(
        torch.randn(*shape, 4, generator=g, dtype=torch.float64), dim=-1
    )


def test_look_at_batched_gives_rotations_that_put_each_target_ahead() -> None:
    eye = torch.tensor([[3.0, 1.0, 2.0], [-0.5, 4.0, -1.0]], dtype=torch.float64)
    target = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # not perpendicular to the views
    R, t = look_at(eye, target, up)
    assert R.shape == (2, 3, 3) and t.shape == (2, 3)
    eye3 = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye3)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(2, dtype=torch.float64))
    ahead = (R @ target[..., None])[..., 0] + t
    distance = (target - eye).norm(dim=-1)
    torch.testing.assert_close(ahead, torch.stack([0 * distance, 0 * distance, distance], -1))
    # image "down" points against world up (camera upright)
    assert ((R[:, 1] * up).sum(-1) < 0).all()


def test_camera_from_blender_permutes_a_general_matrix() -> None:
    """Upstream's permutation as matrix products: rows reversed, columns 1 and 2 swapped,
    signs a_i·b_j with a = (−1, 1, −1), b = (1, −1, −1); translation rows reversed."""
    e = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    J = torch.eye(3, dtype=torch.float64).flip(0)
    swap = torch.eye(3, dtype=torch.float64)[[0, 2, 1]]
    a = torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64))
    b = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    ours = camera_from_blender(e)
    torch.testing.assert_close(ours[:, :3, :3], a @ J @ e[:, :3, :3] @ swap @ b)
    torch.testing.assert_close(ours[:, :3, 3], (J @ e[:, :3, 3, None])[..., 0])
    torch.testing.assert_close(ours[:, 3, :3], torch.zeros(2, 3, dtype=torch.float64))
    torch.testing.assert_close(ours[:, 3, 3], e[:, 3, 3])


def test_blender_extrinsic_of_any_quaternion_maps_back_to_r_and_the_distance() -> None:
    q = _unit_quaternions(3, 2, seed=2)  # two batch dimensions
    ext = blender_extrinsic_from_quaternion(q, camera_distance=1.5)
    assert ext.shape == (3, 2, 4, 4)
    ours = camera_from_blender(ext)
    torch.testing.assert_close(ours[..., :3, :3], quaternion_to_rotation_matrix(q))
    translation = torch.tensor([1.5, 0.0, 0.0], dtype=torch.float64).expand(3, 2, 3)
    torch.testing.assert_close(ours[..., :3, 3], translation)
    last = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64).expand(3, 2, 4)
    torch.testing.assert_close(ours[..., 3, :], last)


def test_campos_from_azimuth_elevation_off_the_x_axis_in_float64() -> None:
    azimuth = torch.tensor([60.0, 135.0], dtype=torch.float64)
    elevation = torch.tensor([20.0, -35.0])  # float32, taken in the azimuth's float64
    pos = campos_from_azimuth_elevation(azimuth, elevation, distance=2.0)
    a, e = torch.deg2rad(azimuth), torch.deg2rad(elevation.double())
    expected = 2 * torch.stack((e.cos() * a.cos(), e.cos() * a.sin(), e.sin()), -1)
    assert pos.dtype == torch.float64
    torch.testing.assert_close(pos, expected, rtol=1e-14, atol=1e-14)


def test_ypr_on_the_xz_plane_where_rounding_leaves_the_acos_domain() -> None:
    """For these positions c_x / √(c_x² + c_y²) rounds to ±(1 + 2⁻⁵²): clamped, not NaN."""
    pos = torch.tensor(
        [
            [0.8829540014266968, 0.0, -0.84220951795578],
            [-0.8829540014266968, 0.0, -0.84220951795578],
        ],
        dtype=torch.float64,
    )
    yaw, pitch, roll = ypr_from_campos(pos)
    # c_y = 0 is not "c_y > 0": x > 0 gives yaw 0 + π, x < 0 gives π + π
    torch.testing.assert_close(yaw, torch.tensor([math.pi, 2 * math.pi], dtype=torch.float64))
    expected_pitch = math.asin(
        -0.84220951795578 / math.hypot(0.8829540014266968, 0.84220951795578)
    )
    torch.testing.assert_close(pitch, torch.full((2,), expected_pitch, dtype=torch.float64))
    assert roll.tolist() == [0.0, 0.0]


def test_axis_angle_of_a_60_degree_turn() -> None:
    axis = torch.tensor([2.0, -1.0, 2.0], dtype=torch.float64) / 3.0
    half = math.radians(60.0) / 2
    q = torch.cat((torch.tensor([math.cos(half)], dtype=torch.float64), math.sin(half) * axis))
    got_axis, angle = quaternion_to_axis_angle(q)
    torch.testing.assert_close(got_axis, axis)
    assert angle.item() == pytest.approx(math.radians(60.0))
    got_axis, angle = quaternion_to_axis_angle(-q)  # the same rotation
    torch.testing.assert_close(got_axis, axis)
    assert angle.item() == pytest.approx(math.radians(60.0))


def test_projection_with_a_batch_of_cameras_equals_per_camera() -> None:
    from occaist.geometry.camera import intrinsic_matrix, project_points, projection_matrix

    K = intrinsic_matrix(100.0, 90.0, 32.0, 24.0).expand(2, 3, 3)
    R = quaternion_to_rotation_matrix(_unit_quaternions(2, seed=7))
    t = torch.tensor([[0.1, -0.2, 4.0], [0.3, 0.0, 5.0]], dtype=torch.float64)
    P = projection_matrix(K, R, t)
    assert P.shape == (2, 3, 4)
    points = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    xy, z = project_points(P, points)
    for b in range(2):
        xy_b, z_b = project_points(projection_matrix(K[b], R[b], t[b]), points[b])
        torch.testing.assert_close(xy[b], xy_b)
        torch.testing.assert_close(z[b], z_b)
        torch.testing.assert_close(z_b, (points[b] @ R[b].T + t[b])[:, 2])
