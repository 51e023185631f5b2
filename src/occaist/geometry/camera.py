"""Cameras: the DPC camera (quaternion pose, fixed distance and focal length) and a pinhole K[R|t].

**DPC camera** (``dpc/util/point_cloud.py:pc_perspective_transform``, ``dpc/util/camera.py``).
An object-frame point p (ShapeNet frame, y up, inside the unit cube) is rotated by the pose
quaternion, ``p' = q ⊗ (0, p) ⊗ q*``, and projected with camera distance ``d = 2.0`` and focal
length ``f = 1.875`` (image half-width 0.5, field of view ``2·atan(0.5/f) ≈ 29.9°``)::

    δ = p'_0            (depth, the FIRST rotated coordinate; the camera sits at δ = −d)
    v = f·p'_1 / (p'_0 + d)      (up)
    u = f·p'_2 / (p'_0 + d)      (right)

``dpc_project`` returns ``(δ, v, u)`` in this order, as upstream. Image pixels (continuous
coordinates, pixel ``(r, c)`` covering ``[r, r+1) × [c, c+1)``, centres at ``+0.5``)::

    row = (0.5 − v)·H        col = (u + 0.5)·W

which is where upstream's vertical flip (``tf.reverse`` on H) puts a point.

**Ground-truth pose from a camera position** (``quaternion_from_campos``): the DPC renders store
the Blender camera position ``pos`` (z up); upstream turns it into yaw/pitch (roll 0) and the
quaternion ``q = q_x(roll) ⊗ q_z(pitch) ⊗ q_y(yaw)`` applied in the y-up object frame. We use
``campos_from_azimuth_elevation`` to place cameras::

    pos = distance · (cos e · cos a, cos e · sin a, sin e)

With the occaist car frame (x forward, y up, z to the car's right), azimuth 0 looks at the car's
front, azimuth 90° at its left side (−z), and positive elevation looks from above.

**``camera_{i}.mat``** holds ``pos`` (3,) and ``extrinsic`` (4×4). Upstream converts the
extrinsic with ``camera_from_blender``; we store the matrix whose ``camera_from_blender`` image
is exactly ``[[R(q), (d, 0, 0)ᵀ], [0, 1]]``, i.e. the DPC camera above (the matrix path of
``pc_perspective_transform``), so both pose paths agree (``blender_extrinsic_from_quaternion``).

**Pinhole camera** (Stanford Cars and CarFusion worlds), OpenCV axes: camera x right, y down,
z forward (depth). ``x_cam = R·X + t``; pixels ``(x, y) = (K·x_cam)[:2] / z`` in the same
continuous pixel convention as above (x = column, y = row, centre of the image at ``(W/2, H/2)``).
The 3×4 projection is ``P = K[R | t]``. The DPC camera is this pinhole with
``K = [[f·W, 0, W/2], [0, f·H, H/2], [0, 0, 1]]``, ``R = C·R(q)``, ``t = (0, 0, d)`` where
``C`` maps DPC axes (depth, up, right) to OpenCV axes (right, down, depth); see ``dpc_pinhole``.

All functions are torch, broadcast over leading dimensions, and keep the input dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from occaist.geometry.quaternion import (
    quaternion_from_axis_angle,
    quaternion_multiply,
    quaternion_rotate,
    quaternion_to_rotation_matrix,
)

__all__ = [
    "DPC_AXES_TO_OPENCV",
    "DPC_CAMERA_DISTANCE",
    "DPC_FOCAL_LENGTH",
    "blender_extrinsic_from_quaternion",
    "camera_from_blender",
    "campos_from_azimuth_elevation",
    "dpc_pinhole",
    "dpc_project",
    "dpc_to_pixels",
    "intrinsic_matrix",
    "look_at",
    "project_points",
    "projection_matrix",
    "quaternion_from_campos",
    "ypr_from_campos",
]

DPC_CAMERA_DISTANCE = 2.0
"""``camera_distance`` of the DPC configs: the camera sits at depth coordinate ``−d``."""
DPC_FOCAL_LENGTH = 1.875
"""``focal_length`` of the DPC configs, in units of the image width."""
DPC_AXES_TO_OPENCV = ((0.0, 0.0, 1.0), (0.0, -1.0, 0.0), (1.0, 0.0, 0.0))
"""``C``: (depth, up, right) DPC camera axes -> (right, down, depth) OpenCV axes (C = Cᵀ = C⁻¹)."""


def campos_from_azimuth_elevation(
    azimuth_deg: Tensor, elevation_deg: Tensor, distance: float = DPC_CAMERA_DISTANCE
) -> Tensor:
    """Blender (z-up) camera position ``(..., 3)`` on a sphere of radius ``distance``.

    >>> campos_from_azimuth_elevation(torch.tensor(0.0), torch.tensor(30.0))
    tensor([1.7321, 0.0000, 1.0000])
    """
    a = torch.as_tensor(azimuth_deg)
    a = torch.deg2rad(a if a.is_floating_point() else a.to(torch.get_default_dtype()))
    e = torch.deg2rad(torch.as_tensor(elevation_deg, dtype=a.dtype))
    return distance * torch.stack(
        (torch.cos(e) * torch.cos(a), torch.cos(e) * torch.sin(a), torch.sin(e)), dim=-1
    )


def ypr_from_campos(pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Yaw, pitch, roll (radians) of a Blender camera position ``(..., 3)`` as upstream.

    ``yaw = acos(c_x/√(c_x²+c_y²))``, mirrored to ``2π − yaw`` if ``c_y > 0``, then ``+π``;
    ``pitch = asin(c_z/|c|)``; ``roll = 0`` (``util/euler.py:ypr_from_campos`` and
    ``util/camera.py:ypr_from_campos_blender``).
    """
    c = pos / pos.norm(dim=-1, keepdim=True)
    t = torch.sqrt(c[..., 0] ** 2 + c[..., 1] ** 2)
    yaw = torch.acos((c[..., 0] / t).clamp(-1.0, 1.0))
    yaw = torch.where(c[..., 1] / t > 0, 2 * math.pi - yaw, yaw) + math.pi
    pitch = torch.asin(c[..., 2].clamp(-1.0, 1.0))
    return yaw, pitch, torch.zeros_like(yaw)


