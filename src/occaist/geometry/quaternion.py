"""Unit quaternions in torch, in the convention of DPC (``dpc/util/quaternion.py``).

Conventions (stated once, used everywhere in occaist):

- A quaternion is a tensor of shape ``(..., 4)`` ordered **(w, x, y, z)**, w the scalar part.
- Products are Hamilton products, ``quaternion_multiply(a, b) = a ⊗ b``.
- A quaternion q acts on a point p as ``p' = q ⊗ (0, p) ⊗ q*`` (an active rotation, right-hand
  rule); ``quaternion_to_rotation_matrix(q) @ p`` gives the same p'. Rotations are normalised
  first, as upstream ``quaternion_rotate`` does, so a non-unit q rotates like ``q / |q|``.
- q and −q are the same rotation; functions returning a quaternion choose ``w >= 0``.

Every function broadcasts over leading dimensions and is differentiable where the maths is.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "quaternion_conjugate",
    "quaternion_from_axis_angle",
    "quaternion_multiply",
    "quaternion_normalize",
    "quaternion_rotate",
    "quaternion_to_axis_angle",
    "quaternion_to_rotation_matrix",
    "rotation_matrix_to_quaternion",
]


def quaternion_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a ⊗ b`` of quaternions ``(..., 4)`` (broadcast), returns ``(..., 4)``.

    >>> i = torch.tensor([0.0, 1.0, 0.0, 0.0])
    >>> j = torch.tensor([0.0, 0.0, 1.0, 0.0])
    >>> quaternion_multiply(i, j)  # i ⊗ j = k
    tensor([0., 0., 0., 1.])
    """
    w1, x1, y1, z1 = a.unbind(-1)
    w2, x2, y2, z2 = b.unbind(-1)
    return torch.stack(
        (
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 + y1 * w2 + z1 * x2 - x1 * z2,
            w1 * z2 + z1 * w2 + x1 * y2 - y1 * x2,
        ),
        dim=-1,
    )


def quaternion_conjugate(q: Tensor) -> Tensor:
    """Conjugate ``q* = (w, −x, −y, −z)`` of ``(..., 4)``; the inverse rotation for unit q.

    >>> quaternion_conjugate(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    tensor([ 1., -2., -3., -4.])
    """
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def quaternion_normalize(q: Tensor, eps: float = 1e-12) -> Tensor:
    """``q / max(|q|, eps)`` for ``(..., 4)``.

    >>> quaternion_normalize(torch.tensor([2.0, 0.0, 0.0, 0.0]))
    tensor([1., 0., 0., 0.])
    """
    return q / q.norm(dim=-1, keepdim=True).clamp_min(eps)


def quaternion_rotate(points: Tensor, q: Tensor, inverse: bool = False) -> Tensor:
    """Rotate points ``(..., N, 3)`` by quaternions ``(..., 4)``: ``q ⊗ (0, p) ⊗ q*``.

    ``q`` broadcasts against the leading dimensions of ``points`` (one rotation per cloud).
    ``inverse=True`` applies ``q* ⊗ (0, p) ⊗ q`` (as upstream ``quaternion_rotate(..., inverse)``).
    q is normalised first. Returns ``(..., N, 3)``.

    >>> q = quaternion_from_axis_angle(torch.tensor([0.0, 0.0, 1.0]), torch.tensor(torch.pi / 2))
    >>> quaternion_rotate(torch.tensor([[1.0, 0.0, 0.0]]), q).round(decimals=6).abs()
    tensor([[0., 1., 0.]])
    """
    q = quaternion_normalize(q)
    if inverse:
        q = quaternion_conjugate(q)
    w = q[..., None, :1]  # (..., 1, 1)
    u = q[..., None, 1:]  # (..., 1, 3), broadcast over the N points
    # p' = p + 2w (u × p) + 2 u × (u × p): the expanded form of q ⊗ (0, p) ⊗ q* for |q| = 1.
    shape = torch.broadcast_shapes(u.shape, points.shape)
    u, points = u.expand(shape), points.expand(shape)
    uxp = torch.linalg.cross(u, points)
    return points + 2.0 * w * uxp + 2.0 * torch.linalg.cross(u, uxp)


