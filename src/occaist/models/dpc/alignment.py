"""Global rotation alignment of unsupervised DPC predictions (``compute_alignment.py``).

An unsupervised model predicts shapes and poses in a canonical frame of its own, which differs from
the ground-truth frame by one global rotation. Upstream estimates it once: for the first 50
validation models and every view, point-to-point ICP (open3d, maximum correspondence distance 0.2,
translation allowed, no scaling) from the predicted cloud to the ground truth, initialised with
``R(q̄_gt ⊗ q_pred)``; per model the 2 views with the lowest inlier RMSE, then the 15 models with
the lowest mean RMSE; the ≤ 30 rotations are averaged with Markley's method (top eigenvector of ``Σ
q qᵀ``, ``w ≥ 0``). The result ``q_ref`` is applied as ``P ← q_ref ⊗ P ⊗ q̄_ref`` and ``q ← q ⊗
q̄_ref``.

Here ICP runs in torch (nearest neighbours from a k-d tree on the CPU, brute force in chunks
elsewhere; Kabsch/Umeyama without scale);
``max_points`` subsamples both clouds (a fixed random subset) to bound its cost, a documented
deviation (``model.icp_num_points=null`` uses every point, as upstream).

Two fixes (ours): a view whose ICP ends without inliers reports an infinite RMSE (so it is never
selected) instead of the RMSE of an earlier iteration; and ``consensus_deg`` (default 30°; ``None``
is upstream's plain average) averages only the largest group of selected rotations that agree
within that angle. A car's silhouette is nearly front/back symmetric, so ICP of a view whose pose
is flipped converges, with a low RMSE, to a rotation 120-170° from the others; Markley's average
of such a mix lies tens of degrees from both groups (36° for 7 rotations with 5 others 160° away).
An exact 180° group is orthogonal in quaternion space and does not move the average; a near-180°
group does, and the consensus drops it.

The consensus keeps the *largest* group, and when a quarter to a third of the views are flipped
the flipped group can be the largest among the ≤ 30 selected rotations (the demo study's
evaluations landed on it in 5 of 9 runs, median error ~170° where the best single rotation gave
11-17°). ``vote_threshold_deg`` (ours; ``None``: off) chooses the group instead by the
validation poses themselves: each selected rotation is scored by the share of the collected
validation views whose aligned pose is within the threshold of the truth, and the consensus
average is taken around the best one. It uses the validation split's ground-truth poses, which
the ICP initialisation uses already, and never the test views.
"""

from __future__ import annotations

from math import inf

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from occaist.geometry.quaternion import (
    quaternion_conjugate,
    quaternion_multiply,
    quaternion_normalize,
    quaternion_rotate,
    quaternion_to_rotation_matrix,
    rotation_matrix_to_quaternion,
)
from occaist.metrics.pose import quaternion_angle_deg

__all__ = [
    "AlignmentCollector",
    "apply_alignment",
    "consensus_average",
    "icp_rotation",
    "icp_view_rotations",
    "markley_average",
    "nearest_neighbours",
    "select_alignment_rotations",
    "vote_alignment",
]


