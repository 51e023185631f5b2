"""The thesis's segmentation filters as named rules, each with its parameter in config.

Chapter 3 rejects a Mask R-CNN segmentation when (section 3.1, "segmentation" stage):

1. ``label``     -- its predicted label is not in {car, truck};
2. ``score``     -- its confidence is below 0.7;
3. ``box_size``  -- the square root of its (predicted) bounding-box area is below 128;
4. ``mask_fill`` -- mask area / predicted-bounding-box area is below 0.5;
5. ``grayscale`` -- the image is grayscale (an image-level rule, checked before segmenting);

and, after the first results (sections 3.2.2 and 3.2.3, "cleaning" stage), when

6. ``occlusion`` -- the mask has more than one connected component;
7. ``cropping``  -- more than a third of any 2%-wide border strip of the image is covered.

``zero_size_box`` (a box with no width or height) comes first: the ratios above are undefined
for it. The first failing rule, in this order, is the one recorded in ``rejections.csv``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

#: Stage names used in the report (the thesis's 16,185 -> 17,398 -> 14,092 counts).
SEGMENTATION_STAGE = "segmentation"
CLEANING_STAGE = "cleaning"


@dataclass
class LabelRule:
    """Rule 1: the predicted label must be one of ``allowed``."""

    enabled: bool = True
    allowed: list[str] = field(default_factory=lambda: ["car", "truck"])


@dataclass
class ScoreRule:
    """Rule 2: the detector's confidence must be at least ``min``."""

    enabled: bool = True
    min: float = 0.7


@dataclass
class BoxSizeRule:
    """Rule 3: ``sqrt(box area)`` must be at least ``min_sqrt_area`` (the renders' 128 px)."""

    enabled: bool = True
    min_sqrt_area: float = 128.0


@dataclass
class MaskFillRule:
    """Rule 4: mask area / predicted box area must be at least ``min``."""

    enabled: bool = True
    min: float = 0.5


@dataclass
class GrayscaleRule:
    """Rule 5: an image whose mean chroma ``mean(max(R,G,B) - min(R,G,B))`` is at most
    ``max_mean_chroma`` (0..255 units) is grayscale. A small tolerance catches grayscale photos
    stored as RGB JPEGs, whose chroma is not exactly zero after compression."""

    enabled: bool = True
    max_mean_chroma: float = 2.0


@dataclass
class OcclusionRule:
    """Rule 6: at most ``max_components`` connected components (``connectivity`` 4 or 8)."""

    enabled: bool = True
    max_components: int = 1
    connectivity: int = 8


@dataclass
class CroppingRule:
    """Rule 7: no border strip ``border_fraction`` of the image side wide may be covered by the
    mask over more than ``max_covered`` of its area (the thesis's "a third of a 2% border")."""

    enabled: bool = True
    border_fraction: float = 0.02
    max_covered: float = 1.0 / 3.0


@dataclass
class FilterConfig:
    """All rules; ``filters.<rule>.enabled=false`` switches one off."""

    label: LabelRule = field(default_factory=LabelRule)
    score: ScoreRule = field(default_factory=ScoreRule)
    box_size: BoxSizeRule = field(default_factory=BoxSizeRule)
    mask_fill: MaskFillRule = field(default_factory=MaskFillRule)
    grayscale: GrayscaleRule = field(default_factory=GrayscaleRule)
    occlusion: OcclusionRule = field(default_factory=OcclusionRule)
    cropping: CroppingRule = field(default_factory=CroppingRule)


@dataclass(frozen=True)
class Verdict:
    """Outcome of one rule: ``passed``, the measured ``value`` and the ``threshold`` used."""

    rule: str
    stage: str
    passed: bool
    value: float | str
    threshold: float | str


# ---- measurements (pure functions on masks, tested at their thresholds) ----------------------


def box_area(box: Sequence[float]) -> float:
    """Area of an ``(x0, y0, x1, y1)`` box in pixels (0 for degenerate boxes)."""
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def mean_chroma(rgb: np.ndarray) -> float:
    """``mean(max(R,G,B) - min(R,G,B))`` of a ``uint8`` image ``(H, W, 3)``.

    Element-wise maxima of the three channel planes: ~20x faster than reducing over the last
    axis of an interleaved image (numpy's small-axis reductions are slow).
    """
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    chroma = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)  # uint8, >= 0
    return float(chroma.mean())


def count_components(mask: np.ndarray, connectivity: int = 8) -> int:
    """Number of connected components of a boolean mask ``(H, W)``."""
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    _, n = ndimage.label(mask, structure=structure)
    return int(n)


def border_width(side: int, fraction: float) -> int:
    """Width in pixels of a ``fraction``-wide border strip of a side ``side`` (at least 1)."""
    return max(1, round(side * fraction))


