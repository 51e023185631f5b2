"""The 14 CarFusion / Occlusion-Net vehicle keypoints: names, order, visibility, flip, skeleton.

The schema of the CarFusion format, so it lives with the format's reader; the synthetic world
writes the same schema by importing it from here.

Order and names follow ``VehicleKeypoints.NAMES`` of Occlusion-Net (index 0-13; CarFusion's
``kp_id`` in ``gt/*.txt`` is this index + 1). The paper evaluates 12 of them: all but the exhaust
(8) and the centre (13).

In the occaist car frame (x forward, y up, z to the car's right, right-handed) a left-right mirror
negates z (``LATERAL_AXIS``) and permutes the keypoints by ``FLIP_PERMUTATION``.
"""

from __future__ import annotations

KEYPOINT_NAMES: tuple[str, ...] = (
    "Right_Front_wheel",
    "Left_Front_wheel",
    "Right_Back_wheel",
    "Left_Back_wheel",
    "Right_Front_HeadLight",
    "Left_Front_HeadLight",
    "Right_Back_HeadLight",
    "Left_Back_HeadLight",
    "Exhaust",
    "Right_Front_Top",
    "Left_Front_Top",
    "Right_Back_Top",
    "Left_Back_Top",
    "Center",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)

FLIP_PERMUTATION: tuple[int, ...] = (1, 0, 3, 2, 5, 4, 7, 6, 8, 10, 9, 12, 11, 13)
"""``flipped[k] = keypoints[FLIP_PERMUTATION[k]]`` for a mirrored car or image."""

KEYPOINT_PARTS: tuple[int, ...] = (0, 0, 0, 0, 1, 1, 1, 1, -1, 2, 2, 2, 2, -1)
"""The part of each keypoint: 0 wheels, 1 headlights, 2 roof corners, -1 none (exhaust,
centre). A heatmap network's gross errors on a keypoint mostly land on another keypoint of the
same part (a wheel's map peaks on another wheel)."""

LATERAL_AXIS = 2
"""The object-frame axis that a left-right mirror negates (z, pointing to the car's right)."""

UNLABELLED, OCCLUDED, VISIBLE = 0, 1, 2
"""CarFusion / COCO visibility codes: 0 not labelled, 1 labelled but occluded, 2 visible."""

EVALUATED_KEYPOINTS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12)
"""The 12 keypoints of the paper's PCK (exhaust and centre excluded)."""

SKELETON: tuple[tuple[int, int], ...] = (
    (0, 2), (1, 3), (0, 1), (2, 3), (9, 11), (10, 12), (9, 10), (11, 12), (4, 0),
    (4, 9), (4, 5), (5, 1), (5, 10), (6, 2), (6, 11), (7, 3), (7, 12), (6, 7),
)  # fmt: skip
"""The 18 edges (0-based) of upstream's skeleton, as in its COCO JSON."""
