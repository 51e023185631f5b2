"""Occlusion-Net LightningModules: the full detector (:class:`OcclusionNet`) and the graph head
alone on noisy ground-truth graphs (:class:`OcclusionGraphNet`, experiment ``occnet_graph``).

Evaluation (both): PCK@alpha (L = max side of the ground-truth box) on visible / occluded / all
of the 12 evaluated keypoints and by number of occluded keypoints, for three predictors from one
model side by side as in the paper: the heatmap argmax (Keypoint R-CNN; for the graph module the
noisy input graph), the 2D-KGNN and the 3D-KGNN projection; node visibility accuracy; and, at
test time, the noise study (Gaussian noise of each ``noise_sigmas`` on the input keypoints).
The test epoch writes ``occnet_eval.md`` / ``occnet_eval.json`` and ``pck_curves.png`` into the
run's output directory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAccuracy

from occaist.metrics.pck import EVALUATED_KEYPOINTS, PCK, plot_pck_curves
from occaist.models.occlusion_net.heads import keypoints_on_boxes
from occaist.models.occlusion_net.kgnn import KeypointGraphNet, image_to_roi, roi_to_image
from occaist.models.occlusion_net.losses import edge_loss, masked_l2
from occaist.utils.io import write_json_atomic, write_text_atomic
from occaist.utils.logging import RankedLogger

log = RankedLogger(__name__)

__all__ = ["OcclusionGraphNet", "OcclusionNet", "noisy_graph"]

#: Table rows: predictor key -> label (paper's names).
PREDICTORS = {"heatmap": "heatmap (Keypoint R-CNN)", "kgnn2d": "2D-KGNN", "kgnn3d": "3D-KGNN"}
VISIBLE, OCCLUDED = 2, 1


def noisy_graph(
    graph_head: KeypointGraphNet,
    keypoints: Tensor,
    boxes: Tensor,
    sigma_visible: float,
    sigma_occluded: float,
    conf_visible: Sequence[float],
    conf_occluded: Sequence[float],
    generator: torch.Generator | None = None,
) -> Tensor:
    """Detector-like input graph from ground truth (the legacy synthetic recipe, generalised).

    Args:
        keypoints: ``(N, K, 3)`` pixels with COCO ``v``; boxes ``(N, 4)`` xyxy (the ROI).
        sigma_visible, sigma_occluded: std of the Gaussian noise in ROI-frame units (the ROI
            spans [-1, 1]); occluded nodes get the larger one, like a detector's guesses.
        conf_visible, conf_occluded: ``[low, high]`` of the uniform node confidences.

    Returns:
        Nodes ``(N, K, D)``; unlabelled nodes sit at the ROI centre with confidence 0.
    """
    xy = image_to_roi(keypoints[..., :2], boxes)
    v = keypoints[..., 2]
    shape, dev = v.shape, keypoints.device

    def uniform(lo_hi: Sequence[float]) -> Tensor:
        u = torch.rand(shape, generator=generator, device=dev)
        return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * u

    sigma = torch.where(v == OCCLUDED, sigma_occluded, sigma_visible)[..., None]
    noise = torch.randn((*shape, 2), generator=generator, device=dev) * sigma
    conf = torch.where(v == OCCLUDED, uniform(conf_occluded), uniform(conf_visible))
    labelled = (v > 0)[..., None]
    xy = torch.where(labelled, xy + noise, torch.zeros_like(xy))
    conf = torch.where(v > 0, conf, torch.zeros_like(conf))
    return graph_head.make_nodes(xy, conf)


class _EvalMixin:
    """PCK per predictor, visibility accuracy and the test-time report (shared)."""

    #: Table label of the ``heatmap`` predictor (the graph module's input is noisy GT).
    input_label = PREDICTORS["heatmap"]

    def _label(self, predictor: str) -> str:
        return self.input_label if predictor == "heatmap" else PREDICTORS[predictor]

    def _init_eval(
        self,
        alpha: float,
        noise_sigmas: Sequence[float],
        noise_confidence: Sequence[float],
        has_3d: bool,
    ) -> None:
        self.predictors = [p for p in PREDICTORS if p != "kgnn3d" or has_3d]
        self.pck = nn.ModuleDict(
            {
                f"{split}_{p}": PCK(alpha=alpha)
                for split in ("val", "test")
                for p in self.predictors
            }
        )
        self.vis_acc = nn.ModuleDict({s: BinaryAccuracy() for s in ("val", "test")})
        self.noise_sigmas = [float(s) for s in noise_sigmas]
        self.noise_confidence = [float(c) for c in noise_confidence]
        self.noise_pck = nn.ModuleDict(
            {
                f"{i}_{p}": PCK(alpha=alpha)
                for i in range(len(self.noise_sigmas))
                for p in self.predictors
            }
        )
        self.eval_keypoints = torch.tensor(EVALUATED_KEYPOINTS)

    def _update_eval(
        self, split: str, preds: dict[str, Tensor], gt: Tensor, boxes: Tensor, visibility: Tensor
    ) -> None:
        """``preds``: predictor -> ``(N, K, 2)`` pixels; ``gt`` ``(N, K, 3)``; ``boxes`` (N, 4);
        ``visibility`` ``(N, K)`` predicted probability of being visible."""
        for p in self.predictors:
            self.pck[f"{split}_{p}"].update(preds[p], gt[..., :2], gt[..., 2], boxes)
        kp = self.eval_keypoints.to(gt.device)
        labelled = gt[:, kp, 2] > 0
        if labelled.any():
            self.vis_acc[split].update(
                visibility[:, kp][labelled], (gt[:, kp, 2][labelled] == VISIBLE).long()
            )

    @torch.no_grad()
    def _noise_step(self, gt: Tensor, boxes: Tensor, batch_seed: int) -> None:
        """Noise study: GT graphs with Gaussian noise ``sigma`` on every labelled node and the
        fixed confidences ``noise_confidence`` (visible, occluded) of a detector."""
        head = self.graph_head
        g = torch.Generator(device=gt.device).manual_seed(batch_seed)
        wh = (boxes[:, 2:] - boxes[:, :2]).clamp_min(1e-3)
        for i, sigma in enumerate(self.noise_sigmas):
            c_vis, c_occ = self.noise_confidence
            nodes = noisy_graph(head, gt, boxes, sigma, sigma, (c_vis, c_vis), (c_occ, c_occ), g)
            out = head.forward_graph(nodes, wh[:, 0] / wh[:, 1])
            preds = {"heatmap": out["keypoints_heatmap"], "kgnn2d": out["keypoints_2d"]}
            if "keypoints_3d" in out:
                preds["kgnn3d"] = out["keypoints_3d"]
            for p in self.predictors:
                self.noise_pck[f"{i}_{p}"].update(
                    roi_to_image(preds[p], boxes), gt[..., :2], gt[..., 2], boxes
                )

    def _log_eval(self, split: str) -> dict[str, dict[str, float]]:
        table: dict[str, dict[str, float]] = {}
        for p in self.predictors:
            metric = self.pck[f"{split}_{p}"]
            res = {k: float(v) for k, v in metric.compute().items()}
            table[p] = res
            for key in ("visible", "occluded", "all"):
                if not math.isnan(res[key]):
                    self.log(f"{split}/pck_{key}_{p}", res[key])
            if split == "test":
                table[p]["_curve"] = {k: v.tolist() for k, v in metric.curves().items()}
                table[p]["_alphas"] = metric.alphas
            metric.reset()
        acc = self.vis_acc[split]
        if acc.update_count > 0:
            table["visibility_accuracy"] = {"all": float(acc.compute())}
            self.log(f"{split}/visibility_accuracy", table["visibility_accuracy"]["all"])
        acc.reset()
        return table

    def _noise_table(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for i, sigma in enumerate(self.noise_sigmas):
            row = {}
            for p in self.predictors:
                metric = self.noise_pck[f"{i}_{p}"]
                if metric.update_count:
                    res = metric.compute()
                    row[p] = float(res["occluded"])
                    row[f"{p}_all"] = float(res["all"])
                metric.reset()
            out[f"{sigma:g}"] = row
        return out

    def _write_report(self, table: dict[str, Any], noise: dict[str, Any], alpha: float) -> None:
        if not self.trainer.is_global_zero:
            return
        out_dir = Path(self.trainer.default_root_dir)
        buckets = [
            n
            for n in range(1, len(EVALUATED_KEYPOINTS) + 1)
            if any(
                not math.isnan(table[p].get(f"occluded_{n}", math.nan)) for p in self.predictors
            )
        ]
        head = ["predictor", "visible", "occluded", "all", *[f"occ={n}" for n in buckets]]
        lines = [
            f"# Occlusion-Net evaluation: PCK@{alpha:g} (%), L = max side of the GT box, "
            f"{len(EVALUATED_KEYPOINTS)} keypoints",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for p in self.predictors:
            r = table[p]
            vals = [r["visible"], r["occluded"], r["all"], *[r[f"all_{n}"] for n in buckets]]
            lines.append(f"| {self._label(p)} | " + " | ".join(_pct(v) for v in vals) + " |")
        lines += ["", "occ=n: PCK on all evaluated keypoints of instances with n occluded ones."]
        if "visibility_accuracy" in table:
            lines.append(f"Node visibility accuracy: {_pct(table['visibility_accuracy']['all'])}")
        if noise:
            lines += [
                "",
                "## Noise study: PCK on occluded keypoints vs input noise sigma (ROI-frame units)",
                "",
                "| sigma | " + " | ".join(self._label(p) for p in self.predictors) + " |",
                "|" + "---|" * (len(self.predictors) + 1),
            ]
            for sigma, row in noise.items():
                lines.append(
                    f"| {sigma} | "
                    + " | ".join(_pct(row.get(p, math.nan)) for p in self.predictors)
                    + " |"
                )
        write_text_atomic(out_dir / "occnet_eval.md", "\n".join(lines) + "\n")
        clean = {
            p: {k: v for k, v in r.items() if not k.startswith("_")} for p, r in table.items()
        }
        write_json_atomic(
            out_dir / "occnet_eval.json", {"pck": clean, "noise": noise, "alpha": alpha}
        )
        curves = {
            self._label(p): (table[p]["_alphas"], table[p]["_curve"]["occluded"])
            for p in self.predictors
        }
        plot_pck_curves(curves, out_dir / "pck_curves.png", title="occluded keypoints")
        for n in buckets:  # the paper's figures: one per number of occluded keypoints
            by_n = {
                self._label(p): (table[p]["_alphas"], table[p]["_curve"][f"all_{n}"])
                for p in self.predictors
            }
            title = f"{n}/{len(EVALUATED_KEYPOINTS)} occluded"
            plot_pck_curves(by_n, out_dir / f"pck_curves_occ{n}.png", title=title)
        log.info("wrote %s", out_dir / "occnet_eval.md")


def _pct(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _param_groups(
    module: nn.Module, lr: float, bias_lr_factor: float, bias_weight_decay: float
) -> list[dict[str, Any]]:
    """maskrcnn_benchmark's groups: biases at ``bias_lr_factor`` x LR without weight decay."""
    weights = [
        p for n, p in module.named_parameters() if p.requires_grad and not n.endswith("bias")
    ]
    biases = [p for n, p in module.named_parameters() if p.requires_grad and n.endswith("bias")]
    return [
        {"params": weights},
        {"params": biases, "lr": lr * bias_lr_factor, "weight_decay": bias_weight_decay},
    ]


