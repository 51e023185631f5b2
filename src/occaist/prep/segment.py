"""Segmenters: images in, instance candidates out; the same downstream code for every kind.

* :class:`MaskRCNNSegmenter` -- torchvision's ``maskrcnn_resnet50_fpn`` with COCO weights read
  from a local file through :func:`occaist.utils.weights.load_pretrained` (the thesis used the
  Matterport Keras implementation with COCO weights, Appendix C; its 0.7 minimum confidence is
  our ``score`` filter, so the detector's own threshold ``box_score_thresh`` is lower and the
  rejections are reported). Batched, under ``torch.inference_mode``, on CPU or GPU.
* :class:`ProvidedSegmenter` -- instance masks from a COCO-style side file (the synthetic world's
  ``stanford_cars/synthetic/instances.json``, RLE masks); extra per-instance fields (model id,
  true pose) are carried into the manifest.

A segmenter is built with ``hydra.utils.instantiate`` from ``conf/prep/segmenter/<kind>.yaml``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from occaist.utils.logging import get_logger

if TYPE_CHECKING:
    import torch

log = get_logger(__name__)

#: COCO annotation keys that are not carried into the manifest as extras.
_COCO_KEYS = {"id", "image_id", "category_id", "bbox", "segmentation", "area", "iscrowd", "score"}


@dataclass
class Candidate:
    """One segmented instance of one image.

    Attributes:
        instance: index of the instance within its image (detector order / side-file order).
        box: predicted box ``(x0, y0, x1, y1)`` in pixels of the (EXIF-oriented) image.
        score: detector confidence in ``[0, 1]`` (1 for provided masks without a score).
        label: class name (COCO names: ``car``, ``truck``, ...).
        mask: boolean ``(H, W)`` mask over the whole image.
        extra: side information for the manifest (``model_id``, ``pose``, ... for synthetic data).
    """

    instance: int
    box: tuple[float, float, float, float]
    score: float
    label: str
    mask: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


class Segmenter(Protocol):
    """``segment(images, sources)``: for each ``uint8 (H, W, 3)`` image (``sources`` are the
    image paths relative to the dataset folder) the list of its candidates."""

    def segment(
        self, images: Sequence[np.ndarray], sources: Sequence[str]
    ) -> list[list[Candidate]]:
        """Segment a batch."""
        ...


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class MaskRCNNSegmenter:
    """torchvision Mask R-CNN (ResNet-50 FPN, COCO) as a segmenter.

    Args:
        weights: ``"default"`` (torchvision's cache file), a path to
            ``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``, or None for random weights (tests only).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
        min_size: shorter side the detector resizes to (thesis: ``IMAGE_MIN_DIM`` 800).
        max_size: cap on the longer side (thesis: ``IMAGE_MAX_DIM`` 1024).
        box_score_thresh: detections below this are not returned at all.
        mask_threshold: mask probability above which a pixel belongs to the instance.
        detections_per_img: at most this many detections per image (thesis: 100).
    """

    def __init__(
        self,
        weights: str | None = "default",
        device: str = "auto",
        min_size: int = 800,
        max_size: int = 1024,
        box_score_thresh: float = 0.5,
        mask_threshold: float = 0.5,
        detections_per_img: int = 100,
    ) -> None:
        from torchvision.models.detection import (
            MaskRCNN_ResNet50_FPN_Weights,
            maskrcnn_resnet50_fpn,
        )

        from occaist.utils.weights import load_pretrained

        self.device = resolve_device(device)
        self.mask_threshold = mask_threshold
        model = maskrcnn_resnet50_fpn(
            weights=None,
            weights_backbone=None,
            num_classes=91,
            min_size=min_size,
            max_size=max_size,
            box_score_thresh=box_score_thresh,
            box_detections_per_img=detections_per_img,
        )
        load_pretrained(model, "maskrcnn_resnet50_fpn", weights)
        self.model = model.eval().to(self.device)
        self.categories: list[str] = list(MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])

    def segment(
        self, images: Sequence[np.ndarray], sources: Sequence[str]
    ) -> list[list[Candidate]]:
        import torch

        if not images:
            return []
        with torch.inference_mode():
            batch = [
                torch.from_numpy(np.ascontiguousarray(im)).to(self.device).permute(2, 0, 1).float()
                / 255.0
                for im in images
            ]  # each (3, H, W) in [0, 1]
            outputs = self.model(batch)
        results: list[list[Candidate]] = []
        for out in outputs:
            masks = (out["masks"][:, 0] > self.mask_threshold).cpu().numpy()  # (N, H, W)
            boxes = out["boxes"].cpu().double().numpy()  # (N, 4) x0 y0 x1 y1
            scores = out["scores"].cpu().double().numpy()
            labels = out["labels"].cpu().numpy()
            results.append(
                [
                    Candidate(
                        instance=i,
                        box=tuple(float(v) for v in boxes[i]),
                        score=float(scores[i]),
                        label=self.categories[int(labels[i])],
                        mask=masks[i],
                    )
                    for i in range(len(scores))
                ]
            )
        return results


class ProvidedSegmenter:
    """Instance masks from a COCO-style JSON (RLE ``segmentation``, ``bbox`` as x, y, w, h).

    Images are matched by ``file_name`` relative to the dataset folder
    (``cars_train/00001.jpg``). Images absent from the file have no candidates.

    Args:
        instances_file: the side file, e.g. ``<world>/stanford_cars/synthetic/instances.json``.
    """

    def __init__(self, instances_file: str) -> None:
        path = Path(instances_file)
        if not path.is_file():
            raise FileNotFoundError(
                f"provided-masks file {path} not found; the synthetic world writes it at "
                f"stanford_cars/synthetic/instances.json (python -m occaist.synth), or use "
                f"segmenter=maskrcnn for real data."
            )
        data = json.loads(path.read_text(encoding="utf-8"))
        categories = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
        by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in data.get("annotations", []):
            by_image.setdefault(int(ann["image_id"]), []).append(ann)
        self.categories = categories
        self.by_file: dict[str, list[dict[str, Any]]] = {
            Path(img["file_name"]).as_posix(): by_image.get(int(img["id"]), [])
            for img in data.get("images", [])
        }

    def segment(
        self, images: Sequence[np.ndarray], sources: Sequence[str]
    ) -> list[list[Candidate]]:
        from occaist.data.coco_rle import decode

        results: list[list[Candidate]] = []
        for image, source in zip(images, sources, strict=True):
            cands = []
            for i, ann in enumerate(self.by_file.get(Path(source).as_posix(), [])):
                x, y, w, h = (float(v) for v in ann["bbox"])
                mask = np.asarray(decode(ann["segmentation"])).astype(bool)
                if mask.shape != image.shape[:2]:
                    log.warning(
                        "%s instance %d: mask %s does not match image %s; dropped",
                        source,
                        i,
                        mask.shape,
                        image.shape[:2],
                    )
                    mask = np.zeros(image.shape[:2], bool)
                cands.append(
                    Candidate(
                        instance=i,
                        box=(x, y, x + w, y + h),
                        score=float(ann.get("score", 1.0)),
                        label=self.categories.get(int(ann["category_id"]), "unknown"),
                        mask=mask,
                        extra={k: v for k, v in ann.items() if k not in _COCO_KEYS},
                    )
                )
            results.append(cands)
        return results
