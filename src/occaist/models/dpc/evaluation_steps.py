"""The pieces of :class:`~occaist.models.dpc.module.PointCloudPoseNet`'s validation and test steps.

Functions of the module (its ``render``, metrics and hyperparameters) that turn a batch's
predictions into the projection loss, the metric updates and one plain record per model (what
:class:`~occaist.evaluation.point_clouds.PointCloudEvaluator` reads), and that estimate the
global alignment by ICP; and the module's smaller pieces outside the loss: ``predict_images``
(``predict_step``), ``log_training_panels`` and ``optimizer_param_groups``. They write no files.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from occaist.callbacks.image_panels import log_point_cloud_panels
from occaist.evaluation.point_clouds import PointCloudEvaluator
from occaist.metrics.mask import mask_xor
from occaist.metrics.pose import median_upper, quaternion_angle_deg
from occaist.models.dpc.alignment import apply_alignment, icp_view_rotations
from occaist.models.dpc.losses import min_projection_loss
from occaist.utils.logging import RankedLogger

log = RankedLogger(__name__)

__all__ = [
    "TEST_POSES",
    "add_test_diagnostics",
    "candidate_winners",
    "collect_alignment",
    "eval_projection",
    "log_training_panels",
    "model_records",
    "optimizer_param_groups",
    "point_cloud_evaluator",
    "predict_images",
    "realign_from_validation_split",
    "silhouette_fit_pose",
]


def eval_projection(
    module: Any, batch: dict[str, Any], pred: dict[str, Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """Each view's own cloud rendered under its predicted (or GT) pose: the projection loss,
    the silhouettes ``(B, V, G, G)`` and the masks at render size ``(B, V, G, G)``."""
    b, v = batch["image"].shape[:2]
    supervised = module.hparams.camera_supervised
    quats = batch["quaternion"] if supervised else pred["raw_pose"]
    points = pred["points"] if supervised else pred["raw_points"]
    sil = module.render(
        points.flatten(0, 1), quats.flatten(0, 1), pred["scale"].flatten(),
        module.hparams.eval_sigma,
    )["silhouette"]  # fmt: skip
    target = module._masks_at_render_size(batch["mask"].flatten(0, 1))
    loss = 0.5 * (sil - target).pow(2).flatten(1).sum(-1).mean()
    return loss, sil.view(b, v, *sil.shape[1:]), target.view(b, v, *target.shape[1:])


def candidate_winners(module: Any, pred: dict[str, Tensor], masks: Tensor) -> Tensor:
    """Which candidate's render of each view's own (unaligned) cloud fits its mask (at render
    size, ``(B, V, G, G)``) best ``(B, V)``."""
    b, v, k = pred["candidates"].shape[:3]
    raw = pred.get("raw_points", pred["points"])
    points = raw[:, :, None].expand(-1, -1, k, -1, -1).flatten(0, 2)
    scale = pred["scale"][:, :, None].expand(-1, -1, k).flatten()
    sil = module.render(
        points, pred["candidates"].flatten(0, 2), scale, module.hparams.eval_sigma
    )["silhouette"].view(b * v, k, *masks.shape[-2:])
    return min_projection_loss(sil, masks.flatten(0, 1))[1].view(b, v)


#: Where a model's test and prediction pose comes from (``model.test_pose``).
TEST_POSES = ("student", "silhouette_fit")


def silhouette_fit_pose(
    module: Any, pred: dict[str, Tensor], masks: Tensor
) -> tuple[Tensor, Tensor]:
    """Ours (``model.test_pose=silhouette_fit``): each view's pose ``(B, V, 4)`` is the candidate
    whose render of the view's own cloud fits the input's mask ``(B, V, 1, H, W)`` best, the rule
    training uses to pick its winner, instead of the student head's output. The mask is the
    input's alpha channel (RGBA renders, segmented photos), not a label. Returns the poses and
    the winners ``(B, V)`` (the test diagnostics reuse them instead of rendering again)."""
    b, v = masks.shape[:2]
    target = module._masks_at_render_size(masks.flatten(0, 1))  # (B·V, G, G)
    target = target.view(b, v, *target.shape[-2:])
    winners = candidate_winners(module, pred, target)
    index = winners[..., None, None].expand(-1, -1, 1, 4)
    return pred["candidates"].gather(2, index).squeeze(2), winners


def model_records(
    module: Any,
    batch: dict[str, Any],
    pred: dict[str, Tensor],
    silhouettes: Tensor,
    masks: Tensor,
    split: str,
) -> list[dict[str, Any]]:
    """Update the Chamfer, pose and mask-XOR metrics of ``split``; one record per model.

    A record holds ``model_id``, ``views``, ``mask_xor``, with a ground-truth cloud the
    model's ``precision`` / ``coverage`` / ``chamfer`` (×100), and with poses ``acc``,
    ``median_deg``, the aligned per-view ``errors`` and the raw and ground-truth poses.
    """
    chamfer = getattr(module, f"{split}_chamfer")
    xor = mask_xor(silhouettes, masks)  # (B, V): |S ⊕ M| / |M| at render size
    getattr(module, f"{split}_mask_xor").update(silhouettes.flatten(0, 1), masks.flatten(0, 1))
    gt_q = batch["quaternion"]
    errors = None
    if "pose" in pred:
        errors = quaternion_angle_deg(pred["pose"], gt_q)  # (B, V)
        getattr(module, f"{split}_pose").update(pred["pose"], gt_q)
    threshold = module.hparams.pose_threshold_deg
    records = []
    for i in range(gt_q.shape[0]):
        n_gt = int(batch["num_points"][i]) if "num_points" in batch else 0
        record: dict[str, Any] = {
            "model_id": batch["model_id"][i],
            "mask_xor": float(xor[i].mean()),
            "views": int(xor.shape[1]),
        }
        if n_gt > 0:
            chamfer.update(pred["points"][i], batch["points"][i, :n_gt])
            record.update(  # this model's view-averaged values, just appended
                precision=100 * float(chamfer.precision[-1]),
                coverage=100 * float(chamfer.coverage[-1]),
            )
            record["chamfer"] = record["precision"] + record["coverage"]
        if errors is not None:
            record.update(
                acc=float((errors[i] < threshold).float().mean()),
                median_deg=float(median_upper(errors[i])),
                errors=errors[i].tolist(),
                raw_pose=pred["raw_pose"][i].tolist(),
                gt_pose=gt_q[i].tolist(),
            )
        records.append(record)
    return records


def collect_alignment(
    module: Any, batch: dict[str, Any], pred: dict[str, Tensor], num_points: int | None
) -> None:
    """ICP of every view of the first ``align_num_models`` validation models, into the
    module's ``val_alignment`` collector."""
    hp = module.hparams
    wanted = (batch["model_index"] < hp.align_num_models) & (batch["num_points"] > 0)
    if hp.camera_supervised or not bool(wanted.any()):
        return
    for i in wanted.nonzero().flatten().tolist():
        rotations, rmse = icp_view_rotations(
            pred["raw_points"][i],
            pred["raw_pose"][i],
            batch["points"][i, : int(batch["num_points"][i])],
            batch["quaternion"][i],
            hp.icp_max_correspondence,
            hp.icp_iterations,
            num_points,
        )
        module.val_alignment.update(
            batch["model_index"][i : i + 1], rmse[None], rotations[None],
            pred["raw_pose"][i : i + 1], batch["quaternion"][i : i + 1],
        )  # fmt: skip


