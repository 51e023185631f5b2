"""PointCloudPoseNet: the DPC LightningModule (shape and pose from silhouettes)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from torch import nn


class PointCloudPoseNet(pl.LightningModule):
    """Unsupervised shape and pose from silhouettes (work in progress)."""

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
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["net"])
        self.net = net