def _warmup(optimizer: torch.optim.Optimizer, iters: int, factor: float) -> dict[str, Any]:
    """Linear warm-up from ``factor`` to 1 over ``iters`` steps, then constant (the paper's
    schedule never reaches its decay steps)."""

    def scale(step: int) -> float:
        return 1.0 if step >= iters else factor + (1.0 - factor) * step / max(iters, 1)

    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
    return {"scheduler": sched, "interval": "step"}


def _weighted(losses: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    unknown = set(losses) - set(weights)
    if unknown:
        raise KeyError(f"no weight for losses {sorted(unknown)}; add them to loss_weights")
    return sum(weights[k] * v for k, v in losses.items())


class OcclusionNet(_EvalMixin, pl.LightningModule):
    """Keypoint R-CNN + 2D/3D KGNN trained end to end (Occlusion-Net).

    Args:
        net: the detector from ``heads.build_occlusion_rcnn`` (nested ``_target_``).
        optimizer: a ``_partial_`` optimizer (paper: SGD lr 2.5e-4, momentum 0.9, wd 1e-4).
        warmup_iters, warmup_factor: linear warm-up (paper: 500 steps from 1/3).
        bias_lr_factor, bias_weight_decay: bias parameter group (paper: 2x LR, no decay).
        loss_weights: weight of every named loss (torchvision's and ``loss_keypoint``,
            ``loss_edges``, ``loss_occluded``, ``loss_reprojection``).
        alpha: PCK threshold; noise_sigmas: test-time noise study on GT graphs (ROI units);
        noise_confidence: the node confidences (visible, occluded) of the noise study.
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
        noise_sigmas: list[float] = (0.0, 0.05, 0.1, 0.2),
        noise_confidence: list[float] = (1.0, 0.3),
        graph_head_checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["net"])
        self.net = net
        self.loss_weights = dict(loss_weights or {})
        self.train_loss = MeanMetric()
        graph_head: KeypointGraphNet = net.roi_heads.graph_head
        self._init_eval(alpha, noise_sigmas, noise_confidence, graph_head.encoder3d is not None)
        if graph_head_checkpoint:
            load_graph_head(graph_head, graph_head_checkpoint)

    @property
    def graph_head(self) -> KeypointGraphNet:
        return self.net.roi_heads.graph_head

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        return self.net(images)

    def training_step(self, batch: tuple[list, list], batch_idx: int) -> Tensor:
        images, targets = batch
        losses = self.net(images, targets)
        loss = _weighted(losses, self.loss_weights)
        n = len(images)
        for name, value in losses.items():
            self.log(f"train/{name}", value, batch_size=n, sync_dist=True)
        self.train_loss(loss.detach())
        self.log("train/loss", self.train_loss, prog_bar=True, batch_size=n)
        return loss

    def _eval_step(self, batch: tuple[list, list], split: str) -> None:
        images, targets = batch
        boxes = [t["boxes"] for t in targets]
        preds = keypoints_on_boxes(self.net, images, boxes)
        keep = [i for i, b in enumerate(boxes) if len(b)]
        if not keep:
            return
        gt = torch.cat([targets[i]["keypoints"] for i in keep])
        gt_boxes = torch.cat([boxes[i] for i in keep])
        by_pred = {
            "heatmap": "keypoints_heatmap",
            "kgnn2d": "keypoints",
            "kgnn3d": "keypoints_kgnn3d",
        }
        out = {
            p: torch.cat([preds[i][by_pred[p]][..., :2] for i in keep]) for p in self.predictors
        }
        vis = torch.cat([preds[i]["keypoint_visibility"] for i in keep])
        self._update_eval(split, out, gt, gt_boxes, vis)
        if split == "test":
            self._noise_step(gt, gt_boxes, batch_seed=len(gt))

    def validation_step(self, batch: tuple[list, list], batch_idx: int) -> None:
        self._eval_step(batch, "val")
        if batch_idx == 0:
            self._log_panel(batch)

    def _image_logger(self) -> Any:
        loggers = self.loggers if self._trainer is not None else []
        return next(
            (lg for lg in loggers if isinstance(lg, (WandbLogger, TensorBoardLogger))), None
        )

    @torch.no_grad()
    def _log_panel(self, batch: tuple[list, list]) -> None:
        """First validation image three times: ground truth (green visible, red occluded), the
        heatmap argmax and the 2D-KGNN keypoints (green: predicted visible, red: occluded)."""
        lg = self._image_logger()
        if lg is None:
            return
        from torchvision.utils import draw_keypoints, make_grid

        image, target = batch[0][0], batch[1][0]
        if not len(target["boxes"]):
            return
        pred = keypoints_on_boxes(self.net, [image], [target["boxes"]])[0]
        canvas = (image.clamp(0, 1) * 255).to(torch.uint8).cpu()

        def draw(points: Tensor, visible: Tensor, shown: Tensor) -> Tensor:
            out = canvas
            for mask, colour in ((visible & shown, "lime"), (~visible & shown, "red")):
                pts = points[..., :2].cpu().clone()
                out = draw_keypoints(out, pts, visibility=mask.cpu(), colors=colour, radius=2)
            return out

        gt = target["keypoints"]
        every = torch.ones_like(gt[..., 2], dtype=torch.bool)
        vis_pred = pred["keypoint_visibility"] > 0.5
        tiles = [
            draw(gt, gt[..., 2] == VISIBLE, gt[..., 2] > 0),
            draw(pred["keypoints_heatmap"], every, every),
            draw(pred["keypoints"], vis_pred, every),
        ]
        grid = make_grid(torch.stack(tiles).float() / 255, nrow=3, padding=2, pad_value=0.5)
        caption = "ground truth | heatmap | 2D-KGNN"
        if isinstance(lg, WandbLogger):
            lg.log_image("val/keypoints", images=[grid], caption=[caption], step=self.global_step)
        else:
            lg.experiment.add_image("val/keypoints", grid, self.global_step)

    def test_step(self, batch: tuple[list, list], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        table = self._log_eval("test")
        self._write_report(table, self._noise_table(), self.hparams.alpha)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        lr = float(hp.optimizer.keywords["lr"])
        groups = _param_groups(self.net, lr, hp.bias_lr_factor, hp.bias_weight_decay)
        optimizer = hp.optimizer(params=groups)
        return {
            "optimizer": optimizer,
            "lr_scheduler": _warmup(optimizer, hp.warmup_iters, hp.warmup_factor),
        }


def load_graph_head(graph_head: KeypointGraphNet, checkpoint: str | Path) -> None:
    """Load the ``graph_head.*`` weights of an :class:`OcclusionGraphNet` checkpoint."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"graph head checkpoint {path} not found (train occnet_graph)")
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    prefix = "graph_head."
    sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not sub:
        raise KeyError(f"{path} holds no {prefix}* weights: not an occnet_graph checkpoint")
    graph_head.load_state_dict(sub, strict=True)
    log.info("loaded graph head from %s (%d tensors)", path, len(sub))


class OcclusionGraphNet(_EvalMixin, pl.LightningModule):
    """The KGNNs alone, trained on ground-truth keypoint graphs with detector-like noise.

    The input graph is :func:`noisy_graph` of the ground truth (noise larger on occluded nodes,
    as upstream's legacy synthetic recipe); the targets are the ground-truth positions (the
    ``annotated`` occluded-keypoint loss) and visibilities. The checkpoint's ``graph_head.*``
    weights load into :class:`OcclusionNet` (``graph_head_checkpoint``) when both use the same
    ``graph_head`` config.

    Args:
        graph_head: the :class:`KeypointGraphNet`.
        optimizer: a ``_partial_`` optimizer.
        sigma_visible, sigma_occluded: input noise std (ROI-frame units).
        conf_visible, conf_occluded: ranges of the simulated heatmap confidences.
        loss_weights: weights of ``loss_edges``, ``loss_occluded``, ``loss_reprojection``.
        reprojection_target: ``"kgnn2d"`` or ``"ground_truth"`` (see ``OcclusionRoIHeads``).
        reprojection_exclude: keypoints out of the reprojection loss.
        alpha, noise_sigmas, noise_confidence: evaluation (see :class:`OcclusionNet`).
    """

    input_label = "noisy input"

    def __init__(
        self,
        graph_head: KeypointGraphNet,
        optimizer: Any,
        sigma_visible: float = 0.03,
        sigma_occluded: float = 0.15,
        conf_visible: list[float] = (0.4, 1.0),
        conf_occluded: list[float] = (0.0, 0.6),
        loss_weights: dict[str, Any] | None = None,
        reprojection_target: str = "kgnn2d",
        reprojection_exclude: list[int] = (8, 13),
        alpha: float = 0.1,
        noise_sigmas: list[float] = (0.0, 0.05, 0.1, 0.2),
        noise_confidence: list[float] = (1.0, 0.3),
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["graph_head"])
        self.graph_head = graph_head
        self.loss_weights = dict(loss_weights or {})
        self.train_loss = MeanMetric()
        self._init_eval(alpha, noise_sigmas, noise_confidence, graph_head.encoder3d is not None)

    def _run(self, batch: dict[str, Tensor], generator: torch.Generator | None = None):
        hp = self.hparams
        kps, boxes = batch["keypoints"], batch["box"]
        nodes = noisy_graph(
            self.graph_head,
            kps,
            boxes,
            hp.sigma_visible,
            hp.sigma_occluded,
            hp.conf_visible,
            hp.conf_occluded,
            generator,
        )
        wh = (boxes[:, 2:] - boxes[:, :2]).clamp_min(1e-3)
        return self.graph_head.forward_graph(nodes, wh[:, 0] / wh[:, 1])

    def losses(self, out: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        kps, boxes = batch["keypoints"], batch["box"]
        gt_roi = image_to_roi(kps[..., :2], boxes)
        visible, occluded = kps[..., 2] == VISIBLE, kps[..., 2] == OCCLUDED
        enc = self.graph_head.encoder
        losses = {
            "loss_edges": edge_loss(out["edge_logits"], visible, enc.send, enc.receive),
            "loss_occluded": masked_l2(out["refined"][..., :2], gt_roi, occluded),
        }
        if "keypoints_3d" in out:
            keep = torch.ones_like(visible)
            keep[:, list(self.hparams.reprojection_exclude)] = False
            if self.hparams.reprojection_target == "kgnn2d":
                target, mask = out["keypoints_2d"], keep
            else:
                target, mask = gt_roi, keep & (visible | occluded)
            losses["loss_reprojection"] = masked_l2(out["keypoints_3d"], target, mask)
        return losses

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self._run(batch)
        losses = self.losses(out, batch)
        loss = _weighted(losses, self.loss_weights)
        n = len(batch["box"])
        for name, value in losses.items():
            self.log(f"train/{name}", value, batch_size=n, sync_dist=True)
        self.train_loss(loss.detach())
        self.log("train/loss", self.train_loss, prog_bar=True, batch_size=n)
        return loss

    def _eval_step(self, batch: dict[str, Tensor], batch_idx: int, split: str) -> None:
        g = torch.Generator(device=self.device).manual_seed(batch_idx)
        out = self._run(batch, g)
        boxes, kps = batch["box"], batch["keypoints"]
        preds = {"heatmap": out["keypoints_heatmap"], "kgnn2d": out["keypoints_2d"]}
        if "keypoints_3d" in out:
            preds["kgnn3d"] = out["keypoints_3d"]
        preds = {p: roi_to_image(v, boxes) for p, v in preds.items()}
        self._update_eval(split, preds, kps, boxes, out["visibility"])
        if split == "test":
            self._noise_step(kps, boxes, batch_idx)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        table = self._log_eval("test")
        self._write_report(table, self._noise_table(), self.hparams.alpha)

    def configure_optimizers(self) -> dict[str, Any]:
        return {"optimizer": self.hparams.optimizer(params=self.parameters())}
