"""Result files in the formats of the field, written atomically.

* :func:`write_ply` -- a point cloud as binary little-endian PLY (``float x, y, z``), readable
  by Open3D, MeshLab, CloudCompare, trimesh and plyfile.
* :func:`coco_images` / :func:`coco_keypoint_result` -- the COCO keypoint *results* format
  (a list of ``{"image_id", "category_id", "keypoints": [x, y, v] * K, "score"}``) and the image
  list it refers to, so that ``COCO(images_json).loadRes(results_json)`` works (pycocotools only
  accepts results whose ``image_id`` exists in the ground truth it is given).
* :func:`bop_csv_row` / :data:`BOP_HEADER` -- the BOP challenge results CSV
  (``scene_id,im_id,obj_id,score,R,t,time``; ``R`` nine row-major values and ``t`` three values in
  millimetres, each separated by spaces; ``time`` in seconds, -1 when unknown).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from occaist.data.keypoints import KEYPOINT_NAMES, OCCLUDED, SKELETON, VISIBLE
from occaist.utils.io import atomic_write, write_text_atomic

#: The category every Occlusion-Net detection belongs to.
CAR_CATEGORY_ID = 1
BOP_HEADER = "scene_id,im_id,obj_id,score,R,t,time"


def ply_bytes(points: np.ndarray) -> bytes:
    """Binary little-endian PLY of ``points`` ``(N, 3)`` (float32 vertices, no faces)."""
    points = np.ascontiguousarray(np.asarray(points, dtype="<f4").reshape(-1, 3))
    header = (
        "ply\n"
        "format binary_little_endian 1.0\n"
        "comment occaist predicted point cloud\n"
        f"element vertex {len(points)}\n"
        "property float x\n"
        "property float y\n"
        "property float z\n"
        "end_header\n"
    )
    return header.encode("ascii") + points.tobytes()


def write_ply(path: str | os.PathLike, points: np.ndarray) -> None:
    """Write ``points`` ``(N, 3)`` to ``path`` as binary PLY (:func:`ply_bytes`)."""
    data = ply_bytes(points)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_png(path: str | os.PathLike, image: np.ndarray | Image.Image) -> None:
    """Write an ``(H, W, 3|4)`` uint8 array (or a PIL image) as PNG, atomically."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


def coco_categories() -> list[dict[str, Any]]:
    """The one COCO category, ``car``, with the 14 keypoint names and the 1-based skeleton."""
    return [
        {
            "id": CAR_CATEGORY_ID,
            "name": "car",
            "supercategory": "vehicle",
            "keypoints": list(KEYPOINT_NAMES),
            "skeleton": [[a + 1, b + 1] for a, b in SKELETON],
        }
    ]


def coco_images(images: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A COCO ground-truth skeleton (``images``, ``categories``, no annotations) for the
    predicted images: ``images`` holds ``{"id", "file_name", "width", "height"}`` each."""
    return {
        "info": {"description": "images predicted by occaist.predict (no annotations)"},
        "images": list(images),
        "annotations": [],
        "categories": coco_categories(),
    }


def coco_keypoint_result(
    image_id: int,
    keypoints: np.ndarray,
    visibility: np.ndarray,
    score: float,
    box: np.ndarray,
    threshold: float = 0.5,
    keypoint_scores: np.ndarray | None = None,
) -> dict[str, Any]:
    """One detection in the COCO keypoint results format.

    Args:
        image_id: the image's id in :func:`coco_images`.
        keypoints: ``(K, 2)`` pixels (x, y) in the original image.
        visibility: ``(K,)`` predicted probability that each keypoint is visible.
        score: detection confidence.
        box: ``(4,)`` x1, y1, x2, y2 pixels; written as COCO ``bbox`` ``[x, y, w, h]``.
        threshold: visibility probability from which ``v`` is 2 (visible), else 1 (occluded).
        keypoint_scores: optional ``(K,)`` heatmap confidences, kept as an extra field.

    ``v`` uses the COCO codes (2 visible, 1 labelled but occluded); the probabilities are kept in
    the extra field ``keypoint_visibility`` (pycocotools carries extra fields through).
    """
    codes = np.where(np.asarray(visibility) >= threshold, VISIBLE, OCCLUDED)
    flat: list[float] = []
    for (x, y), v in zip(np.asarray(keypoints, dtype=float), codes):
        flat += [round(float(x), 2), round(float(y), 2), int(v)]
    x1, y1, x2, y2 = (float(c) for c in box)
    result = {
        "image_id": int(image_id),
        "category_id": CAR_CATEGORY_ID,
        "keypoints": flat,
        "score": round(float(score), 5),
        "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
        "keypoint_visibility": [round(float(p), 4) for p in visibility],
    }
    if keypoint_scores is not None:
        result["keypoint_scores"] = [round(float(s), 4) for s in keypoint_scores]
    return result


def _numbers(values: np.ndarray, digits: int) -> str:
    return " ".join(f"{float(v):.{digits}f}" for v in np.asarray(values).reshape(-1))


def bop_csv_row(
    scene_id: int,
    im_id: int,
    obj_id: int,
    score: float,
    rotation: np.ndarray,
    translation_mm: np.ndarray,
    time_s: float = -1.0,
) -> str:
    """One BOP results line; ``rotation`` ``(3, 3)`` maps model to camera coordinates and
    ``translation_mm`` ``(3,)`` is in millimetres."""
    rotation = np.asarray(rotation, dtype=float).reshape(3, 3)
    return (
        f"{int(scene_id)},{int(im_id)},{int(obj_id)},{float(score):.6f},"
        f"{_numbers(rotation, 8)},{_numbers(translation_mm, 4)},{float(time_s):.4f}"
    )


def write_bop_csv(path: str | os.PathLike, rows: Sequence[str]) -> None:
    """The header line and ``rows`` (from :func:`bop_csv_row`) to ``path``."""
    write_text_atomic(path, "\n".join([BOP_HEADER, *rows]) + "\n")


def output_path(root: Path, kind: str, key: str, suffix: str) -> Path:
    """``root/<kind>/<key><suffix>``: every output of one image shares its key."""
    return root / kind / f"{key}{suffix}"
