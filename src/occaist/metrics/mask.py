"""Mask XOR: disagreement between a rendered silhouette and a reference mask (thesis 6.2).

For each image, the number of pixels where the predicted and the reference (real) mask differ,
divided by the number of reference-mask pixels. 0 is a perfect match; values above 1 are possible.
The thesis plots the CDF of this ratio over real images.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["MaskXOR", "mask_xor"]


def mask_xor(pred: Tensor, reference: Tensor, threshold: float = 0.5) -> Tensor:
    """Per-image XOR ratio of masks ``(..., H, W)`` (bool, or soft values cut at ``threshold``).

    Returns ``(...)``: ``|pred ⊕ reference| / |reference|`` (``inf`` where the reference is
    empty but the prediction is not, ``nan`` where both are empty).

    >>> ref = torch.zeros(4, 4, dtype=torch.bool); ref[:2] = True
    >>> mask_xor(ref.clone(), ref), mask_xor(torch.ones(4, 4, dtype=torch.bool), ref)
    (tensor(0.), tensor(1.))
    """
    p = pred if pred.dtype == torch.bool else pred > threshold
    r = reference if reference.dtype == torch.bool else reference > threshold
    disagree = (p ^ r).flatten(-2).sum(-1).float()
    return disagree / r.flatten(-2).sum(-1).float()


class MaskXOR(Metric):
    """Mean mask XOR ratio over images; ``values()`` gives every image's ratio (for CDF plots).

    ``update(pred, reference)`` takes masks ``(B, H, W)``. Ratios are "cat" states, gathered
    across DDP ranks.
    """

    full_state_update = False

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = threshold
        self.add_state("ratios", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, reference: Tensor) -> None:
        self.ratios.append(mask_xor(pred, reference, self.threshold).reshape(-1))

    def values(self) -> Tensor:
        """All ratios seen so far on this process (call after ``compute()`` for all ranks)."""
        return dim_zero_cat(self.ratios) if self.ratios else torch.zeros(0)

    def compute(self) -> Tensor:
        return dim_zero_cat(self.ratios).mean()
