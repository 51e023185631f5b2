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

from occaist.geometry.multiview import normalize_trifocal, trifocal_residual, trifocal_tensor
from occaist.models.occlusion_net.kgnn import edge_labels

__all__ = ["OCCLUDED_LOSS_MODES", "edge_loss", "heatmap_targets", "masked_l2", "trifocal_loss"]

OCCLUDED_LOSS_MODES = ("trifocal", "triangulated", "annotated")


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


def trifocal_loss(
    pred: Tensor,
    P1: Tensor,
    P2: Tensor,
    P3: Tensor,
    x2: Tensor,
    x3: Tensor,
    mask: Tensor,
) -> Tensor:
    """Paper eq. 9: ``sum_{j in O} || [x'_j]_x (sum_i xhat_j^i T_i) [x''_j]_x ||^2`` (mean over
    ``mask``).

    All coordinates must be pre-normalised to O(1) (pixels divided by the image size, cameras
    left-multiplied by the same scaling) so that the residual is well conditioned; ``T`` is
    scaled to unit norm.

    Args:
        pred: ``(N, K, 2)`` predicted keypoints in view 1 (the occluded view).
        P1: ``(N, 3, 4)`` camera of view 1.
        P2, P3: ``(N, K, 3, 4)`` cameras of the two views where keypoint ``k`` is visible.
        x2, x3: ``(N, K, 2)`` the keypoint in those views.
        mask: ``(N, K)`` bool, occluded here and visible in two other views.
    """
    if not bool(mask.any()):
        return pred.sum() * 0.0
    P1 = P1[:, None].expand_as(P2)
    T = normalize_trifocal(trifocal_tensor(P1[mask], P2[mask], P3[mask]).to(pred.dtype))
    residual = trifocal_residual(T, pred[mask], x2[mask].to(pred.dtype), x3[mask].to(pred.dtype))
    return residual.pow(2).sum(dim=(-1, -2)).mean()
