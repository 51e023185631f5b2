"""PointCloudPoseNet: unsupervised shape and pose from silhouettes (DPC; thesis chapter 5).

One training step: a batch of B models x V views (upstream 8 x 4); the encoder runs on all B·V
images, the shape (N points and the occupancy scale) comes from the first view of each model
only, the pose ensemble (K candidates + student) from every view. Each shape is rendered with
every candidate pose of every view of its model (B·V·K projections, ordered
[model][view][candidate]) at the scheduled blur σ and point keep-probability; masks are resized
to the render size G bilinearly. Losses (``losses.py``):

- projection ``L_proj = (1/BV)·½·Σ_n Σ_px (M_n − S_{n,k*})²``, the minimum over candidates (only
  the winner gets gradient; ``loser_loss_weight`` > 0 gives the others a decaying share, ours);
- student ``L_st = w_st·mean_n(1 − Δ_w²)``, ``Δ = q_T ⊗ q̄_S``, the winner as teacher (``code``,
  weight 20; ``thesis``: ``1 − Δ_w``; a selecting student: cross-entropy naming the winner, ours);
- ``L_reg = weight_decay·Σ_W ½‖W‖²`` over weights only (biases excluded).

Switches (``docs/dpc.md``, "Faithfulness"): ``camera_supervised`` renders with the true pose,
``projection: max`` the max projection instead of DRC, the σ and keep-probability schedules,
the candidates' initialisation and the student's form (``net.pose_init`` / ``net.student_form``).

Evaluation: every view predicts a cloud and a pose (the student's, or with ``test_pose=
silhouette_fit`` the candidate that fits the input's alpha best, ours), aligned by one global
rotation ``q_ref`` (``alignment.py``) estimated at the end of every validation epoch
(stored in the checkpoint as the buffer ``reference_rotation``). ``test_step`` returns one record
per model and :class:`~occaist.evaluation.point_clouds.PointCloudEvaluator` writes the report
(tables with baselines, per-model rows, diagnostics); this module writes no files.
"""

from __future__ import annotations

import functools
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from occaist.callbacks.image_panels import image_logger
from occaist.evaluation.point_clouds import PointCloudEvaluator
from occaist.geometry.point_renderer import render_point_cloud
from occaist.metrics.mask import MaskXOR
from occaist.metrics.point_cloud import ChamferDistance
from occaist.metrics.pose import PoseAccuracy, PoseDiagnostics
from occaist.models.dpc.alignment import AlignmentCollector, apply_alignment
from occaist.models.dpc.diagnostics import win_fractions
from occaist.models.dpc.evaluation_steps import (
    TEST_POSES,
    add_test_diagnostics,
    collect_alignment,
    eval_projection,
    log_training_panels,
    model_records,
    optimizer_param_groups,
    point_cloud_evaluator,
    predict_images,
    realign_from_validation_split,
    silhouette_fit_pose,
)
from occaist.models.dpc.losses import (
    linear_schedule,
    min_projection_loss,
    shape_consistency_loss,
    student_term,
    subsample_points,
    weight_l2,
)
from occaist.utils.logging import RankedLogger

log = RankedLogger(__name__)

__all__ = ["PointCloudPoseNet"]


