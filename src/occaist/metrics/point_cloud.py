"""Chamfer precision and coverage of predicted point clouds (DPC ``eval_chamfer.py``).

Distances are **Euclidean, not squared**: precision ``= mean_{x∈P} min_{y∈G} ‖x − y‖₂`` (how close
predicted points lie to the ground truth), coverage ``= mean_{y∈G} min_{x∈P} ‖y − x‖₂`` (how well
the ground truth is covered); the Chamfer distance is their sum. DPC reports them ×100, averaged
over the views of a model, then over models. Pairwise distances are computed in chunks so that
8000 × 100k points fit in a bounded amount of memory.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["ChamferDistance", "chamfer_distance", "nearest_distances"]

#: Pairwise distances held in memory at once (elements of one chunk's distance matrix).
DEFAULT_MAX_ELEMENTS = 2**24


def nearest_distances(
    source: Tensor, target: Tensor, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> Tensor:
    """For every point of ``source`` ``(N, 3)`` the Euclidean distance to its nearest point in
    ``target`` ``(M, 3)``; returns ``(N,)``. Chunked over ``source`` (``max_elements`` distances
    per chunk); exact differences, not the ``|a|² + |b|² − 2ab`` shortcut."""
    if target.shape[0] == 0:
        raise ValueError("nearest_distances: the target cloud is empty")
    chunk = max(1, max_elements // max(target.shape[0], 1))
    out = []
    for start in range(0, source.shape[0], chunk):
        block = torch.cdist(
            source[start : start + chunk],
            target,
            compute_mode="donot_use_mm_for_euclid_dist",
        )
        out.append(block.amin(dim=1))
    return torch.cat(out) if out else source.new_zeros(0)


def chamfer_distance(
    pred: Tensor, gt: Tensor, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> tuple[Tensor, Tensor]:
    """Precision and coverage of ``pred`` ``(N, 3)`` against ``gt`` ``(M, 3)`` (scalars), or of
    each item of ``pred`` ``(B, N, 3)`` against ``gt`` ``(M, 3)`` or ``(B, M, 3)`` (``(B,)`` each).

    Not scaled: multiply by 100 for the DPC tables.

    >>> x = torch.rand(50, 3)
    >>> chamfer_distance(x, x)
    (tensor(0.), tensor(0.))
    """
    if pred.dim() == 2:
        if gt.dim() != 2:
            raise ValueError(f"pred (N, 3) needs gt (M, 3), got {tuple(gt.shape)}")
        precision = nearest_distances(pred, gt, max_elements).mean()
        coverage = nearest_distances(gt, pred, max_elements).mean()
        return precision, coverage
    if gt.dim() == 2:
        gt = gt.expand(pred.shape[0], *gt.shape)
    pairs = [chamfer_distance(p, g, max_elements) for p, g in zip(pred, gt, strict=True)]
    return torch.stack([p for p, _ in pairs]), torch.stack([c for _, c in pairs])


class ChamferDistance(Metric):
    """Mean Chamfer precision, coverage and their sum over models (optionally ×``scale``).

    ``update(pred, gt)`` takes one model's predictions ``(V, N, 3)`` (V views, averaged first,
    as upstream) or ``(N, 3)``, and its ground truth ``(M, 3)``; M differs between models, so
    models are passed one at a time. Per-model values are kept as "cat" states, which
    torchmetrics gathers across DDP ranks, so the mean over models is exact.

    ``compute()`` returns ``{"precision", "coverage", "chamfer"}`` (means over models, ×scale).
    """

    full_state_update = False

    def __init__(self, scale: float = 100.0, max_elements: int = DEFAULT_MAX_ELEMENTS) -> None:
        super().__init__()
        self.scale = scale
        self.max_elements = max_elements
        self.add_state("precision", default=[], dist_reduce_fx="cat")
        self.add_state("coverage", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, gt: Tensor) -> None:
        """Add one model: ``pred`` ``(V, N, 3)`` or ``(N, 3)``, ``gt`` ``(M, 3)``."""
        pred = pred if pred.dim() == 3 else pred[None]
        precision, coverage = chamfer_distance(pred, gt.to(pred.dtype), self.max_elements)
        self.precision.append(precision.mean().reshape(1))
        self.coverage.append(coverage.mean().reshape(1))

    def compute(self) -> dict[str, Tensor]:
        precision = dim_zero_cat(self.precision).mean() * self.scale
        coverage = dim_zero_cat(self.coverage).mean() * self.scale
        return {"precision": precision, "coverage": coverage, "chamfer": precision + coverage}
