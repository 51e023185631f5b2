"""Occlusion-Net LightningModules: the full detector (:class:`OcclusionNet`) and the base both it
and the graph head alone (:class:`~occaist.models.occlusion_net.graph_module.OcclusionGraphNet`,
experiment ``occnet_graph``) share, each a training step plus its torchmetrics.

Both log PCK@alpha (L = max side of the ground-truth box) of each predictor (the graph's input
``heatmap``, ``kgnn2d``, ``kgnn3d``) on the validation split and, at test time, return one plain
record per car instance for :class:`~occaist.evaluation.keypoints.KeypointEvaluator` (tables
with the least-squares and heatmap baselines, COCO keypoint AP, per-occlusion-count figures and
the noise study, written by ``occaist.evaluation.EvaluationCallback``). The ROI of every graph is
a jittered ground-truth box (``occaist.models.occlusion_net.stand_in.jitter_boxes``), never the
exact hull, whose edges are fixed by occluded keypoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAccuracy

from occaist.data.keypoints import EVALUATED_KEYPOINTS, VISIBLE
from occaist.metrics.pck import PCK
from occaist.models.occlusion_net.heads import graph_on_boxes
from occaist.models.occlusion_net.kgnn import (
    KeypointGraphNet,
    load_graph_head,
    roi_to_image,
)
from occaist.models.occlusion_net.losses import (
    weighted_sum,
)
from occaist.models.occlusion_net.schedule import param_groups, warmup
from occaist.models.occlusion_net.stand_in import (
    detector_like_graph,
    jitter_boxes,
)
from occaist.utils.logging import RankedLogger

log = RankedLogger(__name__)

__all__ = ["GraphHeadModule", "OcclusionNet", "load_graph_head"]

#: Predictor keys, in table order.
PREDICTORS = ("heatmap", "kgnn2d", "kgnn3d")


def box_aspect(boxes: Tensor) -> Tensor:
    """Width / height of boxes ``(N, 4)`` (x1, y1, x2, y2), each side at least 1e-3."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp_min(1e-3)
    return wh[:, 0] / wh[:, 1]


