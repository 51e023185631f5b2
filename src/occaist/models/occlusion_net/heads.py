"""Keypoint R-CNN with the Occlusion-Net graph head (torchvision detection, no maskrcnn_benchmark).

:class:`OcclusionRoIHeads` subclasses torchvision's ``RoIHeads``: the box stage is unchanged; the
keypoint stage computes the 56x56 keypoint logits of the positive proposals (training) or of the
detections (inference) with torchvision's ``KeypointRCNNHeads``/``KeypointRCNNPredictor`` and runs
:class:`~occaist.models.occlusion_net.kgnn.KeypointGraphNet` on them. Graph targets are built
against the *proposal* boxes (as upstream). :class:`OcclusionTransform` resizes the extra
multi-view targets with the images and the extra predictions back.

:func:`build_occlusion_rcnn` builds the network (``keypointrcnn_resnet50_fpn(num_classes=2,
num_keypoints=14)`` layout, or a lighter ResNet-18-FPN) with weights from local files only
(``occaist.utils.weights``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import resnet18, resnet50
from torchvision.models.detection import KeypointRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss, keypointrcnn_loss
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_keypoints
from torchvision.ops import misc as misc_nn_ops

from occaist.data.keypoints import OCCLUDED, VISIBLE
from occaist.models.occlusion_net.kgnn import KeypointGraphNet, image_to_roi, roi_to_image
from occaist.models.occlusion_net.losses import (
    OCCLUDED_LOSS_MODES,
    REPROJECTION_TARGETS,
    TRIFOCAL_ERRORS,
    edge_loss,
    heatmap_targets,
    masked_l2,
    reprojection_loss,
    trifocal_loss,
)
from occaist.utils.logging import RankedLogger
from occaist.utils.weights import load_pretrained, load_state_dict_file, resolve_weights_path

log = RankedLogger(__name__)

__all__ = [
    "MissingCamerasError",
    "OcclusionRoIHeads",
    "OcclusionTransform",
    "build_occlusion_rcnn",
    "graph_on_boxes",
    "keypoints_on_boxes",
]

#: Per-keypoint predictions returned at inference besides torchvision's ``keypoints``.
PREDICTION_KEYS = ("keypoints_heatmap", "keypoints_kgnn3d")


class MissingCamerasError(KeyError):
    """A multi-view loss was asked for but the targets carry no camera matrices."""


def _need(target: dict[str, Tensor], keys: tuple[str, ...], mode: str) -> None:
    missing = [k for k in keys if k not in target]
    if missing:
        raise MissingCamerasError(
            f"occluded_loss={mode!r} needs multi-view targets {missing}, built from 3x4 camera "
            "matrices (<seq>/synthetic/cameras.json). Real CarFusion ships no cameras: use "
            "model.net.occluded_loss=annotated, or provide cameras.json in the same format and "
            "set data.multiview=true"
        )


class OcclusionTransform(GeneralizedRCNNTransform):
    """``GeneralizedRCNNTransform`` that also resizes the multi-view targets and the extra
    keypoint predictions.

    Targets: ``tri_target`` ``(N, K, 2)`` pixels are scaled like the keypoints; ``camera``
    ``(3, 4)`` (this view's ``P``) becomes ``diag(r_w, r_h, 1) P``.
    """

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        h, w = image.shape[-2:]
        image, target = super().resize(image, target)
        if target is not None:
            rh, rw = image.shape[-2] / h, image.shape[-1] / w
            if "tri_target" in target:
                scale = torch.tensor([rw, rh], dtype=target["tri_target"].dtype)
                target["tri_target"] = target["tri_target"] * scale.to(image.device)
            if "camera" in target:
                cam = target["camera"]
                scale = torch.tensor([rw, rh, 1.0], dtype=cam.dtype, device=cam.device)
                target["camera"] = scale[:, None] * cam
        return image, target

    def postprocess(
        self,
        result: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
        original_image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        result = super().postprocess(result, image_shapes, original_image_sizes)
        if self.training:
            return result
        for pred, im_s, o_im_s in zip(result, image_shapes, original_image_sizes, strict=True):
            for key in PREDICTION_KEYS:
                if key in pred:
                    pred[key] = resize_keypoints(pred[key], im_s, o_im_s)
        return result


class OcclusionRoIHeads(RoIHeads):
    """torchvision ``RoIHeads`` whose keypoint stage runs the Occlusion-Net graph head.

    Args:
        base: the ``RoIHeads`` of a built ``KeypointRCNN`` (its box and keypoint parts are reused).
        graph_head: the KGNNs.
        heatmap_loss: ``"all"`` labelled keypoints in the heatmap CE (upstream, default) or
            ``"visible"`` only (the paper's wording).
        occluded_loss: ``"trifocal"`` (paper), ``"triangulated"`` or ``"annotated"`` (upstream).
        trifocal_error: ``"algebraic"`` (paper eq. 9) or ``"transfer"`` (the same incidence as
            the ROI-frame distance to the point transferred from the two other views).
        reprojection_target, reprojection_exclude, reprojection_detach: see
            :func:`~occaist.models.occlusion_net.losses.reprojection_loss` (upstream: ``refined``,
            ``(8, 13)``, not detached).
    """

    def __init__(
        self,
        base: RoIHeads,
        graph_head: KeypointGraphNet,
        heatmap_loss: str = "all",
        occluded_loss: str = "annotated",
        trifocal_error: str = "algebraic",
        reprojection_target: str = "refined",
        reprojection_exclude: tuple[int, ...] = (8, 13),
        reprojection_detach: bool = False,
    ) -> None:
        super().__init__(
            box_roi_pool=base.box_roi_pool,
            box_head=base.box_head,
            box_predictor=base.box_predictor,
            fg_iou_thresh=base.proposal_matcher.high_threshold,
            bg_iou_thresh=base.proposal_matcher.low_threshold,
            batch_size_per_image=base.fg_bg_sampler.batch_size_per_image,
            positive_fraction=base.fg_bg_sampler.positive_fraction,
            bbox_reg_weights=base.box_coder.weights,
            score_thresh=base.score_thresh,
            nms_thresh=base.nms_thresh,
            detections_per_img=base.detections_per_img,
            keypoint_roi_pool=base.keypoint_roi_pool,
            keypoint_head=base.keypoint_head,
            keypoint_predictor=base.keypoint_predictor,
        )
        if occluded_loss not in OCCLUDED_LOSS_MODES:
            raise ValueError(f"occluded_loss must be one of {OCCLUDED_LOSS_MODES}")
        if trifocal_error not in TRIFOCAL_ERRORS:
            raise ValueError(f"trifocal_error must be one of {TRIFOCAL_ERRORS}")
        if reprojection_target not in REPROJECTION_TARGETS:
            raise ValueError(f"reprojection_target must be one of {REPROJECTION_TARGETS}")
        heatmap_targets(torch.zeros(1, 1, 3), heatmap_loss)  # validates the mode
        self.graph_head = graph_head
        self.heatmap_loss = heatmap_loss
        self.occluded_loss = occluded_loss
        self.trifocal_error = trifocal_error
        self.reprojection_target = reprojection_target
        self.reprojection_exclude = tuple(reprojection_exclude)
        self.reprojection_detach = reprojection_detach

    def graph_stage(
        self,
        features: dict[str, Tensor],
        boxes: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Keypoint logits ``(N, K, 56, 56)`` of the boxes (all images concatenated) and the
        graph head's outputs (ROI frame of each box)."""
        x = self.keypoint_roi_pool(features, boxes, image_shapes)
        logits = self.keypoint_predictor(self.keypoint_head(x))
        flat = torch.cat(boxes)
        wh = (flat[:, 2:] - flat[:, :2]).clamp_min(1e-3)
        return logits, self.graph_head(logits, wh[:, 0] / wh[:, 1])

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        result: list[dict[str, Tensor]] = []
        losses: dict[str, Tensor] = {}
        if self.training:
            loss_cls, loss_box = fastrcnn_loss(
                class_logits, box_regression, labels, regression_targets
            )
            losses = {"loss_classifier": loss_cls, "loss_box_reg": loss_box}
            positive = [torch.where(lab > 0)[0] for lab in labels]
            kp_boxes = [p[pos] for p, pos in zip(proposals, positive, strict=True)]
            matched = [m[pos] for m, pos in zip(matched_idxs, positive, strict=True)]
            logits, out = self.graph_stage(features, kp_boxes, image_shapes)
            gt_heat = [heatmap_targets(t["keypoints"], self.heatmap_loss) for t in targets]
            losses["loss_keypoint"] = keypointrcnn_loss(logits, kp_boxes, gt_heat, matched)
            losses.update(self.graph_losses(out, kp_boxes, matched, targets, image_shapes))
            return result, losses
        boxes, scores, labels = self.postprocess_detections(
            class_logits, box_regression, proposals, image_shapes
        )
        result = [
            {"boxes": b, "labels": lab, "scores": s}
            for b, s, lab in zip(boxes, scores, labels, strict=True)
        ]
        if sum(len(b) for b in boxes) == 0:
            return result, losses
        _, out = self.graph_stage(features, boxes, image_shapes)
        for res, pred in zip(result, split_predictions(out, boxes), strict=True):
            res.update(pred)
        return result, losses

    def graph_losses(
        self,
        out: dict[str, Tensor],
        boxes: list[Tensor],
        matched: list[Tensor],
        targets: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
    ) -> dict[str, Tensor]:
        """Edge CE, occluded-keypoint loss (``occluded_loss`` mode) and reprojection loss."""
        flat_boxes = torch.cat(boxes)
        gt = torch.cat([t["keypoints"][m] for t, m in zip(targets, matched, strict=True)])
        gt_roi = image_to_roi(gt[..., :2], flat_boxes)  # (N, K, 2)
        inside = (gt_roi.abs() <= 1.0).all(dim=-1)
        visible = (gt[..., 2] == VISIBLE) & inside
        occluded = (gt[..., 2] == OCCLUDED) & inside
        head = self.graph_head
        losses = {
            "loss_edges": edge_loss(
                out["edge_logits"], visible, head.encoder.send, head.encoder.receive
            )
        }
        refined_xy = out["refined"][..., :2]
        mode = self.occluded_loss
        if mode == "annotated":
            losses["loss_occluded"] = masked_l2(refined_xy, gt_roi, occluded)
        elif mode == "triangulated":
            for t in targets:
                _need(t, ("tri_target", "tri_mask"), mode)
            target = torch.cat([t["tri_target"][m] for t, m in zip(targets, matched, strict=True)])
            mask = torch.cat([t["tri_mask"][m] for t, m in zip(targets, matched, strict=True)])
            target_roi = image_to_roi(target, flat_boxes)
            losses["loss_occluded"] = masked_l2(refined_xy, target_roi, occluded & mask)
        else:
            losses["loss_occluded"] = self._trifocal(
                refined_xy, flat_boxes, matched, targets, image_shapes, occluded
            )
        if "keypoints_3d" in out:
            losses["loss_reprojection"] = reprojection_loss(
                out,
                gt_roi,
                visible | occluded,
                self.reprojection_target,
                self.reprojection_exclude,
                self.reprojection_detach,
            )
        return losses

    def _trifocal(
        self,
        pred_roi: Tensor,
        boxes: Tensor,
        matched: list[Tensor],
        targets: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
        occluded: Tensor,
    ) -> Tensor:
        """Paper eq. 9 in coordinates divided by each image's larger side (see
        ``losses.trifocal_loss``, ``error=trifocal_error``; ``transfer`` measures the distance in
        the ROI frame of each box); the data module stores views 2/3 already normalised."""
        keys = ("camera", "mv_cameras", "mv_points", "mv_mask")
        P1, P23, x23, mask = [], [], [], []
        for t, m, shape in zip(targets, matched, image_shapes, strict=True):
            _need(t, keys, "trifocal")
            s = float(max(shape))
            norm = torch.tensor(
                [1.0 / s, 1.0 / s, 1.0], dtype=t["camera"].dtype, device=t["camera"].device
            )
            P1.append((norm[:, None] * t["camera"]).expand(len(m), 3, 4))
            P23.append(t["mv_cameras"][m])
            x23.append(t["mv_points"][m])
            mask.append(t["mv_mask"][m])
        sizes = torch.tensor(
            [max(s) for s, m in zip(image_shapes, matched, strict=True) for _ in range(len(m))],
            dtype=pred_roi.dtype,
            device=pred_roi.device,
        )
        pred = roi_to_image(pred_roi, boxes) / sizes[:, None, None]
        cams, pts = torch.cat(P23), torch.cat(x23)  # (N, K, 2, 3, 4), (N, K, 2, 2)
        # a normalised offset d is 2 d s / w ROI units (s the image's larger side, w the box's)
        roi_scale = 2.0 * sizes[:, None] / (boxes[:, 2:] - boxes[:, :2]).clamp_min(1e-3)
        return trifocal_loss(
            pred,
            torch.cat(P1),
            cams[:, :, 0],
            cams[:, :, 1],
            pts[:, :, 0],
            pts[:, :, 1],
            occluded & torch.cat(mask),
            error=self.trifocal_error,
            roi_scale=roi_scale,
        )


def split_predictions(out: dict[str, Tensor], boxes: list[Tensor]) -> list[dict[str, Tensor]]:
    """Per-image prediction dicts in image pixels from graph outputs over concatenated boxes.

    Keys: ``keypoints`` ``(n, K, 3)`` (2D-KGNN ``x, y`` and visibility probability, torchvision
    layout), ``keypoints_heatmap`` ``(n, K, 3)`` (heatmap argmax and its confidence),
    ``keypoints_kgnn3d`` ``(n, K, 3)`` when the 3D-KGNN runs, ``keypoint_visibility`` and
    ``keypoints_scores`` ``(n, K)``.
    """
    flat = torch.cat(boxes)
    vis, conf = out["visibility"], out["nodes"][..., 2]
    full = {
        "keypoints": torch.cat([roi_to_image(out["keypoints_2d"], flat), vis[..., None]], -1),
        "keypoints_heatmap": torch.cat(
            [roi_to_image(out["keypoints_heatmap"], flat), conf[..., None]], -1
        ),
        "keypoint_visibility": vis,
        "keypoints_scores": conf,
    }
    if "keypoints_3d" in out:
        full["keypoints_kgnn3d"] = torch.cat(
            [roi_to_image(out["keypoints_3d"], flat), vis[..., None]], -1
        )
    counts = [len(b) for b in boxes]
    split = {k: v.split(counts) for k, v in full.items()}
    return [{k: v[i] for k, v in split.items()} for i in range(len(boxes))]


@torch.no_grad()
def graph_on_boxes(
    model: KeypointRCNN, images: list[Tensor], boxes: list[Tensor]
) -> tuple[dict[str, Tensor], list[Tensor]]:
    """Run only the keypoint and graph stages on given boxes (original image pixels, e.g.
    jittered ground-truth boxes, which isolates keypoint localisation from detection).

    Returns the graph head's outputs over the concatenated boxes (ROI frame, which the image
    resizing leaves unchanged: see :func:`~occaist.models.occlusion_net.kgnn.image_to_roi`) and
    the boxes in the resized images."""
    original_sizes = [tuple(img.shape[-2:]) for img in images]
    image_list, _ = model.transform(images)
    scaled = []
    for b, (h, w), (nh, nw) in zip(boxes, original_sizes, image_list.image_sizes, strict=True):
        scale = torch.tensor([nw / w, nh / h, nw / w, nh / h], dtype=b.dtype, device=b.device)
        scaled.append(b * scale)
    features = model.backbone(image_list.tensors)
    _, out = model.roi_heads.graph_stage(features, scaled, image_list.image_sizes)
    return out, scaled


@torch.no_grad()
def keypoints_on_boxes(
    model: KeypointRCNN, images: list[Tensor], boxes: list[Tensor]
) -> list[dict[str, Tensor]]:
    """:func:`graph_on_boxes` as per-image prediction dicts in the original image pixels (see
    :func:`split_predictions` for the keys)."""
    if sum(len(b) for b in boxes) == 0:
        return [{} for _ in boxes]
    out, _ = graph_on_boxes(model, images, boxes)
    return split_predictions(out, boxes)


def _load_matching(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load the entries of ``state`` whose names and shapes match (COCO's 91-class box predictor
    and 17-keypoint predictor do not); log what was skipped."""
    own = model.state_dict()
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(keep))
    model.load_state_dict(keep, strict=False)
    log.info(
        "loaded %d tensors; skipped %d (shape/name mismatch): %s",
        len(keep),
        len(skipped),
        skipped[:8],
    )


def build_occlusion_rcnn(
    graph_head: KeypointGraphNet,
    backbone: str = "resnet50",
    weights: str | None = None,
    weights_backbone: str | None = None,
    trainable_backbone_layers: int = 3,
    num_keypoints: int = 14,
    min_size: int = 800,
    max_size: int = 1333,
    heatmap_loss: str = "all",
    occluded_loss: str = "annotated",
    trifocal_error: str = "algebraic",
    reprojection_target: str = "refined",
    reprojection_exclude: list[int] = (8, 13),
    reprojection_detach: bool = False,
    rpn_batch_size_per_image: int = 256,
    box_batch_size_per_image: int = 512,
    box_detections_per_img: int = 100,
) -> KeypointRCNN:
    """Keypoint R-CNN (2 classes: background, car) with the Occlusion-Net graph head.

    Args:
        graph_head: the :class:`KeypointGraphNet`.
        backbone: ``"resnet50"`` (paper, = ``keypointrcnn_resnet50_fpn``) or ``"resnet18"``
            (lighter, for CPU runs).
        weights: COCO Keypoint R-CNN weights (``"default"``: torchvision's cache; a path;
            ``None``: none). Only tensors whose shapes match are loaded (not the 91-class box
            predictor nor the 17-keypoint predictor). ResNet-50 only.
        weights_backbone: ImageNet weights of the ResNet (``"default"``, a path, ``None``).
            With pretrained weights the ResNet uses frozen batch norm (upstream), without them
            ordinary batch norm.
        trainable_backbone_layers: ResNet stages left trainable (0-5); upstream froze stem+res2.
        min_size, max_size: image resizing of ``GeneralizedRCNNTransform`` (paper 800/1333).
        heatmap_loss, occluded_loss, trifocal_error, reprojection_target, reprojection_exclude,
            reprojection_detach: see :class:`OcclusionRoIHeads`.
        rpn_batch_size_per_image, box_batch_size_per_image, box_detections_per_img: torchvision
            sampling/detection sizes (defaults as the paper).
    """
    builders: dict[str, Any] = {"resnet50": resnet50, "resnet18": resnet18}
    if backbone not in builders:
        raise ValueError(f"backbone must be one of {sorted(builders)}, got {backbone!r}")
    if weights is not None and backbone != "resnet50":
        raise ValueError("COCO Keypoint R-CNN weights exist for backbone=resnet50 only")
    pretrained = weights is not None or weights_backbone is not None
    # frozen statistics only make sense for trained weights (as torchvision); from scratch the
    # backbone needs real batch norm
    norm = misc_nn_ops.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    resnet = builders[backbone](weights=None, norm_layer=norm)
    if weights is None:
        load_pretrained(resnet, backbone, weights_backbone)
    fpn = _resnet_fpn_extractor(resnet, trainable_backbone_layers)
    model = KeypointRCNN(
        fpn,
        num_classes=2,
        num_keypoints=num_keypoints,
        min_size=min_size,
        max_size=max_size,
        rpn_batch_size_per_image=rpn_batch_size_per_image,
        box_batch_size_per_image=box_batch_size_per_image,
        box_detections_per_img=box_detections_per_img,
    )
    if weights is not None:
        file = resolve_weights_path("keypointrcnn_resnet50_fpn", weights)
        if file is not None:
            _load_matching(model, load_state_dict_file(file))
    old = model.transform
    model.transform = OcclusionTransform(old.min_size, old.max_size, old.image_mean, old.image_std)
    model.roi_heads = OcclusionRoIHeads(
        model.roi_heads,
        graph_head,
        heatmap_loss=heatmap_loss,
        occluded_loss=occluded_loss,
        trifocal_error=trifocal_error,
        reprojection_target=reprojection_target,
        reprojection_exclude=tuple(reprojection_exclude),
        reprojection_detach=reprojection_detach,
    )
    return model
