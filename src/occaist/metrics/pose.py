"""Pose accuracy of predicted quaternions (DPC ``eval_camera_pose.py``).

The angular error between unit quaternions is ``θ = 2·acos(|⟨q̂, q_gt⟩|)`` in degrees, in
[0, 180]: the angle of ``q̄_gt ⊗ q̂`` with the q / −q ambiguity removed (upstream wraps
``|2·acos(Δ_w)|`` by −2π above π, which is the same number). ``acos`` is clamped against rounding
above 1. DPC reports the fraction of views with ``θ < 30°`` and the median error
``sort(θ)[n // 2]`` over all views of all models.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from occaist.geometry.quaternion import quaternion_conjugate, quaternion_multiply

__all__ = [
    "PoseAccuracy",
    "PoseDiagnostics",
    "median_upper",
    "oracle_alignment",
    "quaternion_angle_deg",
    "relative_pose_errors",
]


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


def relative_pose_errors(pred: Tensor, gt: Tensor) -> Tensor:
    """Alignment-free pose errors in degrees of the views of one model.

    Args:
        pred: predicted poses ``(V, 4)`` in the model's own frame (aligned or not).
        gt: ground-truth poses ``(V, 4)``.

    Returns:
        ``(V·(V−1)/2,)``: for each pair ``i < j`` the angle between ``pred_i ⊗ p̄red_j`` and
        ``gt_i ⊗ ḡt_j``.
    """
    pairs = list(itertools.combinations(range(pred.shape[0]), 2))
    if not pairs:
        return pred.new_zeros(0)
    i, j = (torch.tensor(idx, device=pred.device) for idx in zip(*pairs, strict=True))
    rel_pred = quaternion_multiply(pred[i], quaternion_conjugate(pred[j]))
    rel_gt = quaternion_multiply(gt[i], quaternion_conjugate(gt[j]))
    return quaternion_angle_deg(rel_pred, rel_gt)


def oracle_alignment(
    pred: Tensor,
    gt: Tensor,
    threshold_deg: float = 30.0,
    max_candidates: int = 2000,
    extra_candidates: Tensor | None = None,
) -> dict[str, Any]:
    """The best single global rotation for raw poses ``pred`` ``(n, 4)`` against ``gt`` ``(n, 4)``.

    The poses are aligned as the evaluation does, ``q ← q ⊗ q̄_ref``. Candidates are
    ``q_ref = ḡ_i ⊗ q_i`` of every view (at most ``max_candidates`` of them, evenly spaced) and
    ``extra_candidates`` ``(c, 4)`` (pass the alignment in use: the oracle is then no worse).

    Returns:
        ``reference_rotation`` ``(4,)``, ``accuracy``, ``median_deg``, ``mean_deg`` and the
        per-view ``errors_deg`` ``(n,)`` under it.
    """
    pred, gt = pred.double().reshape(-1, 4), gt.double().reshape(-1, 4)
    step = max(1, -(-pred.shape[0] // max_candidates))
    candidates = quaternion_multiply(quaternion_conjugate(gt), pred)[::step]  # (c, 4)
    if extra_candidates is not None:
        candidates = torch.cat((extra_candidates.double().reshape(-1, 4), candidates))
    best: tuple[float, float, int] | None = None
    for c in range(candidates.shape[0]):
        errors = quaternion_angle_deg(
            quaternion_multiply(pred, quaternion_conjugate(candidates[c])), gt
        )
        key = (-float((errors < threshold_deg).double().mean()), float(median_upper(errors)), c)
        if best is None or key < best:
            best = key
    assert best is not None
    ref = candidates[best[2]]
    ref = ref / ref.norm()
    ref = ref if ref[0] >= 0 else -ref
    errors = quaternion_angle_deg(quaternion_multiply(pred, quaternion_conjugate(ref)), gt)
    return {
        "reference_rotation": ref.float(),
        "accuracy": float((errors < threshold_deg).double().mean()),
        "median_deg": float(median_upper(errors)),
        "mean_deg": float(errors.mean()),
        "errors_deg": errors.float(),
    }


class PoseDiagnostics(Metric):
    """Alignment-free relative pose error and the oracle-aligned accuracy of raw poses.

    ``update(pred, gt)`` takes the raw (unaligned) poses ``(B, V, 4)`` of B models with V views
    each. ``compute()`` returns ``relative_accuracy`` / ``relative_median_deg`` (over all view
    pairs of every model, :func:`relative_pose_errors`) and ``oracle_accuracy`` /
    ``oracle_median_deg`` (:func:`oracle_alignment` over every view). "cat" states.
    ``compute`` is not cached: its result depends on its ``reference`` argument.
    """

    full_state_update = False

    def __init__(self, threshold_deg: float = 30.0) -> None:
        # torchmetrics caches compute() until reset() whatever its arguments, so a second call
        # with another reference would return the first one's numbers
        super().__init__(compute_with_cache=False)
        self.threshold_deg = threshold_deg
        self.add_state("relative", default=[], dist_reduce_fx="cat")
        self.add_state("pred", default=[], dist_reduce_fx="cat")
        self.add_state("gt", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, gt: Tensor) -> None:
        for p, g in zip(pred, gt, strict=True):
            self.relative.append(relative_pose_errors(p, g).reshape(-1).float())
        self.pred.append(pred.reshape(-1).float())
        self.gt.append(gt.reshape(-1).float())

    def compute(self, reference: Tensor | None = None) -> dict[str, Tensor]:
        """The diagnostics; with ``reference`` (``q_ref``) also ``accuracy`` / ``median_deg`` of
        the poses aligned with it (``q ⊗ q̄_ref``) and the oracle includes it as a candidate."""
        relative = dim_zero_cat(self.relative)
        pred, gt = dim_zero_cat(self.pred).view(-1, 4), dim_zero_cat(self.gt).view(-1, 4)
        extra = None if reference is None else reference.reshape(1, 4)
        oracle = oracle_alignment(pred, gt, self.threshold_deg, extra_candidates=extra)
        out: dict[str, Tensor] = {}
        if reference is not None:
            ref = reference.to(pred).expand_as(pred)
            errors = quaternion_angle_deg(quaternion_multiply(pred, quaternion_conjugate(ref)), gt)
            out["accuracy"] = (errors < self.threshold_deg).float().mean()
            out["median_deg"] = median_upper(errors)
        nan = torch.tensor(float("nan"), device=self.device)
        has_pairs = relative.numel() > 0
        return {
            **out,
            "relative_accuracy": (relative < self.threshold_deg).float().mean()
            if has_pairs
            else nan,
            "relative_median_deg": median_upper(relative) if has_pairs else nan,
            "oracle_accuracy": torch.tensor(oracle["accuracy"], device=self.device),
            "oracle_median_deg": torch.tensor(oracle["median_deg"], device=self.device),
        }