@torch.no_grad()
def realign_from_validation_split(module: Any) -> None:
    """Estimate the module's ``reference_rotation`` from the first ``align_num_models`` models
    of its datamodule's validation split now (ICP with ``test_icp_num_points``).

    A test root without a validation split (the real-look test set: one split only) keeps the
    alignment the model was trained and checkpointed with, and says so.
    """
    datamodule = module.trainer.datamodule
    try:
        datamodule.setup("validate")
    except FileNotFoundError as err:
        log.warning("no validation split to re-estimate the alignment (%s): keeping %s",
                    str(err).splitlines()[0], module.reference_rotation.tolist())  # fmt: skip
        return
    module.val_alignment.reset()
    for batch in datamodule.val_dataloader():
        if batch is None:
            continue
        if int(batch["model_index"].min()) >= module.hparams.align_num_models:
            break
        batch = module.transfer_batch_to_device(batch, module.device, 0)
        pred = module.predict_views(batch["image"], batch["mask"])  # the test's own poses
        raw = {"raw_points": pred["points"], "raw_pose": pred["pose"]}
        collect_alignment(module, batch, raw, module.hparams.test_icp_num_points)
    if module._updated_anywhere(module.val_alignment):
        module.reference_rotation.copy_(module.val_alignment.compute())
        log.info("global alignment re-estimated for testing: %s", module.reference_rotation)
    module.val_alignment.reset()


