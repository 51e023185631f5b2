"""A detector-like input graph from ground truth, for training the KGNNs without a detector.

Reproduces the failure modes of a heatmap detector without leaking the answer:

* **boxes**: the ROI is the ground-truth box jittered (:func:`jitter_boxes`: centre shift and
  per-side log-scale noise), never the exact hull, whose edges are fixed by occluded keypoints;
* **noise** isotropic in pixels: std ``sigma * L`` on both axes (``L`` the box's larger side),
  larger for occluded keypoints as a detector's guesses are (upstream's legacy synthetic recipe
  added noise to occluded nodes only, in box units, i.e. anisotropic in pixels);
* **left/right swaps**: each left/right pair exchanges positions with probability
  ``swap_prob`` (the commonest heatmap error on cars);
* **gross errors**: with probability ``outlier_prob`` a labelled node lands anywhere in the ROI
  (uniform), as a heatmap's mode on the wrong part or the wrong car does (the demo world's
  trained heatmap network: 20-45 % of its nodes are off by more than a quarter of the box side,
  on the test sequence and on held-out training sequences);
* **part confusions**: a share ``outlier_part_share`` of those gross errors lands instead on
  another labelled keypoint of the same part (``KEYPOINT_PARTS``: wheels, headlights, roof
  corners; plus the visible-node noise), as a heatmap peaking on the wrong wheel does (on the
  demo world's cross-fitted training graphs 61-64 % of the gross errors lie within a tenth of
  the box side of another labelled keypoint, about two thirds of them of the same part); such
  a node is a clean peak, so its confidence follows its distance to the keypoint it landed on,
  not to its own;
* **confidences on the detector's scale**: the softmax peak of a trained heatmap is about
  ``confidence_peak`` for a point on its mode (the demo world's heatmap network of
  ``scripts/occnet_heatmaps.py``: median 0.36, 90th percentile 0.88; an untrained 56x56 one
  about 1/3136) and decays with the point's actual displacement
  (``exp(-(d / L)^2 / (2 w^2))``, ``w = confidence_width``) times a uniform factor in [0.5, 1]:
  it reflects localisation error, not the visibility label (upstream's recipe drew visible and
  occluded confidences from disjoint ranges, which makes visibility readable from c alone).
  ``confidence_floor`` ``f`` makes it ``f + (1 - f) exp(...)`` of that: a trained heatmap's
  peak says little about its error (correlation -0.3 on the demo world), a pure
  ``exp(...)`` tells the graph nets each node's error.

Unlabelled keypoints (``v = 0``) sit at the ROI centre with confidence 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from occaist.data.keypoints import FLIP_PERMUTATION, KEYPOINT_PARTS, OCCLUDED
from occaist.models.occlusion_net.kgnn import KeypointGraphNet, image_to_roi

__all__ = ["detector_like_graph", "jitter_boxes", "resample_shapes"]


def jitter_boxes(
    boxes: Tensor,
    center_std: float,
    scale_std: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Boxes ``(N, 4)`` xyxy moved by ``N(0, center_std * side)`` per axis and each side
    scaled by ``exp(N(0, scale_std))`` (a detector's box error)."""
    if center_std == 0 and scale_std == 0:
        return boxes
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = (boxes[:, 2:] - boxes[:, :2]).clamp_min(1.0)
    # drawn on the generator's device (a CPU generator gives the same boxes on CPU and CUDA)
    dev = generator.device if generator is not None else boxes.device
    noise = torch.randn(boxes.shape[0], 4, generator=generator, device=dev).to(boxes)
    centre = centre + noise[:, :2] * center_std * size
    size = size * torch.exp(noise[:, 2:] * scale_std)
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def detector_like_graph(
    graph_head: KeypointGraphNet,
    keypoints: Tensor,
    boxes: Tensor,
    sigma_visible: float,
    sigma_occluded: float,
    swap_prob: float = 0.0,
    confidence_peak: float = 0.9,
    confidence_width: float = 0.05,
    generator: torch.Generator | None = None,
    flip_permutation: Sequence[int] = FLIP_PERMUTATION,
    outlier_prob: float = 0.0,
    confidence_floor: float = 0.0,
    outlier_part_share: float = 0.0,
    parts: Sequence[int] = KEYPOINT_PARTS,
) -> Tensor:
    """Input nodes ``(N, K, D)`` of the ROIs ``boxes`` (N, 4) from ground truth ``keypoints``
    ``(N, K, 3)`` (pixels, COCO ``v``); see the module docstring. ``sigma_*`` are fractions of
    the box's larger side."""
    xy, v = keypoints[..., :2], keypoints[..., 2]
    n, k = v.shape
    dev = keypoints.device
    size = (boxes[:, 2:] - boxes[:, :2]).amax(-1).clamp_min(1.0)[:, None, None]  # (N, 1, 1)
    sigma = torch.where(v == OCCLUDED, sigma_occluded, sigma_visible)[..., None]
    noise = torch.randn((n, k, 2), generator=generator, device=dev) * sigma * size
    noisy = xy + noise
    if swap_prob > 0:
        perm = torch.as_tensor(list(flip_permutation), device=dev)
        swap_pair = torch.rand((n, k), generator=generator, device=dev) < swap_prob
        lo = torch.minimum(torch.arange(k, device=dev), perm)  # one draw per pair
        swap = swap_pair[:, lo] & (perm != torch.arange(k, device=dev))
        swap = swap & (v > 0) & (v[:, perm] > 0)
        noisy = torch.where(swap[..., None], noisy[:, perm], noisy)
    peak_at = xy  # where each node's heatmap peak truly is (its confidence's reference)
    if outlier_prob > 0:  # anywhere in the ROI
        lo, hi = boxes[:, None, :2], boxes[:, None, 2:]
        uniform = lo + torch.rand((n, k, 2), generator=generator, device=dev) * (hi - lo)
        gross = torch.rand((n, k), generator=generator, device=dev) < outlier_prob
        noisy = torch.where(gross[..., None], uniform, noisy)
        if outlier_part_share > 0:
            noisy, peak_at = _part_confusions(
                noisy, xy, v, gross, size, sigma_visible, outlier_part_share, parts, generator
            )
    dist = (noisy - peak_at).norm(dim=-1) / size[..., 0]
    factor = 0.5 + 0.5 * torch.rand((n, k), generator=generator, device=dev)
    decay = torch.exp(-(dist**2) / (2 * confidence_width**2))
    conf = confidence_peak * (confidence_floor + (1 - confidence_floor) * decay) * factor
    labelled = v > 0
    roi = torch.where(labelled[..., None], image_to_roi(noisy, boxes), torch.zeros_like(xy))
    conf = torch.where(labelled, conf, torch.zeros_like(conf))
    return graph_head.make_nodes(roi, conf)


