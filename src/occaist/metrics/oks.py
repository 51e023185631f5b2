"""COCO keypoint AP (object keypoint similarity) of car keypoints through pycocotools.

``COCOeval(iouType="keypoints")`` defaults to the 17 sigmas of the COCO person keypoints; cars
need one per keypoint. No annotator study exists for CarFusion's 14 keypoints, so
:data:`CAR_OKS_SIGMAS` is our choice: 0.107 (the largest COCO person sigma, the hips;
for well-localised but large-scale points) for the wheels, lights and roof corners, and 0.15 for
the exhaust and centre, whose positions are loosely defined. Pass ``sigmas`` to use others.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["CAR_OKS_SIGMAS", "STAT_NAMES", "coco_keypoint_ap"]

CAR_OKS_SIGMAS: tuple[float, ...] = (0.107,) * 8 + (0.15,) + (0.107,) * 4 + (0.15,)
"""Per-keypoint OKS sigmas of the 14 CarFusion keypoints (order of ``KEYPOINT_NAMES``)."""

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
"""The ten numbers of ``COCOeval.stats`` for keypoints, in order."""


def coco_keypoint_ap(
    gt: dict[str, Any],
    detections: list[dict[str, Any]],
    sigmas: Sequence[float] = CAR_OKS_SIGMAS,
) -> dict[str, float]:
    """COCO keypoint AP/AR of ``detections`` against the COCO dict ``gt``.

    Args:
        gt: a COCO keypoint dataset (``images``, ``annotations`` with ``keypoints``, ``area``,
            ``bbox``, ``num_keypoints``; ``categories``).
        detections: COCO results, ``{"image_id", "category_id", "keypoints": [x, y, v] * K,
            "score"}`` each.
        sigmas: one OKS sigma per keypoint.

    Returns:
        ``{name: value}`` for :data:`STAT_NAMES` (``-1`` where pycocotools finds nothing to score).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    n_kp = len(gt["categories"][0]["keypoints"])
    if len(sigmas) != n_kp:
        raise ValueError(f"{len(sigmas)} OKS sigmas for {n_kp} keypoints")
    if not detections:
        return {name: 0.0 for name in STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.dataset.setdefault("info", {})
        coco_gt.dataset.setdefault("licenses", [])
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats, strict=True)}