class GraphHeadModule(pl.LightningModule):
    """What both Occlusion-Net modules share: the graph head's PCK torchmetrics per predictor
    (validation), the test records and the evaluator, the noise study, the training step."""

    #: Table label of the ``heatmap`` predictor.
    input_label = "heatmap (Keypoint R-CNN)"
    graph_head: KeypointGraphNet

    def _init_metrics(self, alpha: float, keypoints: Sequence[int]) -> None:
        self.keypoints = list(keypoints)
        self.predictors = [p for p in PREDICTORS if p != "kgnn3d" or self.has_3d]
        self.pck = nn.ModuleDict(
            {p: PCK(alpha=alpha, alphas=[alpha], keypoints=keypoints) for p in self.predictors}
        )
        self.vis_acc = BinaryAccuracy()
        self.train_loss = MeanMetric()

    @property
    def has_3d(self) -> bool:
        return self.graph_head.encoder3d is not None

    def _log_losses(self, losses: dict[str, Tensor], n: int) -> Tensor:
        loss = weighted_sum(losses, self.loss_weights)
        for name, value in losses.items():
            self.log(f"train/{name}", value, batch_size=n, sync_dist=True)
        self.train_loss(loss.detach())
        self.log("train/loss", self.train_loss, prog_bar=True, batch_size=n)
        return loss

    def _predictions(self, out: dict[str, Tensor], rois: Tensor) -> dict[str, Tensor]:
        """Pixel predictions ``(N, K, 2)`` per predictor from graph outputs in ROI frames."""
        keys = {"heatmap": "keypoints_heatmap", "kgnn2d": "keypoints_2d", "kgnn3d": "keypoints_3d"}
        preds = {p: roi_to_image(out[keys[p]], rois) for p in self.predictors}
        if "keypoints_3d_fit" in out:  # the fitted camera's diagnostic row (kgnn.py)
            preds["kgnn3d_fit"] = roi_to_image(out["keypoints_3d_fit"], rois)
        return preds

    def _update_metrics(
        self, preds: dict[str, Tensor], gt: Tensor, boxes: Tensor, visibility: Tensor
    ) -> None:
        for p in self.predictors:
            self.pck[p].update(preds[p], gt[..., :2], gt[..., 2], boxes)
        kp = torch.as_tensor(self.keypoints, device=gt.device)
        labelled = gt[:, kp, 2] > 0
        if labelled.any():
            target = (gt[:, kp, 2][labelled] == VISIBLE).long()
            self.vis_acc.update(visibility[:, kp][labelled], target)

    def _log_metrics(self, split: str) -> None:
        for p in self.predictors:
            res = self.pck[p].compute()
            for key in ("visible", "occluded", "all"):
                if not torch.isnan(res[key]):
                    self.log(f"{split}/pck_{key}_{p}", res[key])
            self.pck[p].reset()
        if self.vis_acc.update_count > 0:
            self.log(f"{split}/visibility_accuracy", self.vis_acc.compute())
        self.vis_acc.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    @torch.no_grad()
    def _noise_study(self, gt: Tensor, rois: Tensor, seed: int) -> list[dict[str, Any]]:
        """Per instance ``{sigma: {predictor: (K, 2)}}``: stand-in graphs of the ground truth
        with isotropic noise ``sigma`` (fraction of the box side) on every labelled node."""
        hp = self.hparams
        g = torch.Generator(device=gt.device).manual_seed(seed)
        out: list[dict[str, Any]] = [{} for _ in range(len(gt))]
        for sigma in hp.noise_sigmas:
            nodes = detector_like_graph(
                self.graph_head, gt, rois, sigma, sigma, 0.0, hp.confidence_peak,
                hp.confidence_width, g,
            )  # fmt: skip
            preds = self._predictions(self.graph_head.forward_graph(nodes, box_aspect(rois)), rois)
            for i, rec in enumerate(out):
                rec[f"{sigma:g}"] = {p: v[i].tolist() for p, v in preds.items()}
        return out

    def _records(self, ids, gt, boxes, rois, out, seed: int) -> list[dict[str, Any]]:
        """One plain dict per instance for the evaluator (``occaist.evaluation.keypoints``)."""
        from occaist.evaluation.keypoints import keypoint_records

        noise = self._noise_study(gt, rois, seed) if self.hparams.noise_sigmas else None
        preds = self._predictions(out, rois)
        conf, vis = out["nodes"][..., 2], out["visibility"]
        return keypoint_records(ids, gt, boxes, rois, preds, conf, vis, noise)

    def build_evaluator(self) -> Any:
        from occaist.evaluation.keypoints import KeypointEvaluator

        enc = self.graph_head.encoder3d
        basis = None
        if enc is not None:
            basis = (enc.mean.cpu().numpy(), enc.basis.cpu().numpy(), enc.sigma.cpu().numpy())
        return KeypointEvaluator(
            self.keypoints,
            self.hparams.alpha,
            {"heatmap": self.input_label},
            basis,
            visibility_threshold=self.graph_head.visibility_threshold,
        )


