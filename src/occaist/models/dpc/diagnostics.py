"""Diagnostics that separate pose learning from the global alignment (see ``docs/dpc.md``).

An unsupervised DPC model predicts poses in a frame of its own; the evaluation aligns it to the
ground truth with one global rotation ``q_ref`` (``alignment.py``), so a bad accuracy can come
from the poses or from the alignment. These functions measure each part on its own:

* :func:`win_fractions`: how often each candidate of the ensemble wins (a collapsed ensemble has
  one or two candidates at ~1 and the rest at 0);
* :func:`relative_pose_errors`: the angle between the predicted and the true relative rotation of
  every pair of views of one model, ``q_i ⊗ q̄_j`` against ``g_i ⊗ ḡ_j``. Any global rotation
  cancels in ``q_i ⊗ q̄_j``, so this needs no alignment at all;
* :func:`oracle_alignment`: the single global rotation that gives the highest accuracy on the
  evaluated views themselves (ties broken by the lower median), an upper bound on what any
  alignment estimated from other data can reach. Its candidates are the rotations that make one
  view exactly right, ``q̄_gt,i ⊗ q_i``; the best of them is within the accuracy threshold of any
  rotation that makes some view right, so it is the optimum up to that tolerance;
* :func:`fit_poses_to_fixed_shapes`: the pose branch trained alone against ground-truth clouds
  (the shape fixed), the cheapest check of whether the candidate ensemble can learn poses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from occaist.geometry.point_renderer import render_point_cloud
from occaist.metrics.pose import oracle_alignment, relative_pose_errors
from occaist.models.dpc.losses import min_projection_loss

__all__ = [
    "fit_poses_to_fixed_shapes",
    "oracle_alignment",
    "relative_pose_errors",
    "win_fractions",
]  # the two pose measures live in occaist.metrics.pose and are re-exported here


def win_fractions(winner: Tensor, num_candidates: int) -> Tensor:
    """Fraction of images ``(n,)`` won by each candidate: ``(K,)``, summing to 1."""
    counts = torch.bincount(winner.reshape(-1), minlength=num_candidates).float()
    return counts / counts.sum().clamp_min(1.0)


def fit_poses_to_fixed_shapes(
    net: torch.nn.Module,
    batches: Callable[[], Iterable[dict[str, Tensor]]],
    clouds: dict[str, Tensor],
    steps: int,
    vox_size: int = 32,
    sigma: float | Callable[[int], float] = 1.0,
    lr: float = 3e-4,
    kernel_size: int = 11,
) -> dict[str, Any]:
    """Train only the pose branch of ``net`` against fixed ground-truth clouds.

    Each step renders the model's ground-truth cloud ``clouds[model_id]`` ``(N, 3)`` under every
    candidate pose of every view, keeps the winner's projection loss (the DPC objective with the
    shape fixed) and takes one Adam step on the encoder and pose branch.

    Args:
        net: a :class:`~occaist.models.dpc.networks.DPCNet` with ``predict_pose``.
        batches: returns an iterable of training batches (``image`` ``(B, V, 3, H, W)``,
            ``mask`` ``(B, V, 1, H, W)``, ``model_id``); called again when exhausted.
        clouds: ground-truth cloud of every model id.
        steps: optimiser steps.
        sigma: blur σ in voxels, or a function of the step.

    Returns:
        ``win_fractions`` ``(steps, K)`` (each step's winners) and ``losses`` ``(steps,)``.
    """
    params = [p for name, p in net.named_parameters() if not name.startswith(("point", "scale"))]
    optimizer = torch.optim.Adam(params, lr=lr)
    k = net.num_candidates
    fractions, losses = [], []
    iterator = iter(batches())
    for step in range(steps):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(batches())
            batch = next(iterator)
        images, masks = batch["image"], batch["mask"]
        b, v = images.shape[:2]
        quats = net.decode_pose(net.encode(images.flatten(0, 1)))["candidates"]  # (BV, K, 4)
        points = torch.stack([clouds[m] for m in batch["model_id"]])  # (B, N, 3)
        points = points[:, None, None].expand(-1, v, k, -1, -1).reshape(b * v * k, -1, 3)
        s = sigma(step) if callable(sigma) else sigma
        sil = render_point_cloud(
            points, quats.reshape(-1, 4), vox_size=vox_size, sigma=s, kernel_size=kernel_size
        )["silhouette"].view(b * v, k, vox_size, vox_size)
        target = torch.nn.functional.interpolate(
            masks.flatten(0, 1), size=(vox_size, vox_size), mode="bilinear", align_corners=False
        )[:, 0]
        loss, winner, _ = min_projection_loss(sil, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        fractions.append(win_fractions(winner, k))
        losses.append(float(loss.detach()))
    return {"win_fractions": torch.stack(fractions), "losses": torch.tensor(losses)}