def add_test_diagnostics(
    module: Any, records: list[dict[str, Any]], pred: dict[str, Tensor], masks: Tensor
) -> None:
    """Add to each test record the global rotation the poses were aligned with
    (``reference_rotation``: the evaluator reads it, since it may be re-estimated after the
    evaluator is built) and, with ``eval_candidate_wins``, the winning candidate of every view
    (``wins``) and every candidate's raw pose (``raw_candidates``, ``(V, K, 4)`` as lists)."""
    if module.hparams.camera_supervised:
        return
    for record in records:
        record["reference_rotation"] = module.reference_rotation.tolist()
    if module.hparams.eval_candidate_wins and "candidates" in pred:
        winners = pred.get("winners")  # already rendered by the silhouette fit
        if winners is None:
            winners = candidate_winners(module, pred, masks)
        for i, record in enumerate(records):
            record["wins"] = winners[i].tolist()
            record["raw_candidates"] = pred["candidates"][i].tolist()


def point_cloud_evaluator(module: Any) -> PointCloudEvaluator:
    """The evaluator of a :class:`PointCloudPoseNet`'s test loop, from its hyperparameters."""
    hp = module.hparams
    source = "first align_num_models models of the validation split" + (
        ", re-estimated before testing" if hp.realign_on_test else ", last validation"
    )
    return PointCloudEvaluator(
        threshold_deg=hp.pose_threshold_deg,
        reference_rotation=None if hp.camera_supervised else module.reference_rotation.tolist(),
        alignment_source=source,
        num_candidates=getattr(module.net, "num_candidates", 1),
        template_models=hp.template_models,
        pose_source=hp.test_pose,
    )


@torch.no_grad()
def predict_images(
    module: Any, images: Tensor, masks: Tensor | None = None
) -> list[dict[str, Tensor]]:
    """Shape and pose of single images ``(B, 3, H, W)`` (RGB on white in [0, 1] at the training
    size), one dict per image: ``points`` ``(N, 3)`` and the unit ``pose`` ``(4,)`` (w, x, y, z)
    in the globally aligned frame of the test metrics, ``scale`` ``()`` the occupancy scale, and
    ``silhouette`` ``(G, G)``, the cloud rendered under its predicted pose at ``eval_sigma``
    (covering the whole input). Camera-supervised models predict no pose: ``pose`` and
    ``silhouette`` are left out. ``masks`` ``(B, 1, H, W)``: the inputs' alpha, which a model
    with ``test_pose=silhouette_fit`` fits its candidates to; without them (images without an
    alpha channel) its student head gives the pose. ``pose_source`` names which one did."""
    pred = module.predict_views(images[:, None], None if masks is None else masks[:, None])
    points, scale = pred["points"][:, 0], pred["scale"][:, 0]  # (B, N, 3), (B,)
    out = {"points": points, "scale": scale}
    if not module.hparams.camera_supervised:
        pose = pred["pose"][:, 0]  # (B, 4), not unit: the head's raw output
        pose = pose / pose.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        sigma = module.hparams.eval_sigma
        out["silhouette"] = module.render(points, pose, scale, sigma)["silhouette"]
        out["points"], out["pose"] = apply_alignment(points, pose, module.reference_rotation)
        out["pose_source"] = [pred["pose_source"]] * len(points)
    return [{key: value[i] for key, value in out.items()} for i in range(len(points))]


@torch.no_grad()
def log_training_panels(
    module: Any, images: Tensor, target: Tensor, silhouettes: Tensor, points: Tensor
) -> None:
    """W&B / TensorBoard panels of a training step: inputs ``(B, V, 3, H, W)``, masks at render
    size ``(B·V, G, G)``, every candidate's silhouette ``(B·V, K, G, G)`` and each model's cloud
    ``(B, N, 3)`` seen from a fixed yaw (``panel_view_yaw_deg``) for the first ``panel_rows``."""
    hp = module.hparams
    b, v = images.shape[:2]
    half = math.radians(hp.panel_view_yaw_deg) / 2
    side = torch.tensor([[math.cos(half), 0.0, math.sin(half), 0.0]], device=points.device)
    n = min(hp.panel_rows, b)
    views = module.render(points[:n], side.expand(n, 4), None, hp.eval_sigma)["silhouette"]
    masks = target.view(b, v, *target.shape[-2:])
    log_point_cloud_panels(module, images, masks, silhouettes, views, n)


def optimizer_param_groups(module: Any) -> list[Any]:
    """The module's parameters for its optimizer: one group (upstream), or with
    ``student_lr_scale`` != 1 two, the student head's last with ``lr_scale`` (ours), which
    the module applies to the optimizer's learning rate after building it."""
    scale = module.hparams.student_lr_scale
    student = getattr(module.net, "student", None)
    if scale == 1.0 or student is None:
        return list(module.parameters())
    own = {id(p) for p in student.parameters()}
    rest = [p for p in module.parameters() if id(p) not in own]
    return [{"params": rest}, {"params": list(student.parameters()), "lr_scale": scale}]