def quaternion_from_campos(pos: Tensor) -> Tensor:
    """The DPC ground-truth pose ``(..., 4)`` of a camera at Blender position ``pos`` ``(..., 3)``.

    ``q = q_x(roll) ⊗ q_z(pitch) ⊗ q_y(yaw)`` exactly as upstream ``quaternion_from_campos``
    (not sign-canonicalised: upstream's w may be negative). Two degrees of freedom.

    >>> q = quaternion_from_campos(torch.tensor([2.0, 0.0, 0.0]))  # azimuth 0, elevation 0
    >>> q.round(decimals=6).abs()  # a half turn about y: the car's front faces the camera
    tensor([0., 0., 1., 0.])
    """
    yaw, pitch, roll = ypr_from_campos(pos)
    dtype = pos.dtype
    ex, ey, ez = (torch.eye(3, dtype=dtype, device=pos.device)[i] for i in range(3))
    q_yaw = quaternion_from_axis_angle(ey, yaw)
    q_pitch = quaternion_from_axis_angle(ez, pitch)
    q_roll = quaternion_from_axis_angle(ex, roll)
    return quaternion_multiply(q_roll, quaternion_multiply(q_pitch, q_yaw))


def dpc_project(
    points: Tensor,
    q: Tensor,
    focal_length: float = DPC_FOCAL_LENGTH,
    camera_distance: float = DPC_CAMERA_DISTANCE,
) -> Tensor:
    """Rotate points ``(..., N, 3)`` by ``q`` ``(..., 4)``, project: ``(..., N, 3)`` = (δ, v, u).

    Step 1 of the DPC renderer: ``δ = p'_0``, ``v = f·p'_1/(p'_0+d)``, ``u = f·p'_2/(p'_0+d)``.

    >>> dpc_project(torch.tensor([[0.0, 0.5, 0.0]]), torch.tensor([1.0, 0.0, 0.0, 0.0]))
    tensor([[0.0000, 0.4688, 0.0000]])
    """
    p = quaternion_rotate(points, q)
    z = p[..., 0] + camera_distance
    return torch.stack((p[..., 0], focal_length * p[..., 1] / z, focal_length * p[..., 2] / z), -1)