def nearest_neighbours(
    source: Tensor, target: Tensor, max_elements: int = 2**24
) -> tuple[Tensor, Tensor]:
    """Nearest target point of every source point: distances ``(N,)`` and indices ``(N,)``.

    On the CPU a k-d tree (scipy) answers the queries; elsewhere brute-force ``cdist`` in chunks
    of ``max_elements`` distances. Both are exact."""
    if source.device.type == "cpu":
        from scipy.spatial import cKDTree

        dist, idx = cKDTree(target.detach().numpy()).query(source.detach().numpy())
        return torch.from_numpy(dist).to(source.dtype), torch.from_numpy(idx).long()
    chunk = max(1, max_elements // max(target.shape[0], 1))
    dists, idx = [], []
    for start in range(0, source.shape[0], chunk):
        block = torch.cdist(source[start : start + chunk], target)
        d, i = block.min(dim=1)
        dists.append(d)
        idx.append(i)
    return torch.cat(dists), torch.cat(idx)


def _kabsch(src: Tensor, dst: Tensor) -> tuple[Tensor, Tensor]:
    """Rotation R and translation t minimising ``Σ ‖R·src + t − dst‖²`` (no scaling)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    cov = (dst - mu_d).T @ (src - mu_s)  # (3, 3)
    u, _, vh = torch.linalg.svd(cov)
    sign = torch.sign(torch.linalg.det(u @ vh))
    fix = torch.diag(torch.stack([torch.ones_like(sign), torch.ones_like(sign), sign]))
    rot = u @ fix @ vh
    return rot, mu_d - rot @ mu_s


def icp_rotation(
    source: Tensor,
    target: Tensor,
    init: Tensor,
    max_correspondence: float = 0.2,
    iterations: int = 30,
    tolerance: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """Point-to-point ICP from ``source`` ``(N, 3)`` to ``target`` ``(M, 3)``.

    Args:
        init: initial rotation quaternion ``(4,)`` (translation starts at 0).
        max_correspondence: pairs farther apart are not used (open3d's ``max_correspondence``).
        iterations: maximum iterations; stops early when the inlier RMSE changes less than
            ``tolerance``.

    Returns:
        the rotation quaternion ``(4,)`` (``w ≥ 0``) and the final inlier RMSE (scalar; ``inf``
        without inliers), as open3d's ``transformation`` / ``inlier_rmse``.
    """
    source = source.double()
    target = target.double()
    rot = quaternion_to_rotation_matrix(init.double())
    trans = source.new_zeros(3)
    rmse = source.new_tensor(float("inf"))
    for _ in range(iterations):
        moved = source @ rot.T + trans
        dist, idx = nearest_neighbours(moved, target)
        inlier = dist < max_correspondence
        if int(inlier.sum()) < 3:
            break
        new_rmse = dist[inlier].pow(2).mean().sqrt()
        rot, trans = _kabsch(source[inlier], target[idx[inlier]])
        converged = bool((rmse - new_rmse).abs() < tolerance)
        rmse = new_rmse
        if converged:
            break
    moved = source @ rot.T + trans
    dist, _ = nearest_neighbours(moved, target)
    inlier = dist < max_correspondence
    rmse = dist[inlier].pow(2).mean().sqrt() if int(inlier.sum()) > 0 else rmse.new_tensor(inf)
    return rotation_matrix_to_quaternion(rot).float(), rmse.float()


def icp_view_rotations(
    points: Tensor,
    poses: Tensor,
    gt_points: Tensor,
    gt_poses: Tensor,
    max_correspondence: float = 0.2,
    iterations: int = 30,
    num_points: int | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """ICP of every view of one model: rotations ``(V, 4)`` and inlier RMSEs ``(V,)``.

    Args:
        points: the model's predicted clouds ``(V, N, 3)`` (raw, unaligned).
        poses: its raw predicted poses ``(V, 4)``; each view starts at ``R(q̄_gt ⊗ q_pred)``.
        gt_points: its ground-truth cloud ``(M, 3)``.
        gt_poses: its ground-truth poses ``(V, 4)``.
        num_points: a fixed random subset of this many points of each cloud (None: all).
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    target = _subset(gt_points, num_points, generator)
    rotations, rmse = [], []
    for view in range(points.shape[0]):
        source = _subset(points[view], num_points, generator)
        init = quaternion_multiply(quaternion_conjugate(gt_poses[view]), poses[view])
        rot, err = icp_rotation(source, target, init, max_correspondence, iterations)
        rotations.append(rot)
        rmse.append(err)
    return torch.stack(rotations), torch.stack(rmse)


def _subset(points: Tensor, count: int | None, generator: torch.Generator) -> Tensor:
    if count is None or points.shape[0] <= count:
        return points
    idx = torch.randperm(points.shape[0], generator=generator)[:count].to(points.device)
    return points[idx]


def markley_average(quaternions: Tensor) -> Tensor:
    """Average rotation of quaternions ``(n, 4)``: top eigenvector of ``Σ q qᵀ`` with ``w ≥ 0``.

    Sign-invariant (q and −q contribute the same outer product), Markley et al. 2007.
    """
    q = quaternion_normalize(quaternions.double())
    eigvals, eigvecs = torch.linalg.eigh(q.T @ q)
    mean = eigvecs[:, eigvals.argmax()]
    return (mean if mean[0] >= 0 else -mean).float()


def _pairwise_angles_deg(q: Tensor) -> Tensor:
    """``(n, n)`` rotation angles in degrees between unit quaternions ``(n, 4)`` (sign-free)."""
    return 2.0 * torch.rad2deg(torch.acos((q @ q.T).abs().clamp(max=1.0)))


def consensus_average(quaternions: Tensor, consensus_deg: float | None = 30.0) -> Tensor:
    """Markley average of the largest group of ``quaternions`` ``(n, 4)`` within
    ``consensus_deg`` of one of them (ties: the group with the smaller spread); ``None``: all."""
    if consensus_deg is None or quaternions.shape[0] <= 2:
        return markley_average(quaternions)
    q = quaternion_normalize(quaternions.double())
    angles = _pairwise_angles_deg(q)  # (n, n)
    close = angles < consensus_deg
    counts = close.sum(dim=1)
    spread = torch.where(close, angles, torch.zeros_like(angles)).sum(dim=1)
    best = int(torch.argmax(counts.double() * 1e6 - spread))
    return markley_average(q[close[best]])


def vote_alignment(
    selected: Tensor, poses: Tensor, gt: Tensor, threshold_deg: float, consensus_deg: float | None
) -> Tensor:
    """Ours: the global rotation that makes the most validation poses right.

    Args:
        selected: ``(k, 4)`` candidate rotations (the selected ICP rotations).
        poses: ``(n, 4)`` raw predicted poses of the validation views.
        gt: ``(n, 4)`` their ground-truth poses.
        threshold_deg: a view counts as right when its aligned pose ``q ⊗ q̄_ref`` is within
            this angle of the truth.
        consensus_deg: the average is taken over the selected rotations within this angle of
            the winner (``None``: the winner alone).

    Returns:
        ``(4,)``; ties between candidates go to the one with more selected rotations near it.
    """
    q = quaternion_normalize(selected.double())
    p, g = quaternion_normalize(poses.double()), quaternion_normalize(gt.double())
    aligned = quaternion_multiply(p[None], quaternion_conjugate(q)[:, None].expand(-1, len(p), 4))
    right = (quaternion_angle_deg(aligned, g[None].expand_as(aligned)) < threshold_deg).double()
    near = _pairwise_angles_deg(q) < (consensus_deg if consensus_deg is not None else 1e-6)
    best = int(torch.argmax(right.mean(dim=1) * 1e3 + near.sum(dim=1)))
    return markley_average(q[near[best] | (torch.arange(len(q), device=q.device) == best)])


def select_alignment_rotations(
    model_rmse: Tensor, model_rotations: Tensor, top_views: int = 2, top_models: int = 15
) -> Tensor:
    """Upstream's selection: per model the ``top_views`` views of lowest RMSE, then the
    ``top_models`` models of lowest mean RMSE over those; NaN / inf entries dropped.

    Args:
        model_rmse: ``(n_models, V)`` inlier RMSE per view.
        model_rotations: ``(n_models, V, 4)`` ICP rotations.

    Returns:
        the selected rotations ``(k, 4)`` (possibly empty).
    """
    rmse = torch.nan_to_num(model_rmse.double(), nan=float("inf"))
    order = rmse.argsort(dim=1)[:, :top_views]  # (n, top_views)
    best_rmse = rmse.gather(1, order)
    best_rot = model_rotations.gather(1, order[..., None].expand(-1, -1, 4))
    model_score = best_rmse.mean(dim=1)
    chosen = model_score.argsort()[:top_models]
    rot = best_rot[chosen].reshape(-1, 4)
    ok = torch.isfinite(best_rmse[chosen].reshape(-1)) & torch.isfinite(rot).all(-1)
    return rot[ok]


def apply_alignment(
    points: Tensor | None, quaternions: Tensor | None, reference: Tensor
) -> tuple[Tensor | None, Tensor | None]:
    """``P ← q_ref ⊗ P ⊗ q̄_ref`` for clouds ``(..., N, 3)`` and ``q ← q ⊗ q̄_ref`` ``(..., 4)``."""
    ref = reference.to(
        points.dtype if points is not None else quaternions.dtype  # type: ignore[union-attr]
    )
    if points is not None:
        points = quaternion_rotate(points, ref.expand(*points.shape[:-2], 4))
    if quaternions is not None:
        quaternions = quaternion_multiply(quaternions, quaternion_conjugate(ref))
    return points, quaternions


class AlignmentCollector(Metric):
    """Collects per-model ICP results of validation models and averages them into ``q_ref``.

    ``update(model_index, rmse, rotations)`` with ``(B,)``, ``(B, V)``, ``(B, V, 4)``; states are
    "cat" (gathered across DDP ranks, so every rank computes the same ``q_ref``). ``compute()``
    returns ``(4,)``: the :func:`consensus_average` of :func:`select_alignment_rotations` (with
    ``vote_threshold_deg`` and the views' ``poses`` and ``gt`` ``(B, V, 4)`` given to ``update``,
    the :func:`vote_alignment` of them), or the identity when nothing was collected.
    """

    full_state_update = False

    def __init__(
        self,
        top_views: int = 2,
        top_models: int = 15,
        consensus_deg: float | None = 30.0,
        vote_threshold_deg: float | None = None,
    ) -> None:
        super().__init__()
        self.top_views = top_views
        self.top_models = top_models
        self.consensus_deg = consensus_deg
        self.vote_threshold_deg = vote_threshold_deg
        for name in ("model_index", "rmse", "rotations", "poses", "gt"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        model_index: Tensor,
        rmse: Tensor,
        rotations: Tensor,
        poses: Tensor | None = None,
        gt: Tensor | None = None,
    ) -> None:
        # states are kept 1D so that ranks without any update gather cleanly (empty tensors)
        self.model_index.append(model_index.reshape(-1).long())
        self.rmse.append(rmse.float().reshape(-1))
        self.rotations.append(rotations.float().reshape(-1))
        if poses is not None and gt is not None:
            self.poses.append(poses.float().reshape(-1))
            self.gt.append(gt.float().reshape(-1))

    def compute(self) -> Tensor:
        identity = torch.tensor([1.0, 0.0, 0.0, 0.0], device=self.device)
        index = dim_zero_cat(self.model_index) if len(self.model_index) else None
        if index is None or index.numel() == 0:
            return identity
        index = index.long()
        rmse = dim_zero_cat(self.rmse).reshape(index.shape[0], -1)
        rotations = dim_zero_cat(self.rotations).reshape(index.shape[0], -1, 4)
        order = index.argsort()  # the same, rank-independent order of models
        selected = select_alignment_rotations(
            rmse[order], rotations[order], self.top_views, self.top_models
        )
        if selected.shape[0] == 0:
            return identity
        if self.vote_threshold_deg is not None and len(self.poses):
            poses = dim_zero_cat(self.poses).reshape(-1, 4)
            gt = dim_zero_cat(self.gt).reshape(-1, 4)
            if poses.shape == gt.shape and poses.numel():
                return vote_alignment(
                    selected, poses, gt, self.vote_threshold_deg, self.consensus_deg
                ).to(identity.device)
        return consensus_average(selected, self.consensus_deg).to(identity.device)
