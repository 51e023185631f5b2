"""The KGNNs alone (:class:`OcclusionGraphNet`, experiment ``occnet_graph``): a training step on
detector-like graphs plus the metrics and records of :class:`~.module.GraphHeadModule`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from occaist.data.keypoints import EVALUATED_KEYPOINTS, OCCLUDED, VISIBLE
from occaist.models.occlusion_net.kgnn import KeypointGraphNet, image_to_roi
from occaist.models.occlusion_net.losses import edge_loss, masked_l2, reprojection_loss
from occaist.models.occlusion_net.module import GraphHeadModule, box_aspect
from occaist.models.occlusion_net.stand_in import (
    detector_like_graph,
    jitter_boxes,
    resample_shapes,
)

__all__ = ["OcclusionGraphNet"]


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
        sigma_visible, sigma_occluded, swap_prob, outlier_prob, outlier_part_share,
            confidence_peak, confidence_width, confidence_floor, box_jitter: the stand-in
            (``stand_in``; sigmas as fractions of the box side).
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
        outlier_prob: float = 0.0,
        outlier_part_share: float = 0.0,
        confidence_peak: float = 0.9,
        confidence_width: float = 0.05,
        confidence_floor: float = 0.0,
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
                outlier_prob=hp.outlier_prob, confidence_floor=hp.confidence_floor,
                outlier_part_share=hp.outlier_part_share,
            )  # fmt: skip
        return rois, self.graph_head.forward_graph(nodes, box_aspect(rois))

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
