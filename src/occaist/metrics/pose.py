"""Pose accuracy of predicted quaternions (DPC ``eval_camera_pose.py``).

The angular error between unit quaternions is ``θ = 2·acos(|⟨q̂, q_gt⟩|)`` in degrees, in
[0, 180]: the angle of ``q̄_gt ⊗ q̂`` with the q / −q ambiguity removed (upstream wraps
``|2·acos(Δ_w)|`` by −2π above π, which is the same number). ``acos`` is clamped against rounding
above 1. DPC reports the fraction of views with ``θ < 30°`` and the median error
``sort(θ)[n // 2]`` over all views of all models.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["PoseAccuracy", "median_upper", "quaternion_angle_deg"]


def quaternion_angle_deg(q_pred: Tensor, q_gt: Tensor) -> Tensor:
    """Sign-invariant rotation angle in degrees between quaternions ``(..., 4)`` (broadcast).

    Both are normalised first; computed in float64 (acos near 1 loses float32 precision).

    >>> quaternion_angle_deg(torch.tensor([1.0, 0, 0, 0]), torch.tensor([-1.0, 0, 0, 0]))
    tensor(0.)
    """
    a = q_pred.double()
    b = q_gt.double()
    a = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    b = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos_half = (a * b).sum(-1).abs().clamp(max=1.0)
    return (2.0 * torch.acos(cos_half) * (180.0 / math.pi)).to(q_pred.dtype)


def median_upper(values: Tensor) -> Tensor:
    """``sort(values)[n // 2]``, upstream's median (the upper one for even n)."""
    return values.sort().values[values.numel() // 2]


class PoseAccuracy(Metric):
    """Accuracy at ``threshold_deg`` and median angular error over all views seen.

    ``update(q_pred, q_gt)`` takes ``(..., 4)`` quaternions (any leading shape, flattened).
    Errors are "cat" states (gathered across DDP ranks), so the median is exact.
    ``compute()`` returns ``{"accuracy", "median_deg", "mean_deg"}``.
    """

    full_state_update = False

    def __init__(self, threshold_deg: float = 30.0) -> None:
        super().__init__()
        self.threshold_deg = threshold_deg
        self.add_state("errors", default=[], dist_reduce_fx="cat")

    def update(self, q_pred: Tensor, q_gt: Tensor) -> None:
        self.errors.append(quaternion_angle_deg(q_pred, q_gt).reshape(-1).float())

    def compute(self) -> dict[str, Tensor]:
        errors = dim_zero_cat(self.errors)
        return {
            "accuracy": (errors < self.threshold_deg).float().mean(),
            "median_deg": median_upper(errors),
            "mean_deg": errors.mean(),
        }
