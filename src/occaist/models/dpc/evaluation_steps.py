"""The pieces of :class:`~occaist.models.dpc.module.PointCloudPoseNet`'s validation and test steps.

Functions of the module (its ``render``, metrics and hyperparameters) that turn a batch's
predictions into the projection loss, the metric updates and one plain record per model (what
:class:`~occaist.evaluation.point_clouds.PointCloudEvaluator` reads), and that estimate the
global alignment by ICP. They write no files.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from occaist.metrics.mask import mask_xor
from occaist.metrics.pose import median_upper, quaternion_angle_deg
from occaist.models.dpc.alignment import icp_view_rotations
from occaist.models.dpc.losses import min_projection_loss
from occaist.utils.logging import RankedLogger

log = RankedLogger(__name__)

__all__ = [
    "candidate_winners",
    "collect_alignment",
    "eval_projection",
    "model_records",
    "realign_from_validation_split",
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
    """Which candidate's render of each view's own cloud fits its mask best ``(B, V)``."""
    b, v, k = pred["candidates"].shape[:3]
    points = pred["raw_points"][:, :, None].expand(-1, -1, k, -1, -1).flatten(0, 2)
    scale = pred["scale"][:, :, None].expand(-1, -1, k).flatten()
    sil = module.render(
        points, pred["candidates"].flatten(0, 2), scale, module.hparams.eval_sigma
    )["silhouette"].view(b * v, k, *masks.shape[-2:])
    return min_projection_loss(sil, masks.flatten(0, 1))[1].view(b, v)


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
        module.val_alignment.update(batch["model_index"][i : i + 1], rmse[None], rotations[None])


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
        pred = module.predict_views(batch["image"])
        raw = {"raw_points": pred["points"], "raw_pose": pred["pose"]}
        collect_alignment(module, batch, raw, module.hparams.test_icp_num_points)
    if module._updated_anywhere(module.val_alignment):
        module.reference_rotation.copy_(module.val_alignment.compute())
        log.info("global alignment re-estimated for testing: %s", module.reference_rotation)
    module.val_alignment.reset()