class PointCloudPoseNet(pl.LightningModule):
    """DPC as a LightningModule; see the module docstring for the method and the switches.

    ``net`` is the :class:`~occaist.models.dpc.networks.DPCNet` and ``optimizer`` /
    ``scheduler`` partials (upstream: Adam 1e-4, constant). Every other argument is a key of
    ``conf/model/dpc.yaml``, documented there with its upstream value and in ``docs/dpc.md``
    ("Config knobs"). Ours, not upstream's: ``loser_loss_*`` (a decaying loss share for the
    non-winners), ``student_lr_scale`` (the student head's learning rate over the rest's),
    ``shape_consistency_*`` (Chamfer between the clouds of views of one model; 0: off),
    ``align_consensus_deg`` and ``align_pose_vote`` (which ICP rotations the alignment averages;
    None / false: upstream's plain average), ``test_pose`` (``silhouette_fit``: the candidate that
    fits the input's alpha), ``test_icp_num_points`` (ICP points before testing; None: all),
    ``eval_candidate_wins`` and ``template_models`` (diagnostics and a baseline).
    ``eval_output_dir`` is ignored (the evaluation callback writes the files; old checkpoints).
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
        loser_loss_weight: float = 0.0,
        loser_loss_steps: int = 0,
        student_lr_scale: float = 1.0,
        shape_consistency_weight: float = 0.0,
        shape_consistency_points: int | None = 256,
        camera_supervised: bool = False,
        image_log_every_n_steps: int = 1000,
        panel_rows: int = 4,
        panel_view_yaw_deg: float = 45.0,
        pose_threshold_deg: float = 30.0,
        align_num_models: int = 50,
        align_top_views: int = 2,
        align_top_models: int = 15,
        align_consensus_deg: float | None = 30.0,
        align_pose_vote: bool = True,
        icp_max_correspondence: float = 0.2,
        icp_iterations: int = 30,
        icp_num_points: int | None = 2048,
        test_icp_num_points: int | None = None,
        eval_sigma: float = 0.5,
        eval_candidate_wins: bool = True,
        template_models: int = 12,
        render_chunk_size: int | None = 16,
        realign_on_test: bool = False,
        test_pose: str = "student",
        rgb_loss_weight: float = 0.0,
        eval_output_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["net"])
        if projection not in ("drc", "max"):
            raise ValueError(f"projection must be 'drc' or 'max', got {projection!r}")
        if student_loss not in ("code", "thesis") or test_pose not in TEST_POSES:
            raise ValueError(f"student_loss: 'code' | 'thesis' (got {student_loss!r}), "
                             f"test_pose: {TEST_POSES} (got {test_pose!r})")  # fmt: skip
        if not camera_supervised and not getattr(net, "predict_pose", True):
            raise ValueError("unsupervised DPC needs a net with predict_pose=true")
        if rgb_loss_weight > 0 and not getattr(net, "predict_rgb", False):
            raise ValueError("rgb_loss_weight > 0 needs a net with predict_rgb=true")
        self.net = net
        self.register_buffer("reference_rotation", torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.acc_name = f"acc{pose_threshold_deg:g}"
        for split in ("val", "test"):
            setattr(self, f"{split}_chamfer", ChamferDistance())
            setattr(self, f"{split}_pose", PoseAccuracy(pose_threshold_deg))
            setattr(self, f"{split}_mask_xor", MaskXOR())
        self.val_pose_diagnostics = PoseDiagnostics(pose_threshold_deg)
        vote = pose_threshold_deg if align_pose_vote else None  # ours (alignment.py)
        self.val_alignment = AlignmentCollector(
            align_top_views, align_top_models, align_consensus_deg, vote
        )

    def current_sigma(self) -> float:
        hp = self.hparams
        return linear_schedule(hp.sigma_start, hp.sigma_end, self.global_step, hp.schedule_steps)

    def current_keep_prob(self) -> float:
        hp = self.hparams
        keep = linear_schedule(
            hp.keep_prob_start, hp.keep_prob_end, self.global_step, hp.schedule_steps
        )
        return min(max(keep, hp.keep_prob_start), hp.keep_prob_end)

    def current_loser_weight(self) -> float:
        hp = self.hparams
        if hp.loser_loss_weight <= 0 or hp.loser_loss_steps <= 0:
            return 0.0
        return linear_schedule(hp.loser_loss_weight, 0.0, self.global_step, hp.loser_loss_steps)

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

    def predict_views(self, images: Tensor, masks: Tensor | None = None) -> dict[str, Any]:
        """Per-view predictions for ``(B, V, 3, H, W)``: ``points`` (B, V, N, 3), ``scale``
        (B, V) and, unless camera-supervised, ``candidates`` (B, V, K, 4) and ``pose`` (B, V, 4):
        the student head's or, with ``test_pose=silhouette_fit`` (ours) and the inputs' masks
        ``(B, V, 1, H, W)``, the candidate that fits them best (``pose_source`` says which)."""
        b, v = images.shape[:2]
        features = self.net.encode(images.flatten(0, 1))
        shape = self.net.decode_shape(features)
        out = {"points": shape["points"].view(b, v, -1, 3), "scale": shape["scale"].view(b, v)}
        if not self.hparams.camera_supervised:
            pose = self.net.decode_pose(features)
            out["pose"] = pose["student"].view(b, v, 4)
            out["candidates"] = pose["candidates"].view(b, v, -1, 4)
            out["pose_source"] = "student"
            if self.hparams.test_pose == "silhouette_fit" and masks is not None:
                out["pose"], out["winners"] = silhouette_fit_pose(self, out, masks)
                out["pose_source"] = "silhouette_fit"
        return out

    def forward(self, images: Tensor) -> dict[str, Tensor]:  # raw (unaligned) predictions
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
        loss_shape = None
        if hp.camera_supervised:
            features = self.net.encode(images[:, 0])
            shape = self.net.decode_shape(features)
            quats = batch["quaternion"].flatten(0, 1)[:, None]  # (BV, 1, 4)
        else:
            features = self.net.encode(images.flatten(0, 1))  # (BV, F)
            if hp.shape_consistency_weight > 0 and v > 1:  # ours: every view's cloud
                every = self.net.decode_shape(features)
                shape = {
                    key: value.view(b, v, *value.shape[1:])[:, 0] for key, value in every.items()
                }
                loss_shape = shape_consistency_loss(
                    every["points"].view(b, v, *every["points"].shape[1:]),
                    hp.shape_consistency_points,
                )
            else:  # upstream: the first view's cloud is rendered under every view's poses
                shape = self.net.decode_shape(features.view(b, v, -1)[:, 0])
            pose = self.net.decode_pose(features)
            quats = pose["candidates"]  # (BV, K, 4)
        k = quats.shape[1]
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
        loss_proj, winner, _ = min_projection_loss(
            silhouettes, target, self.current_loser_weight()
        )
        loss = loss_proj
        log_value("train/loss_proj", loss_proj, prog_bar=True)
        if k > 1:
            for index, share in enumerate(win_fractions(winner, k).tolist()):
                log_value(f"train/win_frac_{index}", share)
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
        if loss_shape is not None:
            loss = loss + hp.shape_consistency_weight * loss_shape
            log_value("train/loss_shape_consistency", loss_shape)
        if not hp.camera_supervised:
            loss_st = student_term(pose, winner, hp.student_loss)
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
        if every and self.global_step % every == 0 and image_logger(self) is not None:
            log_training_panels(self, images, target, silhouettes, shape["points"])
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = self.hparams.optimizer(params=optimizer_param_groups(self))
        for group in optimizer.param_groups:  # ours: the student's student_lr_scale
            group["lr"] *= group.get("lr_scale", 1.0)
        if self.hparams.scheduler is None:
            return {"optimizer": optimizer}
        scheduler = {"scheduler": self.hparams.scheduler(optimizer=optimizer), "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def _aligned_predictions(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        pred = self.predict_views(batch["image"], batch["mask"])
        if self.hparams.camera_supervised:
            return pred
        points, pose = apply_alignment(pred["points"], pred["pose"], self.reference_rotation)
        return {**pred, "points": points, "pose": pose, "raw_pose": pred["pose"],
                "raw_points": pred["points"]}  # fmt: skip

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        if batch is None:
            return
        pred = self._aligned_predictions(batch)
        loss, silhouettes, masks = eval_projection(self, batch, pred)
        self.log("val/loss_proj", loss, sync_dist=True, batch_size=batch["image"].shape[0])
        model_records(self, batch, pred, silhouettes, masks, "val")
        if "raw_pose" in pred:
            self.val_pose_diagnostics.update(pred["raw_pose"], batch["quaternion"])
        collect_alignment(self, batch, pred, self.hparams.icp_num_points)

    def _log_epoch_metrics(self, split: str) -> None:
        """Compute, log and reset the torchmetrics of ``split`` (every rank calls compute).

        Validation's pose accuracy and median are those of the alignment just estimated from
        this epoch's predictions (the pose metric itself saw them under the previous one)."""
        metrics = [getattr(self, f"{split}_{name}") for name in ("chamfer", "pose", "mask_xor")]
        chamfer, pose, xor = metrics
        if self._updated_anywhere(chamfer):
            for key, value in chamfer.compute().items():
                self.log(f"{split}/{key}", value)
        diagnostics = None
        if split == "val" and self._updated_anywhere(self.val_pose_diagnostics):
            diagnostics = self.val_pose_diagnostics.compute(self.reference_rotation)
            metrics.append(self.val_pose_diagnostics)
        if diagnostics is not None:
            self.log(f"val/{self.acc_name}", diagnostics.pop("accuracy"))
            self.log("val/median_deg", diagnostics.pop("median_deg"))
            for key, value in diagnostics.items():
                self.log(f"val/{key}", value)
        elif self._updated_anywhere(pose):
            out = pose.compute()
            self.log(f"{split}/{self.acc_name}", out["accuracy"])
            self.log(f"{split}/median_deg", out["median_deg"])
        if self._updated_anywhere(xor):
            self.log(f"{split}/mask_xor", xor.compute())
        for metric in metrics:
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        if self._updated_anywhere(self.val_alignment) and not self.trainer.sanity_checking:
            self.reference_rotation.copy_(self.val_alignment.compute())
            log.info("global alignment q_ref = %s", self.reference_rotation.tolist())
        self.val_alignment.reset()
        self._log_epoch_metrics("val")

    def test_step(self, batch: dict[str, Any] | None, batch_idx: int) -> dict[str, Any] | None:
        if batch is None:
            return None
        pred = self._aligned_predictions(batch)
        loss, silhouettes, masks = eval_projection(self, batch, pred)
        self.log("test/loss_proj", loss, sync_dist=True, batch_size=batch["image"].shape[0])
        records = model_records(self, batch, pred, silhouettes, masks, "test")
        add_test_diagnostics(self, records, pred, masks)
        return {"records": records}

    def on_test_epoch_start(self) -> None:
        if self.hparams.realign_on_test and not self.hparams.camera_supervised:
            realign_from_validation_split(self)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def build_evaluator(self) -> PointCloudEvaluator:  # of EvaluationCallback's test loop
        return point_cloud_evaluator(self)

    def _updated_anywhere(self, metric: Any) -> bool:
        """Whether any rank updated ``metric`` (so that every rank calls ``compute`` together)."""
        count = torch.tensor(float(metric.update_count), device=self.device)
        if self._trainer is not None and self.trainer.world_size > 1:
            count = self.trainer.strategy.reduce(count, reduce_op="sum")
        return bool(count > 0)

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0) -> list[dict[str, Tensor]]:
        """Shape and pose of single images ``batch["image"]`` ``(B, 3, H, W)`` [and their alpha
        ``batch["mask"]``], one dict per image (:func:`evaluation_steps.predict_images`)."""
        return predict_images(self, batch["image"], batch.get("mask"))
