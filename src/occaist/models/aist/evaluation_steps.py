"""The AIST module's validation and test steps, kept beside :mod:`.module` (which holds the
paper's training step): metric updates, image panels, per-sample test records, and the one
stylisation measurement a run takes at the end of training when no validation ran."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from occaist.evaluation.stylisation import ClassifierBudget, log_image_panels, to_uint8
from occaist.models.aist.metrics import compute_fid, mask_iou
from occaist.utils.logging import RankedLogger

if TYPE_CHECKING:
    from occaist.models.aist.module import AISTCycleGAN

log = RankedLogger(__name__)


def evaluate_batch(
    module: AISTCycleGAN, split: str, batch: dict[str, Any], batch_idx: int
) -> dict[str, Tensor]:
    """Both cycles on one batch: update and log the split's metrics, FID/KID, panels."""
    metrics = module.val_metrics if split == "val" else module.test_metrics
    x, y = module._inputs(batch)
    fake_y = module.G(x)
    rec_x = module.F(fake_y)
    fake_x = module.F(y)
    rec_y = module.G(fake_x)
    metrics["mask_iou"].update(mask_iou(module.hard_mask(x), module.hard_mask(fake_y)))
    metrics["cycle_error_A"].update((x - rec_x).abs().flatten(1).mean(1))
    metrics["cycle_error_B"].update((y - rec_y).abs().flatten(1).mean(1))
    for name, metric in metrics.items():
        module.log(f"{split}/{name}", metric, on_epoch=True, batch_size=x.shape[0])
    if split in module._fid:
        for metric in module._fid[split].values():
            metric.update(y.float(), real=True)
            metric.update(fake_y.float(), real=False)
    if batch_idx == 0:
        log_panels(module, split, x, fake_y, rec_x, y, fake_x, rec_y)
    return {"x": x, "fake_y": fake_y, "y": y}


def log_fid(module: AISTCycleGAN, split: str) -> None:
    """Log FID/KID of ``split`` (when feature weights were given)."""
    if split in module._fid:
        for name, value in compute_fid(module._fid[split]).items():
            module.log(f"{split}/{name}", value, sync_dist=False)


def measure(module: AISTCycleGAN) -> dict[str, float]:
    """The stylisation measures of the collected validation samples (fixed classifier budget)."""
    return module._samples.measure(ClassifierBudget(epochs=module.hparams.measure_epochs))


def measure_if_no_validation_ran(module: AISTCycleGAN) -> None:
    """Measure once on the validation data when no validation ran (a short sweep trial), so
    ``val/stylisation_score`` always exists for the sweeper."""
    trainer = module.trainer
    datamodule = getattr(trainer, "datamodule", None)
    if (
        module.hparams.measure_images <= 0
        or "val/stylisation_score" in trainer.callback_metrics
        or datamodule is None
    ):
        return
    datamodule.setup("validate")
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            if module._samples.full():
                break
            x, y = (batch[k].to(module.device) for k in ("A", "B"))
            module._samples.add(batch, x, module.G(module._format(x)), y)
    for name, value in measure(module).items():
        trainer.callback_metrics[f"val/{name}"] = torch.tensor(value)
    log.info("no validation ran: stylisation measured at the end of training")


def test_records(batch: dict[str, Any], out: dict[str, Tensor]) -> list[dict[str, Any]]:
    """One record per test image for the stylisation evaluator (uint8 images, indices)."""
    x, fake_y, y = (to_uint8(out[k]) for k in ("x", "fake_y", "y"))
    a_idx = batch.get("A_index", torch.arange(len(x)))
    b_idx = batch.get("B_index", a_idx)
    return [
        {"index": int(a), "real_index": int(b), "x": xi, "fake_y": fi, "y": yi}
        for a, b, xi, fi, yi in zip(a_idx, b_idx, x, fake_y, y, strict=True)
    ]


def log_panels(module: AISTCycleGAN, split: str, *images: Tensor) -> None:
    """x, G(x), F(G(x)), Alpha(x), Alpha(G(x)) / y, F(y), G(F(y)) (W&B / TensorBoard)."""
    x, fake_y, rec_x, y, fake_x, rec_y = images
    tiles = [x, fake_y, rec_x, module.hard_mask(x), module.hard_mask(fake_y), y, fake_x, rec_y]
    caption = "x, G(x), F(G(x)), Alpha(x), Alpha(G(x)) | y, F(y), G(F(y))"
    log_image_panels(module.loggers, f"{split}/panel", tiles, caption, module.global_step)
