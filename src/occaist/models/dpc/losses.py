"""DPC losses and schedules (``model_pc.py``, ``util/losses.py``).

Notation: n indexes the B·V images of a batch, k the K pose candidates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from occaist.geometry.quaternion import (
    quaternion_conjugate,
    quaternion_multiply,
    quaternion_normalize,
)

__all__ = [
    "linear_schedule",
    "min_projection_loss",
    "shape_consistency_loss",
    "student_loss",
    "student_term",
    "subsample_points",
    "weight_l2",
]


def linear_schedule(start: float, end: float, step: int, total_steps: int) -> float:
    """``start + (end − start)·min(step / T, 1)``: the σ and keep-probability schedules."""
    frac = min(max(step, 0) / max(total_steps, 1), 1.0)
    return start + (end - start) * frac


def min_projection_loss(
    silhouettes: Tensor, masks: Tensor, others_weight: float = 0.0
) -> tuple[Tensor, Tensor, Tensor]:
    """Projection loss, minimum over the candidate ensemble.

    Args:
        silhouettes: ``(n, K, H, W)`` rendered with each candidate pose.
        masks: ``(n, H, W)`` ground-truth masks at the render resolution.
        others_weight: w of the non-winners' share (ours; 0 = upstream): the loss adds
            ``w·(1/n)·½·Σ_n mean_{k≠k*} Σ_px (M_n − S_{n,k})²``, so candidates that do not win
            still receive a little gradient towards the silhouettes.

    Returns:
        ``L_proj = (1/n)·½·Σ_n Σ_px (M_n − S_{n,k*})²`` (only the winner gets gradient), the
        winners ``k*`` ``(n,)`` and the per-candidate errors ``(n, K)`` (detached).
    """
    errors = (silhouettes - masks[:, None]).pow(2).flatten(2).sum(-1)  # (n, K)
    winner = errors.detach().argmin(dim=1)
    chosen = errors.gather(1, winner[:, None]).squeeze(1)
    loss = 0.5 * chosen.mean()
    k = errors.shape[1]
    if others_weight > 0 and k > 1:
        others = (errors.sum(1) - chosen) / (k - 1)
        loss = loss + others_weight * 0.5 * others.mean()
    return loss, winner, errors.detach()


def shape_consistency_loss(points: Tensor, num_points: int | None = 512) -> Tensor:
    """Ours (not in the paper or the code): the clouds predicted from different views of one model
    should be the same cloud, in the same canonical frame.

    Args:
        points: ``(B, V, N, 3)``, every view's predicted cloud.
        num_points: points of each cloud compared (a random subset per cloud; None: all).

    Returns:
        The symmetric Chamfer distance (mean nearest-neighbour distance, both ways, not squared)
        between view 0's cloud and each other view's cloud, averaged over the ``B·(V−1)`` pairs.
        A view whose cloud comes out turned (a car's front/back flip) pays the distance between
        the car and its turned copy.
    """
    b, v, n, _ = points.shape
    if v < 2:
        return points.new_zeros(())
    if num_points is not None and num_points < n:
        points = subsample_points(points.flatten(0, 1), num_points / n).view(b, v, -1, 3)
    first = points[:, :1].expand(-1, v - 1, -1, -1).flatten(0, 1)  # (B(V-1), M, 3)
    others = points[:, 1:].flatten(0, 1)
    distances = torch.cdist(first, others, compute_mode="donot_use_mm_for_euclid_dist")
    return (distances.min(2).values.mean(1) + distances.min(1).values.mean(1)).mean()


def student_loss(teacher: Tensor, student: Tensor, form: str = "code") -> Tensor:
    """Distillation of the winning candidate into the student head, per image ``(n,)``.

    ``Δ = normalise(q_T ⊗ q̄_S)`` with the teacher detached; ``form="code"``: ``1 − Δ_w²``
    (= sin²(θ/2), sign-invariant; upstream); ``form="thesis"``: ``1 − Δ_w`` as the thesis writes
    it (not sign-invariant; kept for comparison). Multiply by the weight (20) outside.
    """
    delta = quaternion_normalize(
        quaternion_multiply(quaternion_normalize(teacher.detach()), quaternion_conjugate(student))
    )
    if form == "code":
        return 1.0 - delta[..., 0] ** 2
    if form == "thesis":
        return 1.0 - delta[..., 0]
    raise ValueError(f"unknown student loss form {form!r}; use 'code' or 'thesis'")


def student_term(pose: dict[str, Tensor], winner: Tensor, form: str = "code") -> Tensor:
    """The student's loss, averaged over the n images: :func:`student_loss` towards the winning
    candidate for a regressing student, or the cross-entropy of its ``student_logits`` (n, K)
    against the winners ``(n,)`` for a selecting one (ours; ``networks.py``)."""
    if "student_logits" in pose:
        return F.cross_entropy(pose["student_logits"], winner)
    candidates = pose["candidates"]
    teacher = candidates.gather(1, winner[:, None, None].expand(-1, 1, 4)).squeeze(1)
    return student_loss(teacher, pose["student"], form).mean()


def weight_l2(module: nn.Module) -> Tensor:
    """``Σ_W ½‖W‖²`` over weight tensors (conv kernels, FC matrices); biases excluded."""
    terms = [0.5 * p.pow(2).sum() for name, p in module.named_parameters() if p.dim() > 1]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def subsample_points(points: Tensor, keep_prob: float, generator=None) -> Tensor:
    """Keep ``⌊N·keep⌋`` points of each cloud ``(P, N, D)``, drawn without replacement
    independently per cloud (upstream's point "dropout"; ``keep_prob`` is the kept fraction).
    Per-point features (colours) stay with their points when concatenated along D."""
    n = points.shape[1]
    keep = max(1, int(n * keep_prob))
    if keep >= n:
        return points
    scores = torch.rand(points.shape[:2], device=points.device, generator=generator)
    idx = scores.topk(keep, dim=1).indices  # (P, keep)
    return points.gather(1, idx[..., None].expand(-1, -1, points.shape[-1]))
