"""Occlusion-Net LightningModules: the full detector (:class:`OcclusionNet`) and the graph head
alone (:class:`OcclusionGraphNet`, experiment ``occnet_graph``), each a training step plus its
torchmetrics.

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

from occaist.data.keypoints import EVALUATED_KEYPOINTS, OCCLUDED, VISIBLE
from occaist.metrics.pck import PCK
from occaist.models.occlusion_net.heads import graph_on_boxes
from occaist.models.occlusion_net.kgnn import (
    KeypointGraphNet,
    image_to_roi,
    load_graph_head,
    roi_to_image,
)
from occaist.models.occlusion_net.losses import (
    edge_loss,
    masked_l2,
    reprojection_loss,
    weighted_sum,
)
from occaist.models.occlusion_net.schedule import param_groups, warmup
from occaist.models.occlusion_net.stand_in import (
    detector_like_graph,
    jitter_boxes,
    resample_shapes,
)
from occaist.utils.logging import RankedLogger

log = RankedLogger(__name__)

__all__ = ["OcclusionGraphNet", "OcclusionNet", "load_graph_head"]

#: Predictor keys, in table order.
PREDICTORS = ("heatmap", "kgnn2d", "kgnn3d")


def _aspect(boxes: Tensor) -> Tensor:
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
        return {p: roi_to_image(out[keys[p]], rois) for p in self.predictors}

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
            preds = self._predictions(self.graph_head.forward_graph(nodes, _aspect(rois)), rois)
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


class OcclusionGraphNet(GraphHeadModule):
    """The KGNNs alone, on detector-like graphs of the ground truth or on a heatmap network's.

    Input: the batch's ``nodes`` and ``roi`` when the data module provides them (graphs from a
    trained heatmap network, ``scripts/occnet_heatmaps.py``), else
    :func:`~occaist.models.occlusion_net.stand_in.detector_like_graph` of the ground truth on a
    jittered box (fresh at every step). Targets: the ground-truth positions (the ``annotated``
    occluded-keypoint loss) and visibilities. The checkpoint's ``graph_head.*`` weights load into
    :class:`OcclusionNet` (``graph_head_checkpoint``); both use the ``graph_head`` config group.

    Args:
        graph_head: the :class:`KeypointGraphNet`.
        optimizer: a ``_partial_`` optimizer.
        sigma_visible, sigma_occluded, swap_prob, confidence_peak, confidence_width,
            box_jitter: the stand-in (``stand_in``; sigmas as fractions of the box side).
        loss_weights: weights of ``loss_edges``, ``loss_occluded``, ``loss_reprojection``.
        reprojection_target, reprojection_exclude, reprojection_detach: see
            ``losses.reprojection_loss``.
        refine_loss_nodes: the nodes whose ``V'`` ``loss_occluded`` pulls to the ground truth:
            ``"occluded"`` (upstream's annotated loss) or ``"labelled"`` (ours: visible ones
            too, so ``V'`` stays sound on a visible node the encoder calls occluded, which
            ``replace=occluded`` then outputs).
        shape_augment: probability that a training instance becomes another car of the shape
            basis with the same errors, camera and visibilities
            (:func:`~occaist.models.occlusion_net.stand_in.resample_shapes`; ours, 0 = off);
            needs the 3D-KGNN's shape basis.
        alpha, keypoints, noise_sigmas: evaluation (see :class:`OcclusionNet`).
    """

    input_label = "heatmap input"

    def __init__(
        self,
        graph_head: KeypointGraphNet,
        optimizer: Any,
        sigma_visible: float = 0.02,
        sigma_occluded: float = 0.08,
        swap_prob: float = 0.05,
        confidence_peak: float = 0.9,
        confidence_width: float = 0.05,
        box_jitter: list[float] = (0.05, 0.1),
        loss_weights: dict[str, Any] | None = None,
        reprojection_target: str = "refined",
        reprojection_exclude: list[int] = (8, 13),
        reprojection_detach: bool = False,
        refine_loss_nodes: str = "occluded",
        shape_augment: float = 0.0,
        alpha: float = 0.1,
        keypoints: list[int] = EVALUATED_KEYPOINTS,
        noise_sigmas: list[float] = (0.0, 0.025, 0.05, 0.1),
    ) -> None:
        super().__init__()
        if shape_augment > 0 and graph_head.encoder3d is None:
            raise ValueError("shape_augment needs the shape basis of the 3D-KGNN (use_3d=true)")
        if refine_loss_nodes not in ("occluded", "labelled"):
            raise ValueError(
                f"refine_loss_nodes must be occluded or labelled: {refine_loss_nodes}"
            )
        self.save_hyperparameters(logger=False, ignore=["graph_head"])
        self.graph_head = graph_head
        self.loss_weights = dict(loss_weights or {})
        self._init_metrics(alpha, keypoints)

    def _forward(self, batch: dict[str, Tensor], generator: torch.Generator | None = None):
        """ROIs ``(N, 4)`` and the graph head's outputs for one batch."""
        hp = self.hparams
        if "nodes" in batch:
            rois, nodes = batch["roi"], batch["nodes"]
            if nodes.shape[-1] != self.graph_head.encoder.mlp1.fc1.in_features:
                nodes = self.graph_head.make_nodes(nodes[..., :2], nodes[..., 2])
        else:
            rois = jitter_boxes(batch["box"], *hp.box_jitter, generator=generator)
            nodes = detector_like_graph(
                self.graph_head, batch["keypoints"], rois, hp.sigma_visible, hp.sigma_occluded,
                hp.swap_prob, hp.confidence_peak, hp.confidence_width, generator,
            )  # fmt: skip
        return rois, self.graph_head.forward_graph(nodes, _aspect(rois))

    def losses(
        self, out: dict[str, Tensor], batch: dict[str, Tensor], rois: Tensor
    ) -> dict[str, Tensor]:
        kps = batch["keypoints"]
        gt_roi = image_to_roi(kps[..., :2], rois)
        visible, occluded = kps[..., 2] == VISIBLE, kps[..., 2] == OCCLUDED
        enc, hp = self.graph_head.encoder, self.hparams
        refine = occluded | visible if hp.refine_loss_nodes == "labelled" else occluded
        losses = {
            "loss_edges": edge_loss(out["edge_logits"], visible, enc.send, enc.receive),
            "loss_occluded": masked_l2(out["refined"][..., :2], gt_roi, refine),
        }
        if "keypoints_3d" in out:
            losses["loss_reprojection"] = reprojection_loss(
                out, gt_roi, visible | occluded, hp.reprojection_target,
                tuple(hp.reprojection_exclude), hp.reprojection_detach,
            )  # fmt: skip
        return losses

    def _augment(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Training batches with ``shape_augment``: other cars, the same errors."""
        prob = self.hparams.shape_augment
        if prob <= 0:
            return batch
        enc = self.graph_head.encoder3d
        kps = batch["keypoints"]
        if "nodes" in batch:
            nodes, rois = batch["nodes"], batch["roi"]
            kps, xy = resample_shapes(
                kps, nodes[..., :2], rois, enc.mean, enc.basis, enc.sigma, prob
            )
            return {**batch, "keypoints": kps, "nodes": torch.cat([xy, nodes[..., 2:]], -1)}
        zeros = kps.new_zeros(*kps.shape[:2], 2)
        kps, _ = resample_shapes(kps, zeros, batch["box"], enc.mean, enc.basis, enc.sigma, prob)
        return {**batch, "keypoints": kps}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        batch = self._augment(batch)
        rois, out = self._forward(batch)
        return self._log_losses(self.losses(out, batch, rois), len(batch["box"]))

    def _eval(self, batch: dict[str, Tensor], batch_idx: int):
        g = torch.Generator(device=self.device).manual_seed(batch_idx)
        rois, out = self._forward(batch, g)
        kps, boxes = batch["keypoints"], batch["box"]
        self._update_metrics(self._predictions(out, rois), kps, boxes, out["visibility"])
        return rois, out

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval(batch, batch_idx)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any]:
        rois, out = self._eval(batch, batch_idx)
        ids = [str(int(i)) for i in batch["index"]]
        records = self._records(ids, batch["keypoints"], batch["box"], rois, out, batch_idx)
        return {"records": records}

    def configure_optimizers(self) -> dict[str, Any]:
        return {"optimizer": self.hparams.optimizer(params=self.parameters())}
