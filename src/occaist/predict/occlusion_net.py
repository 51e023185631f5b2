"""Occlusion-Net: car detections with 14 keypoints and their predicted visibility.

Images go to the detector at their own size (its transform resizes them); RGBA inputs are
composited on white. Results: ``keypoints_results.json`` in the COCO keypoint results format
(every detection the model returns) and ``images.json``, the COCO image list the results refer
to (``image_id`` = position in the sorted input listing + 1), so that::

    from pycocotools.coco import COCO
    results = COCO("images.json").loadRes("keypoints_results.json")

Overlays draw the detections scoring at least ``overlay_score_threshold``: the box, the
skeleton, visible keypoints green and occluded ones red (``visibility_threshold``).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
import torch

from occaist.predict.base import Predictor
from occaist.predict.inputs import DecodedInput
from occaist.predict.overlays import draw_keypoint_detections, rgb_of
from occaist.predict.writers import coco_images, coco_keypoint_result, output_path, write_png
from occaist.utils.io import write_json_atomic, write_text_atomic

RESULTS_FILE = "keypoints_results.json"
IMAGES_FILE = "images.json"


def prepare_rgb(rgba: np.ndarray) -> tuple[torch.Tensor, dict[str, Any]]:
    """``(3, H, W)`` float in [0, 1], transparent pixels on white."""
    return torch.from_numpy(rgb_of(rgba)).permute(2, 0, 1).float() / 255.0, {}


class OcclusionNetPredictor(Predictor):
    """Predictions of :class:`~occaist.models.OcclusionNet` (module docstring)."""

    module_class: ClassVar[str] = "occaist.models.occlusion_net.module.OcclusionNet"
    name: ClassVar[str] = "occlusion_net"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.images: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []

    def prepare_fn(self):
        return prepare_rgb

    def collate(self, items: list[DecodedInput]) -> dict[str, list[torch.Tensor]]:
        return {"images": [item.tensor.to(self.device) for item in items]}

    def write(self, item: DecodedInput, result: dict[str, torch.Tensor]) -> None:
        image_id = item.index + 1
        height, width = item.rgba.shape[:2]
        self.images.append(
            {
                "id": image_id,
                "file_name": item.file.path.as_posix(),
                "width": width,
                "height": height,
            }
        )
        det = {key: value.float().cpu().numpy() for key, value in result.items()}
        threshold = float(self.cfg.visibility_threshold)
        for i in range(len(det["boxes"])):
            self.results.append(
                coco_keypoint_result(
                    image_id,
                    det["keypoints"][i],
                    det["visibility"][i],
                    det["scores"][i],
                    det["boxes"][i],
                    threshold,
                    det["keypoint_scores"][i],
                )
            )
        if self.save_overlays:
            shown = det["scores"] >= float(self.cfg.overlay_score_threshold)
            picture = draw_keypoint_detections(
                item.rgba,
                det["boxes"][shown],
                det["scores"][shown],
                det["keypoints"][shown],
                det["visibility"][shown] >= threshold,
            )
            write_png(output_path(self.output, "overlays", item.file.key, ".png"), picture)

    def finish(self) -> dict[str, str]:
        images = sorted(self.images, key=lambda im: im["id"])
        write_json_atomic(self.output / IMAGES_FILE, coco_images(images))
        # one detection per line: big folders give big files
        lines = ",\n".join(json.dumps(r, sort_keys=True) for r in self.results)
        write_text_atomic(self.output / RESULTS_FILE, f"[\n{lines}\n]\n" if lines else "[]\n")
        return {
            "coco_keypoint_results": str(self.output / RESULTS_FILE),
            "coco_images": str(self.output / IMAGES_FILE),
        }