def _part_confusions(
    noisy: Tensor,
    xy: Tensor,
    v: Tensor,
    gross: Tensor,
    size: Tensor,
    sigma: float,
    share: float,
    parts: Sequence[int],
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """Move a share ``share`` of the gross errors ``gross`` ``(N, K)`` onto another labelled
    keypoint of the same part (uniform among them, plus noise ``sigma * size``) -> the new
    ``noisy`` ``(N, K, 2)`` and where each node's peak truly is (its landing keypoint for the
    moved ones, its own ground truth ``xy`` otherwise)."""
    n, k = v.shape
    dev = xy.device
    part = torch.as_tensor(list(parts), device=dev)
    same = (part[:, None] == part[None, :]) & (part[:, None] >= 0)
    same &= ~torch.eye(k, dtype=torch.bool, device=dev)  # (K, K): candidate targets
    cand = same[None] & (v > 0)[:, None, :]  # (N, K, K): labelled targets of the same part
    score = torch.rand((n, k, k), generator=generator, device=dev).masked_fill(~cand, -1.0)
    target = score.argmax(-1)  # a uniform draw among the candidates
    confuse = gross & cand.any(-1)
    confuse &= torch.rand((n, k), generator=generator, device=dev) < share
    landing = xy.gather(1, target[..., None].expand(n, k, 2))
    jitter = torch.randn((n, k, 2), generator=generator, device=dev) * sigma * size
    noisy = torch.where(confuse[..., None], landing + jitter, noisy)
    return noisy, torch.where(confuse[..., None], landing, xy)


def resample_shapes(
    keypoints: Tensor,
    nodes_xy: Tensor,
    rois: Tensor,
    mean: Tensor,
    basis: Tensor,
    sigma: Tensor,
    prob: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Shape augmentation of input graphs (ours): the same errors on another car.

    The demo world trains on few distinct cars (11 in its three training sequences), so a graph
    net learns their shapes rather than the shape space. For each instance (with probability
    ``prob``) the shape basis and a weak-perspective camera are fitted to its labelled
    ground-truth keypoints (:func:`~occaist.geometry.shape_fit.fit_shape_basis`), the
    coefficients are redrawn from the basis prior (``beta ~ N(0, I)`` in units of ``sigma``)
    and the new ground truth is the new shape seen by the same camera plus the old fit's
    residual; every input node moves with its keypoint, so the heatmap network's errors, the
    confidences and the visibility labels of the instance are kept.

    Args:
        keypoints: ``(N, K, 3)`` ground truth (pixels, COCO ``v``).
        nodes_xy: ``(N, K, 2)`` input nodes in the ROI frame of ``rois`` ``(N, 4)``.
        mean, basis, sigma: the shape basis ``(K, 3)``, ``(B, K, 3)``, ``(B,)``.

    Returns:
        The new ``keypoints`` and ``nodes_xy``; unlabelled keypoints and their nodes unchanged.
    """
    from occaist.geometry.shape_fit import fit_shape_basis

    labelled = keypoints[..., 2] > 0
    gt = keypoints[..., :2].detach().double().cpu().numpy()
    fit = fit_shape_basis(
        gt, labelled.double().cpu().numpy(), mean.double().cpu().numpy(),
        basis.double().cpu().numpy(), sigma.double().cpu().numpy(),
    )  # fmt: skip
    n, b = fit["beta"].shape
    beta = torch.randn(n, b, generator=generator, dtype=torch.float64)
    components = basis.double().cpu() * sigma.double().cpu()[:, None, None]
    shape = mean.double().cpu()[None] + torch.einsum("nb,bkc->nkc", beta, components)
    rot = torch.as_tensor(fit["rotation"])
    proj = torch.as_tensor(fit["scale"])[:, None, None] * torch.einsum("nij,nkj->nki", rot, shape)
    proj = proj + torch.as_tensor(fit["translation"])[:, None]
    new_gt = proj + torch.as_tensor(gt - fit["projection"])  # keep the old fit's residual
    move = torch.rand(n, generator=generator) < prob
    change = (move[:, None] & labelled.cpu())[..., None]
    delta = torch.where(change, new_gt - torch.as_tensor(gt), torch.zeros_like(new_gt))
    delta = delta.to(keypoints)
    side = (rois[:, 2:] - rois[:, :2]).clamp_min(1e-6)[:, None]
    new_kps = torch.cat([keypoints[..., :2] + delta, keypoints[..., 2:]], dim=-1)
    return new_kps, nodes_xy + 2.0 * delta / side
