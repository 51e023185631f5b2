"""PointCloudPoseNet: unsupervised shape and pose from silhouettes (DPC; thesis chapter 5).

One training step (reference brief A2-A4): a batch of B models x V views (upstream 8 x 4);
the encoder runs on all B·V images, the shape (N points and the occupancy scale) comes from the
first view of each model only, the pose ensemble (K candidates + student) from every view. Each
shape is rendered with every candidate pose of every view of its model — B·V·K projections
(128), ordered [model][view][candidate] — at the scheduled blur σ and with the scheduled point
keep-probability; masks are resized to the render size G bilinearly. Losses:

- projection ``L_proj = (1/BV)·½·Σ_n Σ_px (M_n − S_{n,k*})²``, the minimum over candidates
  (only the winner gets gradient);
- student ``L_st = w_st·mean_n(1 − Δ_w²)`` with ``Δ = q_T ⊗ q̄_S`` and the winner as teacher
  (``student_loss: code``, weight 20; ``thesis`` = ``1 − Δ_w``);
- ``L_reg = weight_decay·Σ_W ½‖W‖²`` over weights only (biases excluded).

Switches (DESIGN section 6): ``camera_supervised`` renders with the ground-truth pose (the
encoder sees only the first view; no pose branch needed), ``projection: max`` uses the max
projection instead of DRC, ``keep_prob_start``/``keep_prob_end`` the point keep-probability
schedule 0.07 -> 1 (upstream's ``pc_point_dropout`` read as a keep probability),
``sigma_start``/``sigma_end`` the blur schedule 3.0 -> 0.2 voxels over ``schedule_steps``.

Evaluation (brief A5): every view predicts a cloud and (student) pose; unsupervised runs are
aligned with one global rotation ``q_ref`` estimated by ICP on the first ``align_num_models``
validation models at the end of every validation epoch (stored in the checkpoint as the buffer
``reference_rotation``), then Chamfer precision / coverage (×100), accuracy at
``pose_threshold_deg`` and the median angular error. The test loop writes per-model and summary
CSV/JSON files (and the alignment) into ``eval_output_dir``.
"""

from __future__ import annotations

import csv
import functools
import io
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from torch import Tensor, nn

from occaist.geometry.point_renderer import render_point_cloud
from occaist.geometry.quaternion import quaternion_conjugate, quaternion_multiply
from occaist.metrics.mask import MaskXOR, mask_xor
from occaist.metrics.point_cloud import ChamferDistance
from occaist.metrics.pose import PoseAccuracy, median_upper, quaternion_angle_deg
from occaist.models.dpc.alignment import AlignmentCollector, apply_alignment, icp_rotation
from occaist.models.dpc.losses import (
    linear_schedule,
    min_projection_loss,
    student_loss,
    subsample_points,
    weight_l2,
)
from occaist.utils.io import atomic_write, write_json_atomic
from occaist.utils.logging import RankedLogger

log = RankedLogger(__name__)

__all__ = ["PointCloudPoseNet"]

#: Panels: at most this many images of a batch are shown.
_PANEL_IMAGES = 4


