"""Image panels for W&B / TensorBoard, one clearly separate section per model.

A module calls its panel function on the steps it chooses; the function finds an image logger
among the trainer's loggers (W&B or TensorBoard; none: nothing is drawn) and logs one grid.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "image_logger",
    "log_grid",
    "log_keypoint_panels",
    "log_point_cloud_panels",
    "log_silhouette_panels",
]


def image_logger(module: Any) -> Any:
    """The first W&B or TensorBoard logger of ``module``'s trainer, or None."""
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    loggers = module.loggers if getattr(module, "_trainer", None) is not None else []
    for lg in loggers:
        if isinstance(lg, (WandbLogger, TensorBoardLogger)):
            return lg
    return None


def log_grid(logger: Any, key: str, grid: Tensor, step: int, caption: str = "") -> None:
    """Log a ``(3, H, W)`` grid in [0, 1] as one image under ``key``."""
    from pytorch_lightning.loggers import WandbLogger

    if isinstance(logger, WandbLogger):
        image = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
        logger.log_image(key, images=[image], caption=[caption], step=step)
    else:
        logger.experiment.add_image(key, grid, step)


# ----------------------------------------------------------------- point clouds (DPC)
def log_point_cloud_panels(
    module: Any,
    images: Tensor,
    masks: Tensor,
    silhouettes: Tensor,
    cloud_views: Tensor,
    max_rows: int = 4,
) -> None:
    """DPC panels: per row the input, its mask, the silhouette of every candidate pose and the
    cloud rendered from a fixed side view (first views of the first ``max_rows`` models).

    Args:
        images: ``(B, V, 3, H, W)`` inputs; masks ``(B, V, G, G)`` at render size.
        silhouettes: ``(B·V, K, G, G)`` renders of every candidate.
        cloud_views: ``(B, G, G)`` each model's cloud from the side view.
    """
    from torchvision.utils import make_grid

    logger = image_logger(module)
    if logger is None:
        return
    b, v = images.shape[:2]
    g = masks.shape[-1]
    n = min(max_rows, b)
    k = silhouettes.shape[1]
    sil = silhouettes.view(b, v, k, g, g)[:n, 0]  # (n, K, G, G)
    inputs = F.interpolate(images[:n, 0], size=(g, g), mode="bilinear", align_corners=False)
    rows = [inputs, masks[:n, 0, None].expand(-1, 3, -1, -1)]
    rows += [sil[:, i, None].expand(-1, 3, -1, -1) for i in range(k)]
    rows.append(cloud_views[:n, None].expand(-1, 3, -1, -1))
    tiles = torch.stack(rows, dim=1).flatten(0, 1).clamp(0, 1).float().cpu()
    grid = make_grid(tiles, nrow=len(rows), padding=2, pad_value=0.5)
    caption = "input | mask | candidates 1..K | cloud (side view)"
    log_grid(logger, "train/panels", grid, module.global_step, caption)


# ------------------------------------------------------------------ keypoints (Occlusion-Net)
@torch.no_grad()
def log_keypoint_panels(module: Any, batch: tuple[list, list], key: str = "val/keypoints") -> None:
    """First image of ``batch`` three times: ground truth (green visible, red occluded), the
    heatmap argmax and the 2D-KGNN keypoints (green: predicted visible, red: occluded), for an
    Occlusion-Net module (``module.net``, ``module.graph_head``); nothing without an image
    logger."""
    logger = image_logger(module)
    if logger is None:
        return
    from torchvision.utils import draw_keypoints, make_grid

    from occaist.data.keypoints import VISIBLE
    from occaist.models.occlusion_net.heads import keypoints_on_boxes

    image, target = batch[0][0], batch[1][0]
    if not len(target["boxes"]):
        return
    pred = keypoints_on_boxes(module.net, [image], [target["boxes"]])[0]
    canvas = (image.clamp(0, 1) * 255).to(torch.uint8).cpu()

    def draw(points: Tensor, visible: Tensor, shown: Tensor) -> Tensor:
        out = canvas
        for mask, colour in ((visible & shown, "lime"), (~visible & shown, "red")):
            pts = points[..., :2].cpu().clone()
            out = draw_keypoints(out, pts, visibility=mask.cpu(), colors=colour, radius=2)
        return out

    gt = target["keypoints"]
    every = torch.ones_like(gt[..., 2], dtype=torch.bool)
    vis_pred = pred["keypoint_visibility"] > module.graph_head.visibility_threshold
    tiles = [
        draw(gt, gt[..., 2] == VISIBLE, gt[..., 2] > 0),
        draw(pred["keypoints_heatmap"], every, every),
        draw(pred["keypoints"], vis_pred, every),
    ]
    grid = make_grid(torch.stack(tiles).float() / 255, nrow=3, padding=2, pad_value=0.5)
    log_grid(logger, key, grid, module.global_step, "ground truth | heatmap | 2D-KGNN")


# ------------------------------------------------------------------ 6D pose (pose regression)
@torch.no_grad()
def log_silhouette_panels(
    module: Any, images: Tensor, predicted: Tensor, true: Tensor, key: str = "train/silhouettes"
) -> None:
    """Pose regression panels: each input darkened, with the model's point-cloud silhouette under
    the predicted pose in red and under the true pose in green (yellow where they overlap).

    Args:
        images: ``(N, 3, S, S)`` inputs in [0, 1].
        predicted, true: ``(N, S, S)`` soft silhouettes in [0, 1].
    """
    import math

    from torchvision.utils import make_grid

    logger = image_logger(module)
    if logger is None:
        return
    overlay = images.clone().float() * 0.6
    overlay[:, 0] += 0.4 * predicted
    overlay[:, 1] += 0.4 * true
    grid = make_grid(overlay.clamp(0, 1).cpu(), nrow=max(1, int(math.sqrt(len(images)))))
    caption = "input; red: predicted silhouette, green: true silhouette"
    log_grid(logger, key, grid, module.global_step, caption)