def quaternion_to_rotation_matrix(q: Tensor) -> Tensor:
    """Rotation matrices ``(..., 3, 3)`` with ``R @ p == quaternion_rotate(p, q)``.

    Written out rather than kornia's ``quaternion_to_rotation_matrix``: equal results (1e-15),
    and kornia's was no faster here (0.8-0.96x of ours over runs, ``scripts/bench_geometry.py``).

    >>> q = torch.tensor([0.0, 1.0, 0.0, 0.0])  # 180 degrees about x
    >>> quaternion_to_rotation_matrix(q)
    tensor([[ 1.,  0.,  0.],
            [ 0., -1.,  0.],
            [ 0.,  0., -1.]])
    """
    w, x, y, z = quaternion_normalize(q).unbind(-1)
    rows = (
        (1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)),
        (2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)),
        (2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)),
    )
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def rotation_matrix_to_quaternion(matrix: Tensor) -> Tensor:
    """Unit quaternions ``(..., 4)`` with ``w >= 0`` from rotation matrices ``(..., 3, 3)``.

    Shepperd's method: the largest of ``(w², x², y², z²)`` is taken from the diagonal and the
    others from off-diagonal sums, so the result is accurate for every rotation (unlike the
    ``w = sqrt(1 + trace) / 2`` of upstream ``from_rotation_matrix``, which fails near 180°).
    Kept over kornia's ``rotation_matrix_to_quaternion``: equal results, but kornia's was 1.4x
    slower here (``scripts/bench_geometry.py``).

    >>> rotation_matrix_to_quaternion(torch.eye(3))
    tensor([1., 0., 0., 0.])
    """
    m = matrix
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # Four candidate (unnormalised) quaternions, each accurate when its leading entry is large.
    cand = torch.stack(
        (
            torch.stack((1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01), -1),
            torch.stack((m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20), -1),
            torch.stack((m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21), -1),
            torch.stack((m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22), -1),
        ),
        dim=-2,
    )  # (..., 4, 4)
    diag = torch.stack((m00 + m11 + m22, m00, m11, m22), -1)  # picks the largest component
    best = diag.argmax(dim=-1, keepdim=True)[..., None].expand(*diag.shape[:-1], 1, 4)
    q = quaternion_normalize(torch.gather(cand, -2, best).squeeze(-2))
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_from_axis_angle(axis: Tensor, angle: Tensor) -> Tensor:
    """Quaternion ``(cos(θ/2), sin(θ/2)·n)`` ``(..., 4)`` of a rotation by θ about an axis.

    Axes ``(..., 3)`` are normalised here; angles ``(...)`` in radians, right-hand rule.

    >>> quaternion_from_axis_angle(torch.tensor([0.0, 2.0, 0.0]), torch.tensor(torch.pi))
    tensor([-4.3711e-08,  0.0000e+00,  1.0000e+00,  0.0000e+00])
    """
    n = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    half = torch.as_tensor(angle, dtype=n.dtype, device=n.device)[..., None] / 2
    return torch.cat((torch.cos(half), torch.sin(half) * n), dim=-1)


def quaternion_to_axis_angle(q: Tensor) -> tuple[Tensor, Tensor]:
    """Axis ``(..., 3)`` (unit) and angle ``(...)`` in ``[0, π]`` of the rotation q ``(..., 4)``.

    The identity gives the axis ``(1, 0, 0)`` and angle 0.

    >>> axis, angle = quaternion_to_axis_angle(torch.tensor([0.0, 0.0, 0.0, 1.0]))
    >>> axis, round(float(angle), 6)
    (tensor([0., 0., 1.]), 3.141593)
    """
    q = quaternion_normalize(q)
    q = torch.where(q[..., :1] < 0, -q, q)
    sin_half = q[..., 1:].norm(dim=-1)
    angle = 2 * torch.atan2(sin_half, q[..., 0])
    default = torch.zeros_like(q[..., 1:])
    default[..., 0] = 1.0
    axis = torch.where(
        sin_half[..., None] > 1e-12,
        q[..., 1:] / sin_half.clamp_min(1e-12)[..., None],
        default,
    )
    return axis, angle