class OcclusionNet(GraphHeadModule):
    """Keypoint R-CNN + 2D/3D KGNN trained end to end (Occlusion-Net).

    Args:
        net: the detector from ``heads.build_occlusion_rcnn`` (nested ``_target_``).
        optimizer: a ``_partial_`` optimizer (paper: SGD lr 2.5e-4, momentum 0.9, wd 1e-4).
        warmup_iters, warmup_factor: linear warm-up (paper: 500 steps from 1/3).
        bias_lr_factor, bias_weight_decay: bias parameter group (paper: 2x LR, no decay).
        loss_weights: weight of every named loss (torchvision's and ``loss_keypoint``,
            ``loss_edges``, ``loss_occluded``, ``loss_reprojection``).
        alpha: PCK threshold. keypoints: indices evaluated (paper: 12 of 14).
        eval_box_jitter: ``(centre std, log-scale std)`` of the evaluation ROIs around the
            ground-truth box (fractions of its sides).
        noise_sigmas, confidence_peak, confidence_width: the test-time noise study on stand-in
            graphs (``stand_in.detector_like_graph``; sigma as a fraction of the box side).
        graph_head_checkpoint: a checkpoint of :class:`OcclusionGraphNet` whose graph head is
            loaded into this model (``occnet_graph`` pre-training).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Any,
        warmup_iters: int = 500,
        warmup_factor: float = 1.0 / 3.0,
        bias_lr_factor: float = 2.0,
        bias_weight_decay: float = 0.0,
        loss_weights: dict[str, Any] | None = None,
        alpha: float = 0.1,
        keypoints: list[int] = EVALUATED_KEYPOINTS,
        eval_box_jitter: list[float] = (0.05, 0.1),
        noise_sigmas: list[float] = (0.0, 0.025, 0.05, 0.1),
        confidence_peak: float = 0.9,
        confidence_width: float = 0.05,
        graph_head_checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["net"])
        self.net = net
        self.loss_weights = dict(loss_weights or {})
        self._init_metrics(alpha, keypoints)
        if graph_head_checkpoint:
            load_graph_head(self.graph_head, graph_head_checkpoint)

    @property
    def graph_head(self) -> KeypointGraphNet:
        return self.net.roi_heads.graph_head

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        return self.net(images)

    def training_step(self, batch: tuple[list, list], batch_idx: int) -> Tensor:
        images, targets = batch
        return self._log_losses(self.net(images, targets), len(images))

    def _eval_batch(self, batch: tuple[list, list], batch_idx: int):
        """Keypoint and graph stages on jittered ground-truth boxes (localisation isolated
        from detection): ids, ground truth, GT boxes, ROIs and the graph outputs."""
        images, targets = batch
        g = torch.Generator().manual_seed(batch_idx)
        rois = [
            jitter_boxes(t["boxes"], *self.hparams.eval_box_jitter, generator=g) for t in targets
        ]
        keep = [i for i, b in enumerate(rois) if len(b)]
        if not keep:
            return None
        outs, _ = graph_on_boxes(self.net, [images[i] for i in keep], [rois[i] for i in keep])
        ids = [f"{int(targets[i]['image_id'])}/{j}" for i in keep for j in range(len(rois[i]))]
        gt = torch.cat([targets[i]["keypoints"] for i in keep])
        boxes = torch.cat([targets[i]["boxes"] for i in keep])
        return ids, gt, boxes, torch.cat([rois[i] for i in keep]), outs

    def validation_step(self, batch: tuple[list, list], batch_idx: int) -> None:
        res = self._eval_batch(batch, batch_idx)
        if res is not None:
            _, gt, boxes, rois, out = res
            self._update_metrics(self._predictions(out, rois), gt, boxes, out["visibility"])
        if batch_idx == 0:
            from occaist.callbacks.image_panels import log_keypoint_panels

            log_keypoint_panels(self, batch)

    def test_step(self, batch: tuple[list, list], batch_idx: int) -> dict[str, Any]:
        res = self._eval_batch(batch, batch_idx)
        if res is None:
            return {"records": []}
        ids, gt, boxes, rois, out = res
        self._update_metrics(self._predictions(out, rois), gt, boxes, out["visibility"])
        return {"records": self._records(ids, gt, boxes, rois, out, batch_idx)}

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0) -> list[dict[str, Tensor]]:
        """Detections on ``batch["images"]`` (a list of ``(3, H, W)`` in [0, 1], any sizes), one
        dict per image (``occaist.predict`` writes them): ``boxes`` ``(n, 4)`` xyxy pixels,
        ``scores`` ``(n,)``, ``keypoints`` ``(n, K, 2)`` from the 2D-KGNN (occluded ones moved),
        ``visibility`` ``(n, K)`` the predicted probability that a keypoint is visible, and
        ``keypoint_scores`` ``(n, K)`` the heatmap confidences. The network runs in eval mode."""
        was_training = self.net.training
        self.net.eval()
        try:
            detections = self.net(list(batch["images"]))
        finally:
            self.net.train(was_training)
        k = self.graph_head.num_keypoints
        out = []
        for det in detections:
            boxes = det["boxes"]
            empty = boxes.new_zeros((len(boxes), k))
            keypoints = det.get("keypoints", boxes.new_zeros((len(boxes), k, 3)))
            out.append(
                {
                    "boxes": boxes,
                    "scores": det["scores"],
                    "keypoints": keypoints[..., :2],
                    "visibility": det.get("keypoint_visibility", empty),
                    "keypoint_scores": det.get("keypoints_scores", empty),
                }
            )
        return out

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        lr = float(hp.optimizer.keywords["lr"])
        groups = param_groups(self.net, lr, hp.bias_lr_factor, hp.bias_weight_decay)
        optimizer = hp.optimizer(params=groups)
        return {
            "optimizer": optimizer,
            "lr_scheduler": warmup(optimizer, hp.warmup_iters, hp.warmup_factor),
        }


def __getattr__(name: str) -> Any:
    """``module.OcclusionGraphNet``, the config target of checkpoints written before it moved."""
    if name == "OcclusionGraphNet":
        from occaist.models.occlusion_net.graph_module import OcclusionGraphNet

        return OcclusionGraphNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