def dpc_to_pixels(v: Tensor, u: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Continuous pixel coordinates ``(row, col) = ((0.5 − v)·H, (u + 0.5)·W)``.

    >>> dpc_to_pixels(torch.tensor(0.0), torch.tensor(0.0), 128, 128)
    (tensor(64.), tensor(64.))
    """
    return (0.5 - v) * height, (u + 0.5) * width


def camera_from_blender(extrinsic: Tensor) -> Tensor:
    """Upstream ``util/camera.py:camera_from_blender``: permute/negate a 4×4 ``(..., 4, 4)``."""
    e = extrinsic
    our = torch.zeros_like(e)
    our[..., 0, 0], our[..., 0, 1], our[..., 0, 2] = -e[..., 2, 0], e[..., 2, 2], e[..., 2, 1]
    our[..., 1, 0], our[..., 1, 1], our[..., 1, 2] = e[..., 1, 0], -e[..., 1, 2], -e[..., 1, 1]
    our[..., 2, 0], our[..., 2, 1], our[..., 2, 2] = -e[..., 0, 0], e[..., 0, 2], e[..., 0, 1]
    our[..., 0, 3], our[..., 1, 3], our[..., 2, 3] = e[..., 2, 3], e[..., 1, 3], e[..., 0, 3]
    our[..., 3, 3] = e[..., 3, 3]
    return our


def blender_extrinsic_from_quaternion(
    q: Tensor, camera_distance: float = DPC_CAMERA_DISTANCE
) -> Tensor:
    """The ``extrinsic`` ``(..., 4, 4)`` written to ``camera_{i}.mat`` for pose ``q`` ``(..., 4)``.

    It is the inverse of ``camera_from_blender`` applied to ``M = [[R(q), (d, 0, 0)ᵀ], [0, 1]]``,
    so ``camera_from_blender(extrinsic) == M``: DPC's matrix pose path sees the same camera as its
    quaternion path.
    """
    r = quaternion_to_rotation_matrix(q)
    e = torch.zeros(*q.shape[:-1], 4, 4, dtype=q.dtype, device=q.device)
    e[..., 2, 0], e[..., 2, 2], e[..., 2, 1] = -r[..., 0, 0], r[..., 0, 1], r[..., 0, 2]
    e[..., 1, 0], e[..., 1, 2], e[..., 1, 1] = r[..., 1, 0], -r[..., 1, 1], -r[..., 1, 2]
    e[..., 0, 0], e[..., 0, 2], e[..., 0, 1] = -r[..., 2, 0], r[..., 2, 1], r[..., 2, 2]
    e[..., 2, 3] = camera_distance
    e[..., 3, 3] = 1.0
    return e


def intrinsic_matrix(fx: float, fy: float, cx: float, cy: float, dtype=torch.float64) -> Tensor:
    """``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (pixels, continuous convention above)."""
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype)


def look_at(eye: Tensor, target: Tensor, up: Tensor) -> tuple[Tensor, Tensor]:
    """World-to-camera ``R (..., 3, 3)``, ``t (..., 3)`` of a camera at ``eye`` facing ``target``.

    OpenCV axes: rows of R are right = forward × up, down = forward × right, forward.
    ``up`` must not be parallel to the viewing direction.

    >>> up = torch.tensor([0.0, 1.0, 0.0])
    >>> R, t = look_at(torch.tensor([0.0, 0.0, 5.0]), torch.zeros(3), up)
    >>> (R @ torch.zeros(3) + t).tolist()  # the target lies straight ahead at depth 5
    [0.0, 0.0, 5.0]
    """
    forward = target - eye
    forward = forward / forward.norm(dim=-1, keepdim=True)
    right = torch.linalg.cross(forward, up.expand_as(forward))
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.linalg.cross(forward, right)
    rot = torch.stack((right, down, forward), dim=-2)
    return rot, -(rot @ eye[..., None])[..., 0]


def projection_matrix(K: Tensor, R: Tensor, t: Tensor) -> Tensor:
    """``P = K[R | t]``, shape ``(..., 3, 4)``."""
    return K @ torch.cat((R, t[..., None]), dim=-1)


def project_points(P: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """Project world points ``(..., N, 3)`` with ``P`` ``(..., 3, 4)``.

    Returns pixel coordinates ``(..., N, 2)`` as (x = column, y = row) and the homogeneous
    depth ``(..., N)`` (the camera-frame z when ``P = K[R|t]`` with K's last row ``(0, 0, 1)``).

    >>> K = intrinsic_matrix(100.0, 100.0, 32.0, 24.0)
    >>> t = torch.tensor([0.0, 0.0, 2.0], dtype=K.dtype)
    >>> P = projection_matrix(K, torch.eye(3, dtype=K.dtype), t)
    >>> xy, z = project_points(P, torch.tensor([[0.2, -0.1, 0.0]], dtype=torch.float64))
    >>> xy.tolist(), z.tolist()
    ([[42.0, 19.0]], [2.0])
    """
    h = points @ P[..., :, :3].transpose(-1, -2) + P[..., None, :, 3]
    return h[..., :2] / h[..., 2:3], h[..., 2]


def dpc_pinhole(q: Tensor, height: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """The DPC camera of pose ``q`` ``(4,)`` as a pinhole ``(K, R, t)`` for an H×W image.

    Projecting with ``projection_matrix(K, R, t)`` gives the same pixels as ``dpc_project`` then
    ``dpc_to_pixels``, and the camera-frame depth ``δ + d``.
    """
    dtype = q.dtype
    K = intrinsic_matrix(
        DPC_FOCAL_LENGTH * width, DPC_FOCAL_LENGTH * height, width / 2, height / 2, dtype=dtype
    )
    C = torch.tensor(DPC_AXES_TO_OPENCV, dtype=dtype)
    R = C @ quaternion_to_rotation_matrix(q)
    t = torch.tensor([0.0, 0.0, DPC_CAMERA_DISTANCE], dtype=dtype)
    return K, R, t