def border_coverage(mask: np.ndarray, fraction: float) -> float:
    """Largest covered fraction over the four border strips of a full-image mask ``(H, W)``.

    The top and bottom strips are ``fraction * H`` rows high, the left and right strips
    ``fraction * W`` columns wide.
    """
    h, w = mask.shape
    bh, bw = border_width(h, fraction), border_width(w, fraction)
    strips = (mask[:bh], mask[h - bh :], mask[:, :bw], mask[:, w - bw :])
    return max(float(s.mean()) for s in strips)


# ---- the rules ---------------------------------------------------------------------------------


@dataclass
class CandidateView:
    """What the rules look at: label, score, predicted ``box`` (x0, y0, x1, y1) and the
    full-image boolean ``mask`` ``(H, W)``."""

    label: str
    score: float
    box: tuple[float, float, float, float]
    mask: np.ndarray


RuleFn = Callable[[CandidateView, FilterConfig], Verdict]


def _zero_size_box(c: CandidateView, cfg: FilterConfig) -> Verdict:
    area = box_area(c.box)
    return Verdict("zero_size_box", SEGMENTATION_STAGE, area > 0, area, 0.0)


def _label(c: CandidateView, cfg: FilterConfig) -> Verdict:
    allowed = list(cfg.label.allowed)
    return Verdict("label", SEGMENTATION_STAGE, c.label in allowed, c.label, "|".join(allowed))


def _score(c: CandidateView, cfg: FilterConfig) -> Verdict:
    return Verdict("score", SEGMENTATION_STAGE, c.score >= cfg.score.min, c.score, cfg.score.min)


def _box_size(c: CandidateView, cfg: FilterConfig) -> Verdict:
    side = math.sqrt(box_area(c.box))
    t = cfg.box_size.min_sqrt_area
    return Verdict("box_size", SEGMENTATION_STAGE, side >= t, side, t)


def _mask_fill(c: CandidateView, cfg: FilterConfig) -> Verdict:
    fill = float(np.count_nonzero(c.mask)) / box_area(c.box)
    return Verdict(
        "mask_fill", SEGMENTATION_STAGE, fill >= cfg.mask_fill.min, fill, cfg.mask_fill.min
    )


def _occlusion(c: CandidateView, cfg: FilterConfig) -> Verdict:
    n = count_components(c.mask, cfg.occlusion.connectivity)
    t = cfg.occlusion.max_components
    return Verdict("occlusion", CLEANING_STAGE, n <= t, float(n), float(t))


def _cropping(c: CandidateView, cfg: FilterConfig) -> Verdict:
    cov = border_coverage(c.mask, cfg.cropping.border_fraction)
    t = cfg.cropping.max_covered
    return Verdict("cropping", CLEANING_STAGE, cov <= t, cov, t)


#: Candidate rules in the order they are applied (``grayscale`` is image-level, see below).
CANDIDATE_RULES: dict[str, RuleFn] = {
    "zero_size_box": _zero_size_box,
    "label": _label,
    "score": _score,
    "box_size": _box_size,
    "mask_fill": _mask_fill,
    "occlusion": _occlusion,
    "cropping": _cropping,
}


def is_enabled(name: str, cfg: FilterConfig) -> bool:
    """``zero_size_box`` is always on (the other ratios are undefined without it)."""
    return name == "zero_size_box" or bool(getattr(cfg, name).enabled)


def check_candidate(c: CandidateView, cfg: FilterConfig) -> tuple[Verdict | None, list[Verdict]]:
    """Apply the enabled candidate rules in order.

    Returns:
        ``(first failing verdict or None, all verdicts computed up to and including it)``.
    """
    verdicts: list[Verdict] = []
    for name, fn in CANDIDATE_RULES.items():
        if not is_enabled(name, cfg):
            continue
        v = fn(c, cfg)
        verdicts.append(v)
        if not v.passed:
            return v, verdicts
    return None, verdicts


def check_grayscale(rgb: np.ndarray, cfg: FilterConfig) -> Verdict | None:
    """Rule 5 on a whole ``uint8`` image ``(H, W, 3)``; the failing verdict, or None."""
    if not cfg.grayscale.enabled:
        return None
    chroma = mean_chroma(rgb)
    t = cfg.grayscale.max_mean_chroma
    v = Verdict("grayscale", SEGMENTATION_STAGE, chroma > t, chroma, t)
    return None if v.passed else v


def rule_names() -> list[str]:
    """Every rule name ``rejections.csv`` can hold (image-level ``grayscale`` included)."""
    names = list(CANDIDATE_RULES)
    names.insert(names.index("occlusion"), "grayscale")
    return names


def as_dict(v: Verdict) -> dict[str, Any]:
    """A JSON-ready verdict."""
    return {
        "rule": v.rule,
        "stage": v.stage,
        "passed": v.passed,
        "value": v.value,
        "threshold": v.threshold,
    }
