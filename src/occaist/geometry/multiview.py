"""Multi-view geometry for the trifocal (paper) and triangulated-target occluded-keypoint losses.

Conventions (Hartley & Zisserman, *Multiple View Geometry*, ch. 15-16):

* cameras ``P`` are 3x4 projection matrices, ``x ~ P X`` with homogeneous image points
  ``x = (u, v, 1)`` in pixels (column ``u``, row ``v``);
* the trifocal tensor of three cameras ``(P1, P2, P3)`` is ``T`` of shape ``(3, 3, 3)`` indexed
  ``T[i, j, k]`` (``i``: view 1, ``j``: view 2, ``k``: view 3), with
  ``T[i, j, k] = (-1)^i det([~P1^i; P2^j; P3^k])`` (0-based ``i``), where ``~P1^i`` is ``P1`` with
  row ``i`` removed. For a 3D point seen as ``x1, x2, x3`` the point-point-point incidence holds:
  ``skew(x2) @ einsum('i,ijk->jk', x1, T) @ skew(x3) = 0`` (a 3x3 zero matrix).

Everything is batched over leading dimensions and differentiable (pure torch).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "homogeneous",
    "normalize_trifocal",
    "project",
    "skew",
    "triangulate",
    "trifocal_residual",
    "trifocal_tensor",
]


def homogeneous(x: Tensor) -> Tensor:
    """Append a 1 to the last axis: ``(..., n) -> (..., n + 1)``."""
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)


def skew(v: Tensor) -> Tensor:
    """Cross-product matrix ``[v]_x`` with ``[v]_x w = v x w``: ``(..., 3) -> (..., 3, 3)``."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    rows = [
        torch.stack([zero, -z, y], dim=-1),
        torch.stack([z, zero, -x], dim=-1),
        torch.stack([-y, x, zero], dim=-1),
    ]
    return torch.stack(rows, dim=-2)


def trifocal_tensor(P1: Tensor, P2: Tensor, P3: Tensor) -> Tensor:
    """Trifocal tensor ``T`` (``(..., 3, 3, 3)``, ``T[i, j, k]``) of three cameras ``(..., 3, 4)``.

    ``T[i, j, k] = (-1)^i det([P1 without row i; P2 row j; P3 row k])`` (H&Z eq. 17.12 with
    0-based indices): 27 determinants of 4x4 matrices, batched.

    Example:
        >>> import torch
        >>> P1 = torch.eye(3, 4, dtype=torch.float64)
        >>> T = trifocal_tensor(P1, P1.roll(1, dims=1), P1.roll(2, dims=1))
        >>> T.shape
        torch.Size([3, 3, 3])
    """
    batch = torch.broadcast_shapes(P1.shape[:-2], P2.shape[:-2], P3.shape[:-2])
    P1, P2, P3 = (P.expand(*batch, 3, 4) for P in (P1, P2, P3))
    keep = torch.tensor([[1, 2], [0, 2], [0, 1]], device=P1.device)  # rows kept of P1 per i
    P1_minus = P1[..., keep, :]  # (..., 3[i], 2, 4)
    P1_minus = P1_minus[..., :, None, None, :, :].expand(*batch, 3, 3, 3, 2, 4)
    rows2 = P2[..., None, :, None, None, :].expand(*batch, 3, 3, 3, 1, 4)
    rows3 = P3[..., None, None, :, None, :].expand(*batch, 3, 3, 3, 1, 4)
    det = torch.linalg.det(torch.cat([P1_minus, rows2, rows3], dim=-2))  # (..., 3, 3, 3)
    sign = torch.tensor([1.0, -1.0, 1.0], dtype=det.dtype, device=det.device)
    return det * sign[:, None, None]


def normalize_trifocal(T: Tensor, eps: float = 1e-12) -> Tensor:
    """Scale ``T`` (``(..., 3, 3, 3)``) to unit Frobenius norm (``T`` is defined up to scale)."""
    norm = T.flatten(-3).norm(dim=-1).clamp_min(eps)
    return T / norm[..., None, None, None]


def trifocal_residual(T: Tensor, x1: Tensor, x2: Tensor, x3: Tensor) -> Tensor:
    """Point-point-point incidence ``[x2]_x (sum_i x1^i T_i) [x3]_x``: ``(..., 3, 3)``.

    Args:
        T: ``(..., 3, 3, 3)`` trifocal tensor of the cameras of views 1, 2, 3.
        x1, x2, x3: matching image points, ``(..., 2)`` pixels or ``(..., 3)`` homogeneous.

    Returns:
        The 3x3 residual matrix; zero (up to rounding) for a true correspondence. The paper's
        trifocal loss (Occlusion-Net eq. 9) is its squared Frobenius norm with ``x1`` the
        predicted occluded keypoint and ``x2, x3`` the keypoint where it is visible.
    """
    x1, x2, x3 = (x if x.shape[-1] == 3 else homogeneous(x) for x in (x1, x2, x3))
    middle = torch.einsum("...i,...ijk->...jk", x1, T)
    return skew(x2) @ middle @ skew(x3)


def project(P: Tensor, X: Tensor) -> Tensor:
    """Pinhole projection of 3D points ``(..., 3)`` by cameras ``(..., 3, 4)``: ``(..., 2)``."""
    x = (P @ homogeneous(X)[..., None])[..., 0]
    return x[..., :2] / x[..., 2:]


def triangulate(Ps: Tensor, xs: Tensor, mask: Tensor | None = None) -> Tensor:
    """Linear (DLT) triangulation of one 3D point per batch element from ``V`` views.

    Each view contributes the rows ``u P^3 - P^1`` and ``v P^3 - P^2`` of ``A X = 0``; the
    solution is the right singular vector of the smallest singular value. Rows are normalised to
    unit length for conditioning.

    Args:
        Ps: ``(..., V, 3, 4)`` cameras.
        xs: ``(..., V, 2)`` observed pixels.
        mask: ``(..., V)`` bool, views to use (at least two per element for a defined result).

    Returns:
        ``(..., 3)`` Euclidean points.
    """
    u, v = xs[..., 0:1], xs[..., 1:2]
    rows = torch.stack([u * Ps[..., 2, :] - Ps[..., 0, :], v * Ps[..., 2, :] - Ps[..., 1, :]], -2)
    rows = rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # (..., V, 2, 4)
    if mask is not None:
        rows = rows * mask[..., None, None].to(rows.dtype)
    A = rows.flatten(-3, -2)  # (..., 2V, 4)
    _, _, Vh = torch.linalg.svd(A.transpose(-1, -2) @ A)
    Xh = Vh[..., -1, :]
    return Xh[..., :3] / Xh[..., 3:]
