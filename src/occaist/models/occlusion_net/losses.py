"""Occlusion-Net losses (paper §3.2-3.4), each a plain function returning a scalar.

* heatmap CE: torchvision's ``keypointrcnn_loss`` on targets from :func:`heatmap_targets`
  (``"visible"``: visible keypoints only, the paper; ``"all"``: every labelled keypoint, upstream);
* :func:`edge_loss`: 2-class CE on ``e_ij = 1`` iff both ends visible, over all ``N * E`` edges;
* occluded-keypoint loss, three modes (config ``occluded_loss``):
  ``"trifocal"`` :func:`trifocal_loss` (paper eq. 9), ``"triangulated"`` and ``"annotated"``
  :func:`masked_l2` (to the reprojection of a DLT-triangulated point, or to the annotated occluded
  position as upstream);
* :func:`masked_l2` also serves the 3D-KGNN reprojection loss.

The weights of the terms live in the LightningModule's ``loss_weights`` config.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from occaist.geometry.multiview import (
    homogeneous,
    normalize_trifocal,
    skew,
    trifocal_residual,
    trifocal_tensor,
)
from occaist.models.occlusion_net.kgnn import edge_labels

__all__ = [
    "OCCLUDED_LOSS_MODES",
    "REPROJECTION_TARGETS",
    "edge_loss",
    "heatmap_targets",
    "masked_l2",
    "reprojection_loss",
    "trifocal_loss",
    "weighted_sum",
]

OCCLUDED_LOSS_MODES = ("trifocal", "triangulated", "annotated")
TRIFOCAL_ERRORS = ("algebraic", "transfer")
REPROJECTION_TARGETS = ("refined", "kgnn2d", "ground_truth")


def heatmap_targets(keypoints: Tensor, mode: str) -> Tensor:
    """Keypoint targets ``(N, K, 3)`` (COCO ``v``) for the heatmap CE.

    ``"visible"`` zeroes the visibility of occluded keypoints (``v == 1``) so only visible ones
    are supervised (paper: "only supervision: visible keypoint annotations"); ``"all"`` keeps
    every labelled keypoint (upstream, through maskrcnn_benchmark's ``v > 0``).
    """
    if mode == "all":
        return keypoints
    if mode != "visible":
        raise ValueError(f"heatmap_loss must be 'visible' or 'all', got {mode!r}")
    out = keypoints.clone()
    out[..., 2] = torch.where(out[..., 2] == 1, torch.zeros_like(out[..., 2]), out[..., 2])
    return out


def edge_loss(edge_logits: Tensor, visible: Tensor, send: Tensor, receive: Tensor) -> Tensor:
    """``L_edge``: cross-entropy of edge logits ``(N, E, 2)`` against labels from node
    visibility ``(N, K)`` bool (unlabelled or out-of-ROI nodes count as not visible)."""
    labels = edge_labels(visible, send, receive)
    return F.cross_entropy(edge_logits.reshape(-1, edge_logits.shape[-1]), labels.reshape(-1))


def masked_l2(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared distance ``sum_m ||pred - target||^2 / #m`` over ``mask`` ``(N, K)``;
    zero (with gradient) when the mask is empty. ``pred``/``target``: ``(N, K, 2)``."""
    sq = ((pred - target) ** 2).sum(dim=-1)
    m = mask.to(sq.dtype)
    return (sq * m).sum() / m.sum().clamp_min(1.0)


def reprojection_loss(
    out: dict[str, Tensor],
    gt_roi: Tensor,
    labelled: Tensor,
    target: str = "refined",
    exclude: tuple[int, ...] = (8, 13),
    detach: bool = False,
) -> Tensor:
    """The 3D-KGNN reprojection loss: :func:`masked_l2` of ``out["keypoints_3d"]`` to a target,
    over every keypoint but ``exclude`` (exhaust and centre).

    ``target``: ``"refined"`` the 2D-KGNN output ``V'`` on every node (upstream), ``"kgnn2d"``
    the 2D-KGNN prediction after ``replace`` (heatmap points on predicted-visible nodes), or
    ``"ground_truth"`` the labelled keypoints ``gt_roi`` ``(N, K, 2)`` where ``labelled``
    ``(N, K)``. ``detach`` stops the gradient into the 2D-KGNN target (upstream: not detached,
    so the term also pulls ``V'`` towards the projection).

    Upstream's weighting is ``sum / (2 * 100) / (N * 14)`` over ``N * 12`` terms, i.e. a weight
    of ``0.005 * 12 / 14`` on this mean.
    """
    if target not in REPROJECTION_TARGETS:
        raise ValueError(f"reprojection_target must be one of {REPROJECTION_TARGETS}")
    keep = torch.ones_like(labelled)
    keep[:, list(exclude)] = False
    if target == "ground_truth":
        goal, mask = gt_roi, keep & labelled
    else:
        goal = out["refined"][..., :2] if target == "refined" else out["keypoints_2d"]
        goal, mask = (goal.detach() if detach else goal), keep
    return masked_l2(out["keypoints_3d"], goal, mask)


def trifocal_transfer(T: Tensor, x2: Tensor, x3: Tensor, damping: float = 1e-12) -> Tensor:
    """The view-1 point ``x1 = (u, v)`` that best satisfies the incidence with ``x2, x3``.

    The residual ``[x2]_x (sum_i x1^i T_i) [x3]_x`` is linear in ``(u, v)``:
    ``R = u A_0 + v A_1 + A_2`` with ``A_i = [x2]_x T_i [x3]_x``, so its least-squares zero is
    ``-(J^T J)^-1 J^T vec(A_2)`` with ``J = [vec A_0, vec A_1]`` (point transfer through the
    trifocal tensor, H&Z §15.1.4).

    Shapes: ``T (..., 3, 3, 3)``, ``x2, x3 (..., 2)`` -> ``(..., 2)``.
    """
    A = skew(homogeneous(x2))[..., None, :, :] @ T @ skew(homogeneous(x3))[..., None, :, :]
    J = A[..., :2, :, :].flatten(-2).transpose(-1, -2)  # (..., 9, 2)
    b = A[..., 2, :, :].flatten(-2)[..., None]  # (..., 9, 1)
    eye = torch.eye(2, dtype=J.dtype, device=J.device)
    JtJ = J.transpose(-1, -2) @ J + damping * eye
    return -torch.linalg.solve(JtJ, J.transpose(-1, -2) @ b)[..., 0]


def trifocal_loss(
    pred: Tensor,
    P1: Tensor,
    P2: Tensor,
    P3: Tensor,
    x2: Tensor,
    x3: Tensor,
    mask: Tensor,
    error: str = "algebraic",
    roi_scale: Tensor | None = None,
) -> Tensor:
    """Trifocal occluded-keypoint loss over ``mask`` (mean).

    ``error="algebraic"``: paper eq. 9, ``|| [x'_j]_x (sum_i xhat_j^i T_i) [x''_j]_x ||_F^2``.
    ``error="transfer"``: ``|| xhat_j - x_j^T ||^2`` with ``x_j^T`` the point transferred
    through ``T`` from the two views (:func:`trifocal_transfer`): the same incidence, measured as
    an image distance, so its scale matches the other occluded-keypoint losses.

    All coordinates must be pre-normalised to O(1) (pixels divided by the image size, cameras
    left-multiplied by the same scaling) so that the residual is well conditioned; ``T`` is
    scaled to unit norm.

    Args:
        pred: ``(N, K, 2)`` predicted keypoints in view 1 (the occluded view).
        P1: ``(N, 3, 4)`` camera of view 1.
        P2, P3: ``(N, K, 3, 4)`` cameras of the two views where keypoint ``k`` is visible.
        x2, x3: ``(N, K, 2)`` the keypoint in those views.
        mask: ``(N, K)`` bool, occluded here and visible in two other views.
        error: ``"algebraic"`` (paper) or ``"transfer"``.
        roi_scale: ``(N, 2)`` factors taking view-1 normalised offsets to ROI-frame units
            (``"transfer"`` only; default 1).
    """
    if error not in TRIFOCAL_ERRORS:
        raise ValueError(f"trifocal error must be one of {TRIFOCAL_ERRORS}, got {error!r}")
    if not bool(mask.any()):
        return pred.sum() * 0.0
    P1 = P1[:, None].expand_as(P2)
    T = normalize_trifocal(trifocal_tensor(P1[mask], P2[mask], P3[mask]).to(pred.dtype))
    p2, p3 = x2[mask].to(pred.dtype), x3[mask].to(pred.dtype)
    if error == "algebraic":
        residual = trifocal_residual(T, pred[mask], p2, p3)
        return residual.pow(2).sum(dim=(-1, -2)).mean()
    offset = pred[mask] - trifocal_transfer(T, p2, p3)
    if roi_scale is not None:
        offset = offset * roi_scale[:, None, :].expand(*mask.shape, 2)[mask]
    return offset.pow(2).sum(dim=-1).mean()


def weighted_sum(losses: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """``sum_k weights[k] * losses[k]``; a loss without a weight is an error (not a silent 1)."""
    unknown = set(losses) - set(weights)
    if unknown:
        raise KeyError(f"no weight for losses {sorted(unknown)}; add them to loss_weights")
    return sum(weights[k] * v for k, v in losses.items())
