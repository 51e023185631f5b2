"""``PoseRegressor``: 6D pose regression trained on synthetic images (seed 004).

Training step (the seed's multi-task network and loss):

1. optional on-the-fly domain randomisation of the batch (``randomizer``, a
   :class:`~occaist.models.pose_regression.randomization.DomainRandomizer`: a fresh background,
   object colours and light for every image at every step, from the image and its object mask),
   then optional kornia photometric augmentation (colour jitter, blur, noise; ``augment``), both
   on whatever device the batch is on; the geometry is left unchanged so the labels stay exact
   (the randomisation baked in the ``train_dr`` split is the data's, see
   ``occaist.synth.writers.bop``);
2. the network (:class:`~occaist.models.pose_regression.networks.PoseRegressionNet`) predicts
   box, location and rotation of the object in each image;
3. ``L_total = λ_b L_b + λ_q L_q + λ_t L_t + λ_PL L_PL + λ_reg L_reg``
   (:mod:`occaist.models.pose_regression.losses`); each λ set to 0 switches its term off.

Metrics (torchmetrics, one object per split so DDP reduction is exact): ADD and ADD-S accuracy
at ``add_fraction`` of the diameter, overall and per object (:class:`~occaist.metrics.ADD`,
:class:`~occaist.metrics.ADDS`), mean rotation error (degrees) and translation error (mm). The
test loop returns one record per sample for the evaluation report
(:class:`~occaist.evaluation.pose.PoseEvaluator`), with the "mean training pose" baseline's
errors beside the model's: the module accumulates each object's training poses in buffers
(saved with the checkpoint) and predicts their mean (the rotation projected back onto SO(3)).
The module opens no file; panels of the predicted (red) and true (green) silhouettes over the
input go to W&B / TensorBoard every ``image_log_every_n_steps`` training steps.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from occaist.callbacks.image_panels import image_logger, log_silhouette_panels
from occaist.geometry.quaternion import quaternion_to_rotation_matrix
from occaist.metrics.add import ADD, ADDS, add_error, adds_error
from occaist.models.pose_regression.losses import (
    box_loss,
    decode_translation,
    projection_loss,
    rotation_loss,
    soft_silhouette,
    translation_loss,
    weight_regularizer,
)

_PANEL_IMAGES = 8
_SPLITS = ("train", "val", "test")


def rotation_angle_deg(R_pred: Tensor, R_gt: Tensor) -> Tensor:
    """Angle (B,) in degrees of ``R_predᵀ R_gt`` (clamped against rounding)."""
    cos = ((R_pred.transpose(-1, -2) @ R_gt).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))


def project_to_rotation(M: Tensor) -> Tensor:
    """The rotation nearest to ``M`` (..., 3, 3) in Frobenius norm (SVD, det +1)."""
    U, _, Vh = torch.linalg.svd(M)
    D = torch.ones_like(M[..., 0])
    D[..., 2] = torch.linalg.det(U @ Vh).sign()
    return U @ torch.diag_embed(D) @ Vh


class PoseRegressor(pl.LightningModule):
    """Multi-task 6D pose regression with the seed's projection loss.

    Args:
        net: the network (box, centre, log depth and quaternion heads per object).
        optimizer: partial optimizer (``_partial_: true``), called with the parameters.
        scheduler: partial LR scheduler (stepped per step) or None.
        randomizer: on-the-fly domain randomisation ``(image, mask) -> image`` of the training
            batches, or None (a module without weights, so it is not saved in the checkpoint).
        num_objects: object classes (heads; size of the baseline buffers).
        image_size: input side ``S`` (the data's ``image_size``).
        lambda_box, lambda_rotation, lambda_translation, lambda_projection, lambda_reg: the
            seed's ``λ_b, λ_q, λ_t, λ_PL, λ_reg`` (0 switches a term off).
        projection_grid: side of the projection loss's silhouette grid.
        projection_sigma: splat Gaussian's sigma in grid pixels.
        projection_points: model points splatted (the first of the data's sampled points).
        add_fraction: ADD / ADD-S threshold as a fraction of the diameter (0.1).
        augment: on-the-fly kornia photometric augmentation of training images.
        augment_strength: scales the augmentation's ranges.
        augment_hue: kornia's hue jitter (fraction of a turn, before ``augment_strength``);
            ``pose_dr`` sets 0 because its randomizer already rotates the object's hue, and
            kornia's HSV round trip was the costliest part of a CPU training step (15 ms of
            32 images at 64 px; ``scripts/bench_pose.py``).
        image_log_every_n_steps: silhouette panels every n training steps (0 = never).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Any,
        scheduler: Any = None,
        randomizer: nn.Module | None = None,
        num_objects: int = 3,
        image_size: int = 64,
        lambda_box: float = 1.0,
        lambda_rotation: float = 1.0,
        lambda_translation: float = 1.0,
        lambda_projection: float = 0.0,
        lambda_reg: float = 0.0,
        projection_grid: int = 32,
        projection_sigma: float = 1.0,
        projection_points: int = 500,
        add_fraction: float = 0.1,
        augment: bool = False,
        augment_strength: float = 1.0,
        augment_hue: float = 0.05,
        image_log_every_n_steps: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["net", "randomizer"])
        self.net = net
        self.randomizer = randomizer
        self.augmenter = (
            _photometric_augmentation(augment_strength, augment_hue) if augment else None
        )
        for split in _SPLITS:
            setattr(self, f"{split}_add", ADD(add_fraction))
            setattr(self, f"{split}_adds", ADDS(add_fraction))
            setattr(self, f"{split}_rot_err", MeanMetric())
            setattr(self, f"{split}_trans_err", MeanMetric())
        self.register_buffer("pose_sum_R", torch.zeros(num_objects, 3, 3, dtype=torch.float64))
        self.register_buffer("pose_sum_t", torch.zeros(num_objects, 3, dtype=torch.float64))
        self.register_buffer("pose_count", torch.zeros(num_objects, dtype=torch.float64))

    # ------------------------------------------------------------------------------ forward
    def forward(self, image: Tensor, K: Tensor, obj_index: Tensor, diameter: Tensor) -> dict:
        """Predictions for a batch: ``box`` (B, 4) in units of ``S``, ``R`` (B, 3, 3), ``t``
        (B, 3) in the data's units (mm), ``quaternion`` (B, 4)."""
        out = self.net(image, obj_index)
        out["R"] = quaternion_to_rotation_matrix(out["quaternion"])
        out["t"] = decode_translation(
            out["centre"], out["log_depth"], K, diameter, self.hparams.image_size
        )
        return out

    def losses(self, batch: dict[str, Tensor], pred: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every term of ``L_total`` (unweighted) and ``total`` (weighted)."""
        hp = self.hparams
        d = batch["diameter"]
        terms = {
            "box": box_loss(pred["box"], batch["box"] / hp.image_size),
            "rotation": rotation_loss(pred["R"], batch["R"], batch["points"], d),
            "translation": translation_loss(pred["t"], batch["t"], d),
        }
        if hp.lambda_projection > 0:
            terms["projection"] = projection_loss(
                batch["points"][:, : hp.projection_points],
                pred["R"],
                pred["t"],
                batch["R"],
                batch["t"],
                batch["K"],
                hp.image_size,
                hp.projection_grid,
                hp.projection_sigma,
            )
        if hp.lambda_reg > 0:
            terms["reg"] = weight_regularizer(self.net)
        weights = {
            "box": hp.lambda_box,
            "rotation": hp.lambda_rotation,
            "translation": hp.lambda_translation,
            "projection": hp.lambda_projection,
            "reg": hp.lambda_reg,
        }
        terms["total"] = sum(weights[k] * v for k, v in terms.items())
        return terms

    # ----------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        image = batch["image"]
        if self.randomizer is not None:
            image = self.randomizer(image, batch["mask"])
        if self.augmenter is not None:
            image = self.augmenter(image).clamp(0, 1)
        pred = self(image, batch["K"], batch["obj_index"], batch["diameter"])
        terms = self.losses(batch, pred)
        self.log_dict({f"train/loss_{k}": v for k, v in terms.items()}, prog_bar=False)
        self.log("train/loss", terms["total"], prog_bar=True)
        self._accumulate_training_poses(batch)
        self._update_metrics("train", batch, pred)
        every = self.hparams.image_log_every_n_steps
        if every and self.global_step % every == 0 and image_logger(self) is not None:
            self._log_panels(image, batch, pred)
        return terms["total"]

    @torch.no_grad()
    def _accumulate_training_poses(self, batch: dict[str, Tensor]) -> None:
        """Per-object sums of the training poses (the mean-pose baseline)."""
        idx = batch["obj_index"]
        self.pose_sum_R.index_add_(0, idx, batch["R"].double())
        self.pose_sum_t.index_add_(0, idx, batch["t"].double())
        self.pose_count.index_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))

    def mean_training_pose(self, obj_index: Tensor) -> tuple[Tensor, Tensor]:
        """The baseline's ``R`` (B, 3, 3) and ``t`` (B, 3): each object's mean training pose
        (identity at the origin for an object never seen in training)."""
        count = self.pose_count[obj_index].clamp_min(1.0)
        mean_R = self.pose_sum_R[obj_index] / count[:, None, None]
        seen = self.pose_count[obj_index] > 0
        eye = torch.eye(3, dtype=mean_R.dtype, device=mean_R.device).expand_as(mean_R)
        R = torch.where(seen[:, None, None], project_to_rotation(mean_R + 1e-12 * eye), eye)
        return R.float(), (self.pose_sum_t[obj_index] / count[:, None]).float()

    # --------------------------------------------------------------------------- evaluation
    def _update_metrics(self, split: str, batch: dict[str, Tensor], pred: dict[str, Tensor]):
        args = (pred["R"].detach(), pred["t"].detach(), batch["R"], batch["t"], batch["points"])
        getattr(self, f"{split}_add").update(*args, batch["diameter"], batch["obj_id"])
        if split != "train":  # ADD-S's all-pairs distances cost a third of a CPU training step
            getattr(self, f"{split}_adds").update(*args, batch["diameter"], batch["obj_id"])
        getattr(self, f"{split}_rot_err").update(
            rotation_angle_deg(pred["R"].detach(), batch["R"])
        )
        getattr(self, f"{split}_trans_err").update((pred["t"].detach() - batch["t"]).norm(dim=-1))

    def _eval_step(self, split: str, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        pred = self(batch["image"], batch["K"], batch["obj_index"], batch["diameter"])
        terms = self.losses(batch, pred)
        self.log(f"{split}/loss", terms["total"], batch_size=len(batch["image"]))
        self._update_metrics(split, batch, pred)
        return pred

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any]:
        pred = self._eval_step("test", batch)
        R0, t0 = self.mean_training_pose(batch["obj_index"])
        points, R, t = batch["points"], batch["R"], batch["t"]
        rot_err = rotation_angle_deg(pred["R"], R)
        half_turn = torch.diag(R.new_tensor([-1.0, 1.0, -1.0]))  # π about the model's y axis
        errors = {
            "add": add_error(pred["R"], pred["t"], R, t, points),
            "adds": adds_error(pred["R"], pred["t"], R, t, points),
            "rot_err_deg": rot_err,
            "trans_err_mm": (pred["t"] - t).norm(dim=-1),
            # which part of the pose fails ADD: the prediction with the true rotation put in
            # (only its translation wrong), with the true translation put in, and the rotation
            # error up to a half turn about the model's vertical (y) axis
            "add_true_rotation": add_error(R, pred["t"], R, t, points),
            "add_true_translation": add_error(pred["R"], t, R, t, points),
            "rot_err_half_turn_deg": torch.minimum(
                rot_err, rotation_angle_deg(pred["R"] @ half_turn, R)
            ),
            "baseline_add": add_error(R0, t0, R, t, points),
            "baseline_adds": adds_error(R0, t0, R, t, points),
        }
        keys = ("obj_id", "scene_id", "im_id", "inst_id", "diameter", "symmetric")
        columns = {k: batch[k].tolist() for k in keys} | {k: v.tolist() for k, v in errors.items()}
        n = len(batch["image"])
        records = [{k: v[i] for k, v in columns.items()} for i in range(n)]
        for rec in records:
            rec["sample"] = f"{rec['scene_id']}/{rec['im_id']}/{rec['inst_id']}"
        return {"records": records}

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Tensor], batch_idx: int = 0) -> list[dict]:
        """The pose of one object per sample, one dict per sample (``occaist.predict`` writes
        them). ``batch``: ``image`` (B, 3, S, S) in [0, 1] prepared as the data (longer side
        scaled to ``S``, zero-padded right and bottom), its intrinsics ``K`` (B, 3, 3), the
        object's ``obj_index`` (B,) and ``diameter`` (B,). Returns ``R`` (3, 3) and ``t`` (3,)
        (model to camera, the data's units) and ``box`` (4,) xyxy in pixels of the S x S input."""
        pred = self(batch["image"], batch["K"], batch["obj_index"], batch["diameter"])
        box = pred["box"] * self.hparams.image_size
        return [{"R": pred["R"][i], "t": pred["t"][i], "box": box[i]} for i in range(len(box))]

    def build_evaluator(self) -> Any:
        """The evaluator of the test loop's records (tables with the baseline's rows)."""
        from occaist.evaluation.pose import PoseEvaluator

        return PoseEvaluator(fraction=self.hparams.add_fraction)

    def _log_epoch_metrics(self, split: str) -> None:
        for name in ("add", "adds"):
            metric = getattr(self, f"{split}_{name}")
            if not metric.update_called:
                continue
            values = metric.compute()
            self.log(f"{split}/{name}", values.pop("accuracy"))
            self.log(f"{split}/{name}_mean_error", values.pop("mean_error"))
            for key, value in values.items():
                self.log(f"{split}/{name}_{key}", value)
            metric.reset()
        for name in ("rot_err", "trans_err"):
            metric = getattr(self, f"{split}_{name}")
            if metric.update_called:
                self.log(f"{split}/{name}", metric.compute())
                metric.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def configure_optimizers(self) -> Any:
        optimizer = self.hparams.optimizer(params=self.parameters())
        if self.hparams.scheduler is None:
            return {"optimizer": optimizer}
        scheduler = self.hparams.scheduler(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    # ------------------------------------------------------------------------------- panels
    @torch.no_grad()
    def _log_panels(self, image: Tensor, batch: dict[str, Tensor], pred: dict[str, Tensor]):
        """Silhouettes of the predicted and true poses over the first inputs."""
        n, size = min(_PANEL_IMAGES, len(image)), self.hparams.image_size
        points, K = batch["points"][:n, : self.hparams.projection_points], batch["K"][:n]
        sigma = self.hparams.projection_sigma
        predicted = soft_silhouette(points, pred["R"][:n], pred["t"][:n], K, size, size, sigma)
        true = soft_silhouette(points, batch["R"][:n], batch["t"][:n], K, size, size, sigma)
        log_silhouette_panels(self, image[:n], predicted, true)


def _photometric_augmentation(strength: float, hue: float = 0.05) -> nn.Module:
    """kornia colour jitter, Gaussian blur and noise (image-only: the pose labels stay exact)."""
    import kornia.augmentation as K

    s = float(strength)
    return K.AugmentationSequential(
        K.ColorJiggle(0.3 * s, 0.3 * s, 0.3 * s, min(0.5, hue * s), p=0.8),
        K.RandomGaussianBlur((5, 5), (0.1, 1.0 + s), p=0.3),
        K.RandomGaussianNoise(std=0.03 * s, p=0.5),
    )