class PointCloudPoseNet(pl.LightningModule):
    """DPC as a LightningModule; see the module docstring for the method and the switches.

    Args:
        net: the :class:`~occaist.models.dpc.networks.DPCNet`.
        optimizer: a partial optimizer (``torch.optim.Adam``, lr 1e-4 upstream).
        scheduler: optional partial LR scheduler (stepped every step); upstream's LR is constant.
        vox_size: G, render grid and silhouette size (64).
        gauss_kernel_size: 1D Gaussian kernel size (21).
        sigma_start, sigma_end: blur σ schedule in voxels (3.0 -> 0.2).
        keep_prob_start, keep_prob_end: point keep-probability schedule (0.07 -> 1.0).
        schedule_steps: T of both linear schedules (upstream: max_steps, 600k).
        projection: ``drc`` or ``max``.
        student_loss_weight: weight of the student loss (20, experiment configs).
        student_loss: ``code`` (1 − Δ_w²) or ``thesis`` (1 − Δ_w).
        weight_decay: L2 weight of ``Σ ½‖W‖²`` over weights (0.001).
        camera_supervised: use ground-truth poses instead of predicting them.
        image_log_every_n_steps: image panels to W&B / TensorBoard every so many steps (0: off).
        eval_output_dir: where the test loop writes its CSV / JSON files (None: nowhere).
        pose_threshold_deg: accuracy threshold (30°).
        align_num_models, align_top_views, align_top_models: global alignment selection
            (50 models, 2 views, 15 models).
        icp_max_correspondence, icp_iterations: ICP settings (0.2, 30).
        icp_num_points: points of each cloud used by ICP (None: all, as upstream).
        eval_sigma: blur σ of the validation projection loss and panels (voxels).
        render_chunk_size: projections rendered at a time (same results; faster on a CPU).
        realign_on_test: re-estimate the global alignment from the datamodule's validation split
            before testing (upstream computes it on the evaluated dataset's val split) instead
            of using the one stored by the last validation epoch.
        rgb_loss_weight: weight of upstream's ``pc_rgb`` colour loss, ``½‖I − C‖²`` per image
            between the input (resized to G) and the rendered colours of the winning candidate
            (needs ``net.predict_rgb``; 0 = off, the default of the experiments).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Any,
        scheduler: Any = None,
        vox_size: int = 64,
        gauss_kernel_size: int = 21,
        sigma_start: float = 3.0,
        sigma_end: float = 0.2,
        keep_prob_start: float = 0.07,
        keep_prob_end: float = 1.0,
        schedule_steps: int = 600000,
        projection: str = "drc",
        student_loss_weight: float = 20.0,
        student_loss: str = "code",
        weight_decay: float = 0.001,
        camera_supervised: bool = False,
        image_log_every_n_steps: int = 1000,
        eval_output_dir: str | None = None,
        pose_threshold_deg: float = 30.0,
        align_num_models: int = 50,
        align_top_views: int = 2,
        align_top_models: int = 15,
        icp_max_correspondence: float = 0.2,
        icp_iterations: int = 30,
        icp_num_points: int | None = 2048,
        eval_sigma: float = 0.5,
        render_chunk_size: int | None = 16,
        realign_on_test: bool = False,
        rgb_loss_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["net"])
        if projection not in ("drc", "max"):
            raise ValueError(f"projection must be 'drc' or 'max', got {projection!r}")
        if student_loss not in ("code", "thesis"):
            raise ValueError(f"student_loss must be 'code' or 'thesis', got {student_loss!r}")
        if not camera_supervised and not getattr(net, "predict_pose", True):
            raise ValueError("unsupervised DPC needs a net with predict_pose=true")
        if rgb_loss_weight > 0 and not getattr(net, "predict_rgb", False):
            raise ValueError("rgb_loss_weight > 0 needs a net with predict_rgb=true")
        self.net = net
        self.register_buffer("reference_rotation", torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.val_chamfer = ChamferDistance()
        self.test_chamfer = ChamferDistance()
        self.val_pose = PoseAccuracy(pose_threshold_deg)
        self.test_pose = PoseAccuracy(pose_threshold_deg)
        self.val_mask_xor = MaskXOR()
        self.test_mask_xor = MaskXOR()
        self.val_alignment = AlignmentCollector(align_top_views, align_top_models)
        self._test_records: list[dict[str, Any]] = []

    # ----------------------------------------------------------------------------- schedules
    def current_sigma(self) -> float:
        hp = self.hparams
        return linear_schedule(hp.sigma_start, hp.sigma_end, self.global_step, hp.schedule_steps)

    def current_keep_prob(self) -> float:
        hp = self.hparams
        keep = linear_schedule(
            hp.keep_prob_start, hp.keep_prob_end, self.global_step, hp.schedule_steps
        )
        return min(max(keep, hp.keep_prob_start), hp.keep_prob_end)

    # ------------------------------------------------------------------------------- helpers
    def render(
        self,
        points: Tensor,
        quaternions: Tensor,
        scale: Tensor | None,
        sigma: float,
        rgb: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """``silhouette`` ``(P, G, G)`` (and ``rgb`` ``(P, 3, G, G)`` for colours ``(P, N, 3)``)
        of clouds ``(P, N, 3)`` under poses ``(P, 4)``."""
        hp = self.hparams
        return render_point_cloud(
            points,
            quaternions,
            vox_size=hp.vox_size,
            sigma=sigma,
            kernel_size=hp.gauss_kernel_size,
            scale=scale,
            projection=hp.projection,
            return_depth=False,
            rgb=rgb,
            chunk_size=hp.render_chunk_size,
        )

    def _masks_at_render_size(self, masks: Tensor) -> Tensor:
        """Masks ``(n, 1, H, W)`` -> ``(n, G, G)`` (bilinear, as upstream's 128 -> 64)."""
        g = self.hparams.vox_size
        if masks.shape[-1] != g:
            masks = F.interpolate(masks, size=(g, g), mode="bilinear", align_corners=False)
        return masks[:, 0]

    def predict_views(self, images: Tensor) -> dict[str, Tensor]:
        """Per-view predictions for ``(B, V, 3, H, W)``: ``points`` (B, V, N, 3), ``scale``
        (B, V) and, unless camera-supervised, ``pose`` (B, V, 4) from the student head."""
        b, v = images.shape[:2]
        features = self.net.encode(images.flatten(0, 1))
        shape = self.net.decode_shape(features)
        out = {
            "points": shape["points"].view(b, v, -1, 3),
            "scale": shape["scale"].view(b, v),
        }
        if not self.hparams.camera_supervised:
            out["pose"] = self.net.decode_pose(features)["student"].view(b, v, 4)
        return out

    # ------------------------------------------------------------------------------ training
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Alias of :meth:`predict_views` (aligned outputs are produced by the eval loops)."""
        return self.predict_views(images)

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> Tensor | None:
        if batch is None:  # every model of the batch was unreadable (logged by the dataset)
            return None
        hp = self.hparams
        images, masks = batch["image"], batch["mask"]  # (B, V, 3, H, W), (B, V, 1, H, W)
        b, v = images.shape[:2]
        sigma, keep = self.current_sigma(), self.current_keep_prob()
        log_value = functools.partial(self.log, batch_size=b, sync_dist=True)
        target = self._masks_at_render_size(masks.flatten(0, 1))  # (BV, G, G)
        if hp.camera_supervised:
            features = self.net.encode(images[:, 0])
            shape = self.net.decode_shape(features)
            quats = batch["quaternion"].flatten(0, 1)[:, None]  # (BV, 1, 4)
            candidates_per_view = 1
        else:
            features = self.net.encode(images.flatten(0, 1))  # (BV, F)
            shape = self.net.decode_shape(features.view(b, v, -1)[:, 0])
            pose = self.net.decode_pose(features)
            quats = pose["candidates"]  # (BV, K, 4)
            candidates_per_view = quats.shape[1]
        k = candidates_per_view
        use_rgb = hp.rgb_loss_weight > 0
        cloud = shape["points"]  # (B, N, 3), with its colours alongside when they are used
        if use_rgb:
            cloud = torch.cat((cloud, shape["rgb"]), dim=-1)  # (B, N, 6)
        cloud = cloud[:, None, None].expand(-1, v, k, -1, -1)  # (B, V, K, N, 3 or 6)
        cloud = subsample_points(cloud.reshape(b * v * k, -1, cloud.shape[-1]), keep)
        scale = shape["scale"][:, None].expand(-1, v * k).reshape(-1)
        rendered = self.render(
            cloud[..., :3], quats.reshape(-1, 4), scale, sigma, cloud[..., 3:] if use_rgb else None
        )
        silhouettes = rendered["silhouette"].view(b * v, k, *target.shape[-2:])
        loss_proj, winner, _ = min_projection_loss(silhouettes, target)
        loss = loss_proj
        log_value("train/loss_proj", loss_proj, prog_bar=True)
        if use_rgb:
            colours = rendered["rgb"].view(b * v, k, 3, *target.shape[-2:])
            colours = colours[torch.arange(b * v, device=self.device), winner]  # (BV, 3, G, G)
            g = hp.vox_size
            image = F.interpolate(
                images.flatten(0, 1), size=(g, g), mode="bilinear", align_corners=False
            )
            loss_rgb = 0.5 * (image - colours).pow(2).flatten(1).sum(-1).mean()
            loss = loss + hp.rgb_loss_weight * loss_rgb
            log_value("train/loss_rgb", loss_rgb)
        if not hp.camera_supervised:
            teacher = quats.gather(1, winner[:, None, None].expand(-1, 1, 4)).squeeze(1)
            loss_st = student_loss(teacher, pose["student"], hp.student_loss).mean()
            loss = loss + hp.student_loss_weight * loss_st
            log_value("train/loss_student", loss_st)
        if hp.weight_decay > 0:
            loss_reg = hp.weight_decay * weight_l2(self.net)
            loss = loss + loss_reg
            log_value("train/loss_reg", loss_reg)
        log_value("train/loss", loss, prog_bar=True)
        self.log("train/sigma", sigma, batch_size=b)
        self.log("train/keep_prob", keep, batch_size=b)
        every = hp.image_log_every_n_steps
        if every and self.global_step % every == 0 and self._image_logger() is not None:
            self._log_panels(images, target.view(b, v, *target.shape[-2:]), silhouettes, shape)
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = self.hparams.optimizer(params=self.parameters())
        if self.hparams.scheduler is None:
            return {"optimizer": optimizer}
        scheduler = self.hparams.scheduler(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    # ------------------------------------------------------------------------------ panels
    def _image_logger(self) -> Any:
        loggers = self.loggers if self._trainer is not None else []
        for lg in loggers:
            if isinstance(lg, (WandbLogger, TensorBoardLogger)):
                return lg
        return None

    @torch.no_grad()
    def _log_panels(
        self, images: Tensor, masks: Tensor, silhouettes: Tensor, shape: dict[str, Tensor]
    ) -> None:
        """Input, mask, the silhouette of every candidate and the cloud rendered from a fixed
        view, one row per image (first views of the first models)."""
        from torchvision.utils import make_grid

        g = self.hparams.vox_size
        b, v = images.shape[:2]
        n = min(_PANEL_IMAGES, b)
        k = silhouettes.shape[1]
        sil = silhouettes.view(b, v, k, g, g)[:n, 0]  # (n, K, G, G)
        inputs = F.interpolate(images[:n, 0], size=(g, g), mode="bilinear", align_corners=False)
        side_view = torch.tensor([[0.924, 0.0, 0.383, 0.0]], device=self.device)  # 45° about y
        cloud = self.render(
            shape["points"][:n], side_view.expand(n, 4), None, self.hparams.eval_sigma
        )["silhouette"]
        rows = [inputs, masks[:n, 0, None].expand(-1, 3, -1, -1)]
        rows += [sil[:, i, None].expand(-1, 3, -1, -1) for i in range(k)]
        rows.append(cloud[:, None].expand(-1, 3, -1, -1))
        tiles = torch.stack(rows, dim=1).flatten(0, 1).clamp(0, 1).float().cpu()
        grid = make_grid(tiles, nrow=len(rows), padding=2, pad_value=0.5)
        lg = self._image_logger()
        caption = "input | mask | candidates 1..K | cloud (45°)"
        if isinstance(lg, WandbLogger):
            image = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
            lg.log_image("train/panels", images=[image], caption=[caption], step=self.global_step)
        elif isinstance(lg, TensorBoardLogger):
            lg.experiment.add_image("train/panels", grid, self.global_step)

    # ---------------------------------------------------------------------------- evaluation
    def _aligned_predictions(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        pred = self.predict_views(batch["image"])
        if self.hparams.camera_supervised:
            return pred
        points, pose = apply_alignment(pred["points"], pred["pose"], self.reference_rotation)
        return {
            **pred,
            "points": points,
            "pose": pose,
            "raw_pose": pred["pose"],
            "raw_points": pred["points"],
        }

    def _eval_projection(
        self, batch: dict[str, Any], pred: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Each view's own cloud rendered under its predicted (or GT) pose: the projection loss,
        the silhouettes ``(B, V, G, G)`` and the masks at render size ``(B, V, G, G)``."""
        b, v = batch["image"].shape[:2]
        quats = batch["quaternion"] if self.hparams.camera_supervised else pred["raw_pose"]
        points = pred["points"] if self.hparams.camera_supervised else pred["raw_points"]
        sil = self.render(
            points.flatten(0, 1),
            quats.flatten(0, 1),
            pred["scale"].flatten(),
            self.hparams.eval_sigma,
        )["silhouette"]
        target = self._masks_at_render_size(batch["mask"].flatten(0, 1))
        loss = 0.5 * (sil - target).pow(2).flatten(1).sum(-1).mean()
        return loss, sil.view(b, v, *sil.shape[1:]), target.view(b, v, *target.shape[1:])

    def _update_metrics(
        self,
        batch: dict[str, Any],
        pred: dict[str, Tensor],
        silhouettes: Tensor,
        masks: Tensor,
        split: str,
        records: list[dict[str, Any]] | None,
    ) -> None:
        """Chamfer, pose and mask-XOR metrics of ``split`` (and per-model ``records``)."""
        chamfer: ChamferDistance = getattr(self, f"{split}_chamfer")
        pose_metric: PoseAccuracy = getattr(self, f"{split}_pose")
        xor_metric: MaskXOR = getattr(self, f"{split}_mask_xor")
        xor = mask_xor(silhouettes, masks)  # (B, V): |S ⊕ M| / |M| at render size
        xor_metric.update(silhouettes.flatten(0, 1), masks.flatten(0, 1))
        gt_q = batch["quaternion"]
        errors = None
        if "pose" in pred:
            errors = quaternion_angle_deg(pred["pose"], gt_q)  # (B, V)
            pose_metric.update(pred["pose"], gt_q)
        for i in range(gt_q.shape[0]):
            n_gt = int(batch["num_points"][i]) if "num_points" in batch else 0
            record: dict[str, Any] = {
                "model_id": batch["model_id"][i],
                "mask_xor": float(xor[i].mean()),
                "views": int(xor.shape[1]),
            }
            if n_gt > 0:
                gt = batch["points"][i, :n_gt]
                chamfer.update(pred["points"][i], gt)
                record.update(  # this model's view-averaged values, just appended
                    precision=100 * float(chamfer.precision[-1]),
                    coverage=100 * float(chamfer.coverage[-1]),
                )
                record["chamfer"] = record["precision"] + record["coverage"]
            if errors is not None:
                record.update(
                    acc=float((errors[i] < self.hparams.pose_threshold_deg).float().mean()),
                    median_deg=float(median_upper(errors[i])),
                    errors_deg=" ".join(f"{e:.3f}" for e in errors[i].tolist()),
                )
            if records is not None:
                records.append(record)

    def _collect_alignment(self, batch: dict[str, Any], pred: dict[str, Tensor]) -> None:
        """ICP of every view of the first ``align_num_models`` validation models."""
        hp = self.hparams
        wanted = (batch["model_index"] < hp.align_num_models) & (batch["num_points"] > 0)
        if hp.camera_supervised or not bool(wanted.any()):
            return
        generator = torch.Generator(device="cpu").manual_seed(0)
        for i in wanted.nonzero().flatten().tolist():
            gt = batch["points"][i, : int(batch["num_points"][i])]
            gt = _subset(gt, hp.icp_num_points, generator)
            rmse, rots = [], []
            for view in range(pred["raw_points"].shape[1]):
                src = _subset(pred["raw_points"][i, view], hp.icp_num_points, generator)
                init = quaternion_multiply(
                    quaternion_conjugate(batch["quaternion"][i, view]), pred["raw_pose"][i, view]
                )
                rot, err = icp_rotation(
                    src, gt, init, hp.icp_max_correspondence, hp.icp_iterations
                )
                rmse.append(err)
                rots.append(rot)
            self.val_alignment.update(
                batch["model_index"][i : i + 1], torch.stack(rmse)[None], torch.stack(rots)[None]
            )

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        if batch is None:
            return
        pred = self._aligned_predictions(batch)
        loss, silhouettes, masks = self._eval_projection(batch, pred)
        self.log("val/loss_proj", loss, sync_dist=True, batch_size=batch["image"].shape[0])
        self._update_metrics(batch, pred, silhouettes, masks, "val", None)
        self._collect_alignment(batch, pred)

    def on_validation_epoch_end(self) -> None:
        if self._updated_anywhere(self.val_chamfer):
            for key, value in self.val_chamfer.compute().items():
                self.log(f"val/{key}", value)
        if self._updated_anywhere(self.val_pose):
            out = self.val_pose.compute()
            self.log("val/acc30", out["accuracy"])
            self.log("val/median_deg", out["median_deg"])
        if self._updated_anywhere(self.val_mask_xor):
            self.log("val/mask_xor", self.val_mask_xor.compute())
        if self._updated_anywhere(self.val_alignment) and not self.trainer.sanity_checking:
            self.reference_rotation.copy_(self.val_alignment.compute())
            log.info("global alignment q_ref = %s", self.reference_rotation.tolist())
        self.val_chamfer.reset()
        self.val_pose.reset()
        self.val_mask_xor.reset()
        self.val_alignment.reset()

    def test_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        if batch is None:
            return
        pred = self._aligned_predictions(batch)
        loss, silhouettes, masks = self._eval_projection(batch, pred)
        self.log("test/loss_proj", loss, sync_dist=True, batch_size=batch["image"].shape[0])
        self._update_metrics(batch, pred, silhouettes, masks, "test", self._test_records)

    def on_test_epoch_start(self) -> None:
        self._test_records = []
        if self.hparams.realign_on_test and not self.hparams.camera_supervised:
            self._realign_from_validation_split()

    @torch.no_grad()
    def _realign_from_validation_split(self) -> None:
        """Estimate ``q_ref`` from the first ``align_num_models`` validation models now."""
        datamodule = self.trainer.datamodule
        datamodule.setup("validate")
        self.val_alignment.reset()
        for batch in datamodule.val_dataloader():
            if batch is None:
                continue
            if int(batch["model_index"].min()) >= self.hparams.align_num_models:
                break
            batch = self.transfer_batch_to_device(batch, self.device, 0)
            pred = self.predict_views(batch["image"])
            raw = {"raw_points": pred["points"], "raw_pose": pred["pose"]}
            self._collect_alignment(batch, raw)
        if self._updated_anywhere(self.val_alignment):
            self.reference_rotation.copy_(self.val_alignment.compute())
            log.info("global alignment re-estimated for testing: %s", self.reference_rotation)
        self.val_alignment.reset()

    def on_test_epoch_end(self) -> None:
        summary: dict[str, Any] = {}
        if self._updated_anywhere(self.test_chamfer):
            for key, value in self.test_chamfer.compute().items():
                self.log(f"test/{key}", value)
                summary[key] = float(value)
        if self._updated_anywhere(self.test_pose):
            out = self.test_pose.compute()
            self.log("test/acc30", out["accuracy"])
            self.log("test/median_deg", out["median_deg"])
            summary.update(
                acc30=float(out["accuracy"]),
                median_deg=float(out["median_deg"]),
                mean_deg=float(out["mean_deg"]),
            )
        if self._updated_anywhere(self.test_mask_xor):
            value = self.test_mask_xor.compute()
            self.log("test/mask_xor", value)
            summary["mask_xor"] = float(value)
        self.test_chamfer.reset()
        self.test_pose.reset()
        self.test_mask_xor.reset()
        records = self._gather_records(self._test_records)
        if self.hparams.eval_output_dir and self.trainer.is_global_zero:
            self._write_eval_files(Path(self.hparams.eval_output_dir), summary, records)

    def _updated_anywhere(self, metric: Any) -> bool:
        """Whether any rank updated ``metric`` (so that every rank calls ``compute`` together)."""
        count = torch.tensor(float(metric.update_count), device=self.device)
        if self._trainer is not None and self.trainer.world_size > 1:
            count = self.trainer.strategy.reduce(count, reduce_op="sum")
        return bool(count > 0)

    def _gather_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return records
        gathered: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, records)
        seen, merged = set(), []
        for part in gathered:
            for rec in part:
                if rec["model_id"] not in seen:  # DistributedSampler pads with repeats
                    seen.add(rec["model_id"])
                    merged.append(rec)
        return merged

    def _write_eval_files(
        self, out_dir: Path, summary: dict[str, Any], records: list[dict[str, Any]]
    ) -> None:
        """``per_model_<split>.csv``, ``summary_<split>.{json,csv}``, ``alignment.json``."""
        datamodule = getattr(self.trainer, "datamodule", None)
        hp_data = getattr(datamodule, "hparams", {})
        split = str(hp_data.get("test_split", "test"))
        summary = {
            **summary,
            "split": split,
            "root": str(hp_data.get("root", "")),
            "models": len(records),
            "views": int(sum(r["views"] for r in records)),
            "reference_rotation": self.reference_rotation.tolist(),
            "camera_supervised": bool(self.hparams.camera_supervised),
        }
        columns = [
            "model_id",
            "precision",
            "coverage",
            "chamfer",
            "acc",
            "median_deg",
            "mask_xor",
            "views",
            "errors_deg",
        ]
        atomic_write(
            out_dir / f"per_model_{split}.csv", lambda p: p.write_text(_csv_text(columns, records))
        )
        write_json_atomic(out_dir / f"summary_{split}.json", summary)
        flat = {k: v for k, v in summary.items() if not isinstance(v, list)}
        atomic_write(
            out_dir / f"summary_{split}.csv", lambda p: p.write_text(_csv_text(list(flat), [flat]))
        )
        write_json_atomic(
            out_dir / "alignment.json",
            {
                "reference_rotation_wxyz": self.reference_rotation.tolist(),
                "applied_as": "P <- q_ref (x) P (x) conj(q_ref); q <- q (x) conj(q_ref)",
                "estimated_on": "first align_num_models models of the validation split",
            },
        )
        log.info("evaluation (%s, %d models) written to %s", split, len(records), out_dir)


def _subset(points: Tensor, count: int | None, generator: torch.Generator) -> Tensor:
    if count is None or points.shape[0] <= count:
        return points
    idx = torch.randperm(points.shape[0], generator=generator)[:count].to(points.device)
    return points[idx]


def _csv_text(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buffer.getvalue()
