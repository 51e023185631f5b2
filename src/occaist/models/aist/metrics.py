"""AIST's validation and test metrics: mask IoU, FID/KID (ResNet-18), stylisation samples.

The stylisation measures themselves (two-sample AUC, colour correlation, alpha IoU) live in
:mod:`occaist.evaluation.stylisation`; :class:`StylisationSamples` only keeps the images they
need during a validation epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from occaist.evaluation.stylisation import ClassifierBudget, stylisation_measures, to_uint8
from occaist.models.aist.losses import PooledFeatures, resnet18_trunk
from occaist.utils.logging import RankedLogger
from occaist.utils.weights import MissingWeightsError, resolve_weights_path

log = RankedLogger(__name__)


def mask_iou(mask_a: Tensor, mask_b: Tensor) -> Tensor:
    """Per-image IoU of two boolean masks (B, 1, H, W) -> (B,); 1 where both are empty."""
    inter = (mask_a & mask_b).flatten(1).sum(1).float()
    union = (mask_a | mask_b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def build_fid_metrics(weights: str | None, kid_subset_size: int) -> dict[str, Any]:
    """``{"val": {"fid", "kid"}, "test": {...}}`` on ResNet-18 pooled features, or ``{}`` when
    ``weights`` is ``None`` or missing (a warning). Not comparable with Inception FID."""
    if weights is None:
        return {}
    try:
        resolve_weights_path("resnet18", weights)
    except MissingWeightsError as err:
        log.warning("FID/KID disabled: %s", err)
        return {}
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    features = PooledFeatures(resnet18_trunk(weights))
    return {
        split: {
            "fid": FrechetInceptionDistance(feature=features, reset_real_features=True),
            "kid": KernelInceptionDistance(feature=features, subset_size=kid_subset_size),
        }
        for split in ("val", "test")
    }


def compute_fid(metrics: dict[str, Any]) -> dict[str, Tensor]:
    """``fid_resnet18`` (and ``kid_resnet18`` when enough fakes were seen); resets both."""
    fid, kid = metrics["fid"], metrics["kid"]
    out = {"fid_resnet18": fid.compute()}
    seen = int(sum(t.shape[0] for t in kid.fake_features)) if kid.fake_features else 0
    if seen >= kid.subset_size:
        out["kid_resnet18"] = kid.compute()[0]
    fid.reset()
    kid.reset()
    return out


class StylisationSamples:
    """Up to ``capacity`` (render, G(render), real segment) triples of an epoch, as uint8.

    Renders and segments are identified by the batch's ``A_index`` / ``B_index``: a validation
    set repeats its real segments when it has fewer than renders, and a repeated image in both
    folds of the two-sample test would inflate its AUC, so each is measured once.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.kept: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]] = []

    def full(self) -> bool:
        return len(self.kept) >= self.capacity

    def add(self, batch: dict[str, Any], x: Tensor, fake_y: Tensor, y: Tensor) -> None:
        if self.full():
            return
        xs, fakes, ys = to_uint8(x), to_uint8(fake_y), to_uint8(y)
        start = len(self.kept)
        a_idx = batch.get("A_index", torch.arange(len(xs)) + start)
        b_idx = batch.get("B_index", torch.arange(len(xs)) + start)
        for i in range(min(len(xs), self.capacity - start)):
            self.kept.append((int(a_idx[i]), int(b_idx[i]), xs[i], fakes[i], ys[i]))

    def measure(self, budget: ClassifierBudget) -> dict[str, float]:
        """The stylisation measures of the kept images; forgets them."""
        kept, self.kept = self.kept, []
        renders = {a: (x, fake) for a, _, x, fake, _ in kept}
        segments = {b: y for _, b, _, _, y in kept}
        if not renders:
            return {}
        x, fake = (np.stack(part) for part in zip(*renders.values(), strict=True))
        return stylisation_measures(x, fake, np.stack(list(segments.values())), budget)
