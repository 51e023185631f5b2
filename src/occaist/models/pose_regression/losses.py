"""The seed's losses: ``L_total = λ_b L_b + λ_q L_q + λ_t L_t + λ_PL L_PL + λ_reg L_reg``.

- ``L_b = ‖b̃ − b‖`` (:func:`box_loss`, box in units of the image side);
- ``L_t = ‖t̃ − t‖`` (:func:`translation_loss`, divided by the object's diameter so that objects of
  any size weigh the same);
- ``L_q`` is the seed's rotation loss ``L_r = (1/P) Σ_{x∈M} ‖R x − R̃ x‖`` (:func:`rotation_loss`,
  point matching on the model's points, divided by the diameter);
- ``L_PL`` the projection loss ``1 − IoU`` of the silhouettes of the model's point cloud under the
  predicted and the true pose (:func:`projection_loss`);
- ``L_reg = Σ ‖W‖²`` over the weights (:func:`weight_regularizer`).

Soft rasteriser of the projection loss (the seed used a CUDA op with hand-written gradients): a
2D Gaussian splat in torch. Every model point is projected with the pinhole camera ``K`` and
drawn as an isotropic Gaussian of ``sigma`` grid pixels on a ``G x G`` grid covering the image;
a pixel's occupancy is ``1 − exp(−Σ_n w_n)`` with ``w_n`` the n-th Gaussian there (a soft union:
about 0.63 under one lone point, saturating to 1 where points are dense). Because each Gaussian
is separable, ``Σ_n w_n`` over the whole grid is one batched matrix product ``W_yᵀ W_x``
(``(G, P) @ (P, G)``), about 100 times faster on a CPU than the product form ``1 − Π_n (1 − w_n)``,
which needs every (point, pixel) pair in memory. Chosen over the project's DPC renderer
(``occaist.geometry.point_renderer``) because that one splats into a 3D voxel grid in DPC's
orthographic-style camera convention, with a cost cubic in the grid side, whereas the seed's loss
needs only the image-plane projection under the data's pinhole ``K``: the 2D splat is exact for
that projection and differentiable everywhere through the Gaussians.

IoU of soft silhouettes ``a, b``: ``Σ min(a, b) / Σ max(a, b)`` (the Ruzicka similarity), so
that the loss is exactly 0 when the two poses give the same silhouette, whatever the softness,
and positive otherwise; its gradient flows through ``min``/``max`` into both silhouettes'
points. Only the predicted silhouette gets gradients (the true one is a target). A pose with the
same silhouette costs nothing, which is what lets a symmetric object's network pick any of its
equivalent poses.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "box_loss",
    "decode_translation",
    "projection_loss",
    "rotation_loss",
    "soft_silhouette",
    "translation_loss",
    "weight_regularizer",
]

_EPS = 1e-6


def decode_translation(
    centre: Tensor, log_depth: Tensor, K: Tensor, diameter: Tensor, image_size: int
) -> Tensor:
    """``t = z·K⁻¹(u, v, 1)`` (B, 3) from the network's ``centre`` (B, 2) (offset from the
    image centre in units of the side ``S``) and ``log_depth`` (B,) (``z = diameter·exp``)."""
    uv = (centre + 0.5) * image_size - 0.5  # pixel centres at integer coordinates
    z = diameter * torch.exp(log_depth)
    ray = torch.linalg.solve(K, torch.cat((uv, torch.ones_like(uv[:, :1])), dim=-1)[..., None])
    return z[:, None] * ray[..., 0] / ray[:, 2]


def box_loss(box_pred: Tensor, box_gt: Tensor) -> Tensor:
    """``mean_B ‖b̃ − b‖`` for boxes (B, 4) in the same units."""
    return (box_pred - box_gt).norm(dim=-1).mean()


def translation_loss(t_pred: Tensor, t_gt: Tensor, diameter: Tensor) -> Tensor:
    """``mean_B ‖t̃ − t‖ / diameter``."""
    return ((t_pred - t_gt).norm(dim=-1) / diameter).mean()


def rotation_loss(R_pred: Tensor, R_gt: Tensor, points: Tensor, diameter: Tensor) -> Tensor:
    """The seed's ``L_r = (1/P) Σ_x ‖R x − R̃ x‖``, per sample divided by the diameter, mean over B.

    ``R`` (B, 3, 3), ``points`` (B, P, 3) or (P, 3), ``diameter`` (B,).
    """
    diff = points @ (R_pred - R_gt).transpose(-1, -2)  # (B, P, 3)
    return (diff.norm(dim=-1).mean(dim=-1) / diameter).mean()


def soft_silhouette(
    points: Tensor, R: Tensor, t: Tensor, K: Tensor, image_size: int, grid: int, sigma: float
) -> Tensor:
    """Soft silhouettes (B, G, G) in [0, 1] of model ``points`` (B, P, 3) posed by ``R``, ``t``
    and projected by ``K`` (B, 3, 3) into an ``image_size`` image, splatted on a ``grid``² grid
    with Gaussians of ``sigma`` grid pixels (points behind the camera are dropped)."""
    cam = points @ R.transpose(-1, -2) + t[:, None]  # (B, P, 3)
    z = cam[..., 2]
    proj = cam @ K.transpose(-1, -2)
    uv = proj[..., :2] / z.clamp_min(_EPS)[..., None]
    scale = grid / image_size
    uv = (uv + 0.5) * scale - 0.5  # image pixels to grid pixels (centres at integers)
    centres = torch.arange(grid, device=points.device, dtype=points.dtype)
    dx2 = (uv[..., 0, None] - centres) ** 2  # (B, P, G)
    dy2 = (uv[..., 1, None] - centres) ** 2
    inv = -0.5 / sigma**2
    valid = (z > _EPS).to(points.dtype)[..., None]  # (B, P, 1)
    wx = torch.exp(dx2 * inv) * valid  # (B, P, G): the Gaussian is separable in x and y
    wy = torch.exp(dy2 * inv)
    density = wy.transpose(1, 2) @ wx  # (B, G, G) = Σ_n wy_n(row) · wx_n(col)
    return 1.0 - torch.exp(-density)


def soft_iou(a: Tensor, b: Tensor) -> Tensor:
    """``Σ min(a, b) / Σ max(a, b)`` per silhouette (B, G, G) -> (B,) (1 for equal ones)."""
    inter = torch.minimum(a, b).flatten(1).sum(-1)
    union = torch.maximum(a, b).flatten(1).sum(-1)
    return inter / union.clamp_min(_EPS)


def projection_loss(
    points: Tensor,
    R_pred: Tensor,
    t_pred: Tensor,
    R_gt: Tensor,
    t_gt: Tensor,
    K: Tensor,
    image_size: int,
    grid: int = 32,
    sigma: float = 1.0,
) -> Tensor:
    """The seed's projection loss ``mean_B (1 − IoU)`` of the predicted and true silhouettes."""
    pred = soft_silhouette(points, R_pred, t_pred, K, image_size, grid, sigma)
    with torch.no_grad():
        true = soft_silhouette(points, R_gt, t_gt, K, image_size, grid, sigma)
    return (1.0 - soft_iou(pred, true)).mean()


def weight_regularizer(module: nn.Module) -> Tensor:
    """``Σ ‖W‖²`` over convolution and linear weights (not biases or normalisation scales)."""
    terms = [
        m.weight.pow(2).sum() for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    return torch.stack(terms).sum()
