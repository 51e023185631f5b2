"""Convert raw CarFusion (``car_<seq>/gt/<cam>_<frame>.txt``) to COCO-keypoint JSON.

Same content as the official ``carfusion_to_coco`` converter (one category ``car``, 14
keypoints, vis codes 1/3 -> v=2, 2 -> v=1, out-of-frame -> v=0, hull-plus-margin boxes,
instances with fewer than 3 labelled points dropped) with these fixes: image ids are stable
(a hash of the relative path, not ``os.listdir`` order; at most 2^52 so JSON readers in double
precision keep them exact) and the image size is read from each image instead of being
hard-coded to 1920x1080; the file follows the COCO keypoint conventions (``info`` and
``licenses`` present, a 1-based ``skeleton``, integer visibilities, unlabelled points ``v=0`` at
``(0, 0)``). ``file_name`` is relative to ``--root``; the data module resolves it against its
root, a per-split ``image_roots`` entry or the JSON's own folder.

    python scripts/carfusion_to_coco.py --root data/world/carfusion \
        --out data/world/carfusion/annotations

writes ``car_keypoints_train.json`` and ``car_keypoints_test.json``.
"""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from occaist.data.carfusion import scan_carfusion
from occaist.data.keypoints import KEYPOINT_NAMES, SKELETON
from occaist.utils.io import write_json_atomic

log = logging.getLogger("carfusion_to_coco")


def convert(root: Path, sequences: list[str]) -> dict[str, Any]:
    """COCO-keypoint dict of the matching sequences under ``root``."""
    images, annotations = [], []
    for rec in scan_carfusion(root, sequences):
        images.append(
            {
                "id": rec.image_id,
                "file_name": rec.image,
                "width": rec.width,
                "height": rec.height,
                "license": 1,
            }
        )
        for inst in sorted(rec.boxes):
            kps, (x0, y0, x1, y1) = rec.keypoints[inst], rec.boxes[inst]
            labelled = kps[:, 2] > 0
            flat: list[float | int] = []
            for (x, y, v), lab in zip(kps, labelled, strict=True):
                flat += [float(x), float(y), int(v)] if lab else [0.0, 0.0, 0]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": rec.image_id,
                    "category_id": 1,
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "area": float((x1 - x0) * (y1 - y0)),
                    "iscrowd": 0,
                    "num_keypoints": int(labelled.sum()),
                    "keypoints": flat,
                    "instance_id": int(inst),
                }
            )
    category = {
        "id": 1,
        "name": "car",
        "supercategory": "car",
        "keypoints": list(KEYPOINT_NAMES),
        "skeleton": [[a + 1, b + 1] for a, b in SKELETON],  # COCO skeletons are 1-based
    }
    info = {
        "description": f"CarFusion keypoints of {', '.join(sequences)} (carfusion_to_coco.py)",
        "version": "1.0",
        "year": datetime.now(UTC).year,
        "date_created": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    licenses = [{"id": 1, "name": "see the dataset's terms of use", "url": ""}]
    return {
        "info": info,
        "licenses": licenses,
        "images": images,
        "annotations": annotations,
        "categories": [category],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder holding car_<seq>/")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--train", nargs="+", default=["butler", "craig", "fifth", "morewood"])
    parser.add_argument("--test", nargs="+", default=["penn1", "penn2"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for split, seqs in (("train", args.train), ("test", args.test)):
        coco = convert(args.root, seqs)
        path = args.out / f"car_keypoints_{split}.json"
        write_json_atomic(path, coco)
        log.info(
            "%s: %d images, %d cars -> %s",
            split,
            len(coco["images"]),
            len(coco["annotations"]),
            path,
        )


if __name__ == "__main__":
    main()
