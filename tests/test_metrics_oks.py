"""COCO keypoint AP of cars against OKS values computed by hand.

Each car has all 14 keypoints visible and area A = 3600 (a medium object for COCO). Shifting every
keypoint by d pixels gives OKS = mean_k exp(−d² / (2·A·(2σ_k)²)); with one detection per car and
every car at the same OKS, AP at IoU threshold τ is 1 when OKS ≥ τ and 0 otherwise.
"""

from __future__ import annotations

import copy
import math

import pytest

from occaist.metrics.oks import CAR_OKS_SIGMAS, STAT_NAMES, coco_keypoint_ap

AREA = 3600.0


def _dataset(n_images: int = 3) -> dict:
    names = [f"kp{i}" for i in range(14)]
    images, annotations = [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "width": 200, "height": 200, "file_name": f"{i}.png"})
        keypoints = []
        for k in range(14):
            keypoints += [40.0 + 4 * k + i, 60.0 + 3 * (k % 5), 2]
        annotations.append(
            {
                "id": 10 + i,
                "image_id": i,
                "category_id": 1,
                "keypoints": keypoints,
                "num_keypoints": 14,
                "area": AREA,
                "bbox": [40.0, 50.0, 60.0, 60.0],
                "iscrowd": 0,
            }
        )
    categories = [{"id": 1, "name": "car", "keypoints": names, "skeleton": [[1, 2]]}]
    return {"images": images, "annotations": annotations, "categories": categories}


def _detections(gt: dict, shift: float) -> list[dict]:
    return [
        {
            "image_id": a["image_id"],
            "category_id": 1,
            "keypoints": [v + shift * (i % 3 == 0) for i, v in enumerate(a["keypoints"])],
            "score": 0.9,
        }
        for a in gt["annotations"]
    ]


def _oks(shift: float, sigmas) -> float:
    return sum(math.exp(-(shift**2) / (2 * AREA * (2 * s) ** 2)) for s in sigmas) / len(sigmas)


def test_exact_detections_score_1_and_stats_keep_coco_order() -> None:
    gt = _dataset()
    before = copy.deepcopy(gt)
    detections = _detections(gt, 0.0)
    detections_before = copy.deepcopy(detections)
    stats = coco_keypoint_ap(gt, detections)
    assert detections == detections_before  # pycocotools adds fields to a copy only
    assert list(stats) == list(STAT_NAMES)
    assert stats["AP"] == pytest.approx(1.0)
    assert stats["AP75"] == pytest.approx(1.0)
    assert stats["APm"] == pytest.approx(1.0)
    assert stats["APl"] == -1.0  # no large car: pycocotools reports -1
    assert stats["AR"] == pytest.approx(1.0)
    assert gt == before  # the caller's dict is not touched


def test_shifted_keypoints_score_by_their_oks_under_the_given_sigmas() -> None:
    gt = _dataset()
    shift = 12.0
    car = _oks(shift, CAR_OKS_SIGMAS)
    assert 0.5 < car < 0.75  # 0.67: counted at IoU 0.5, not at 0.75
    stats = coco_keypoint_ap(gt, _detections(gt, shift))
    assert stats["AP50"] == pytest.approx(1.0)
    assert stats["AP75"] == pytest.approx(0.0)
    wide = (0.2,) * 14
    assert _oks(shift, wide) > 0.75
    assert coco_keypoint_ap(gt, _detections(gt, shift), sigmas=wide)["AP75"] == pytest.approx(1.0)


def test_no_detections_and_wrong_sigma_count() -> None:
    gt = _dataset(1)
    assert coco_keypoint_ap(gt, []) == {name: 0.0 for name in STAT_NAMES}
    with pytest.raises(ValueError, match="13 OKS sigmas for 14 keypoints"):
        coco_keypoint_ap(gt, _detections(gt, 0.0), sigmas=CAR_OKS_SIGMAS[:13])
