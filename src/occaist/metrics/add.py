"""ADD and ADD-S: the average distance of the model's points under two poses (Hinterstoisser 2012).

Convention: a pose maps model points to the camera, ``x_cam = R·x + t`` (BOP's ``cam_R_m2c``,
``cam_t_m2c``). For model points ``M`` (N of them),

- ADD   ``e = (1/N) Σ_{x∈M} ‖(R̂x + t̂) − (Rx + t)‖``,
- ADD-S ``e = (1/N) Σ_{x₁∈M} min_{x₂∈M} ‖(Rx₁ + t) − (R̂x₂ + t̂)‖`` (for each true point, the
  nearest predicted one; the error of a symmetric object is then the same for every
  symmetric-equivalent pose).

A pose is correct when ``e < fraction · diameter`` (``fraction`` 0.1, the diameter being the
largest distance between two model points); :class:`ADD` / :class:`ADDS` report the fraction of
correct poses. ADD-S ≤ ADD always (the nearest point is never farther than the matching one).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["ADD", "ADDS", "add_error", "adds_error", "transform_points"]

_CHUNK = 1024  # true points per block of the ADD-S distance matrix (bounds memory to B·1024·N)


def transform_points(R: Tensor, t: Tensor, points: Tensor) -> Tensor:
    """``R·x + t`` for rotations ``(B, 3, 3)``, translations ``(B, 3)`` and points ``(N, 3)``
    shared by the batch or ``(B, N, 3)`` per sample; returns ``(B, N, 3)``."""
    return points @ R.transpose(-1, -2) + t[:, None, :]


def add_error(
    R_pred: Tensor, t_pred: Tensor, R_gt: Tensor, t_gt: Tensor, points: Tensor
) -> Tensor:
    """ADD of each sample, ``(B,)``, in the units of ``points`` and ``t``.

    >>> R, t, pts = torch.eye(3)[None], torch.zeros(1, 3), torch.rand(5, 3)
    >>> add_error(R, t + torch.tensor([[0.0, 0.0, 2.0]]), R, t, pts)
    tensor([2.])
    """
    pred = transform_points(R_pred, t_pred, points)
    gt = transform_points(R_gt, t_gt, points)
    return (pred - gt).norm(dim=-1).mean(dim=-1)


def adds_error(
    R_pred: Tensor, t_pred: Tensor, R_gt: Tensor, t_gt: Tensor, points: Tensor
) -> Tensor:
    """ADD-S of each sample, ``(B,)``: mean over true points of the nearest predicted point.

    Exact (no matrix-product shortcut for the distances), blocked over the true points.

    >>> R, t, pts = torch.eye(3)[None], torch.zeros(1, 3), torch.rand(5, 3)
    >>> adds_error(R, t, R, t, pts)
    tensor([0.])
    """
    pred = transform_points(R_pred, t_pred, points)
    gt = transform_points(R_gt, t_gt, points)
    nearest = [
        torch.cdist(block, pred, compute_mode="donot_use_mm_for_euclid_dist").amin(dim=-1)
        for block in gt.split(_CHUNK, dim=1)
    ]
    return torch.cat(nearest, dim=1).mean(dim=-1)


class ADD(Metric):
    """Fraction of poses with ADD below ``fraction`` of the object's diameter.

    ``update(R_pred, t_pred, R_gt, t_gt, points, diameter, labels=None)``: points ``(N, 3)`` or
    ``(B, N, 3)``, diameters ``(B,)`` (or a number), optional integer ``labels`` ``(B,)`` (object
    ids) for per-object accuracies. Errors are "cat" states gathered across DDP ranks.
    ``compute()`` returns ``accuracy``, ``mean_error`` (in units of the diameter) and
    ``obj_<id>`` (accuracy of each label seen, ids zero-padded to six digits as in BOP).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, fraction: float = 0.1) -> None:
        super().__init__()
        self.fraction = fraction
        self.add_state("relative", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    @staticmethod
    def error(
        R_pred: Tensor, t_pred: Tensor, R_gt: Tensor, t_gt: Tensor, points: Tensor
    ) -> Tensor:
        return add_error(R_pred, t_pred, R_gt, t_gt, points)

    def update(
        self,
        R_pred: Tensor,
        t_pred: Tensor,
        R_gt: Tensor,
        t_gt: Tensor,
        points: Tensor,
        diameter: Tensor | float,
        labels: Tensor | None = None,
    ) -> None:
        err = self.error(R_pred, t_pred, R_gt, t_gt, points)
        diameter = torch.as_tensor(diameter, dtype=err.dtype, device=err.device)
        self.relative.append((err / diameter).float().reshape(-1))
        if labels is None:
            labels = torch.zeros(len(err), dtype=torch.long, device=err.device)
        self.labels.append(labels.reshape(-1).long())

    def values(self) -> tuple[Tensor, Tensor]:
        """Every sample's error in diameters and its label (after ``compute()`` on all ranks)."""
        if not self.relative:
            return torch.zeros(0), torch.zeros(0, dtype=torch.long)
        return dim_zero_cat(self.relative), dim_zero_cat(self.labels)

    def compute(self) -> dict[str, Tensor]:
        relative, labels = dim_zero_cat(self.relative), dim_zero_cat(self.labels)
        correct = (relative < self.fraction).float()
        out = {"accuracy": correct.mean(), "mean_error": relative.mean()}
        for label in labels.unique().tolist():
            out[f"obj_{int(label):06d}"] = correct[labels == label].mean()
        return out


class ADDS(ADD):
    """:class:`ADD` with the ADD-S (closest point) error, for symmetric objects."""

    @staticmethod
    def error(
        R_pred: Tensor, t_pred: Tensor, R_gt: Tensor, t_gt: Tensor, points: Tensor
    ) -> Tensor:
        return adds_error(R_pred, t_pred, R_gt, t_gt, points)
