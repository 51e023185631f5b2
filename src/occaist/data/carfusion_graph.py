"""Keypoint graphs of CarFusion instances (no pixels) for training the KGNNs alone.

Each item is one car instance: ``keypoints`` (K, 3) in pixels with COCO ``v`` and its hull box
``box`` (4,) xyxy (see :mod:`occaist.data.carfusion`). The detector-like noise is added by the
graph module (``occaist.models.occlusion_net.module.OcclusionGraphNet``), fresh at every step.
Left/right mirroring (``flip_prob``) mirrors x inside the box and swaps left/right keypoints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from occaist.data.carfusion import scan_carfusion
from occaist.data.common import warn_if_synthetic
from occaist.data.keypoints import FLIP_PERMUTATION
from occaist.utils.logging import RankedLogger

log = RankedLogger(__name__)

__all__ = ["CarFusionGraphDataModule", "KeypointGraphDataset"]


class KeypointGraphDataset(Dataset):
    """Instances ``(keypoints (N, K, 3), boxes (N, 4))`` as items of ``{"keypoints", "box"}``."""

    def __init__(self, keypoints: np.ndarray, boxes: np.ndarray, flip_prob: float = 0.0) -> None:
        self.keypoints = torch.as_tensor(keypoints, dtype=torch.float32)
        self.boxes = torch.as_tensor(boxes, dtype=torch.float32)
        self.flip_prob = flip_prob

    def __len__(self) -> int:
        return len(self.keypoints)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        kps, box = self.keypoints[index].clone(), self.boxes[index]
        if self.flip_prob > 0 and torch.rand(()) < self.flip_prob:
            kps[:, 0] = box[0] + box[2] - kps[:, 0]
            kps = kps[list(FLIP_PERMUTATION)]
        return {"keypoints": kps, "box": box}


class CarFusionGraphDataModule(pl.LightningDataModule):
    """CarFusion instances as keypoint graphs (see module docstring).

    Args:
        root, train_sequences, test_sequences, val_sequences, allow_missing_sequences: as
            ``CarFusionDataModule``.
        min_keypoints: drop instances with fewer labelled keypoints.
        flip_prob: training mirror probability.
        batch_size, num_workers: loaders.
    """

    def __init__(
        self,
        root: str,
        train_sequences: list[str] = ("butler", "craig", "fifth", "morewood"),
        test_sequences: list[str] = ("penn1", "penn2"),
        val_sequences: list[str] | None = None,
        allow_missing_sequences: bool = False,
        min_keypoints: int = 3,
        flip_prob: float = 0.5,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.root = Path(root)
        self.datasets: dict[str, KeypointGraphDataset] = {}

    def _dataset(self, names: list[str], flip_prob: float) -> KeypointGraphDataset:
        kps, boxes = [], []
        for rec in scan_carfusion(self.root, names, self.hparams.allow_missing_sequences):
            for inst, box in rec.boxes.items():
                k = rec.keypoints[inst]
                if int((k[:, 2] > 0).sum()) >= self.hparams.min_keypoints:
                    kps.append(k)
                    boxes.append(box)
        if not kps:
            raise ValueError(f"no CarFusion instance in {names} under {self.root}")
        return KeypointGraphDataset(np.stack(kps), np.stack(boxes), flip_prob)

    def setup(self, stage: str | None = None) -> None:
        warn_if_synthetic(self.root)
        hp = self.hparams
        val = hp.val_sequences if hp.val_sequences is not None else hp.test_sequences
        names = {"train": hp.train_sequences, "val": val, "test": hp.test_sequences}
        for split, seqs in names.items():
            if split not in self.datasets:
                flip = hp.flip_prob if split == "train" else 0.0
                self.datasets[split] = self._dataset(list(seqs), flip)
                log.info("CarFusion graphs %s: %d instances", split, len(self.datasets[split]))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        hp = self.hparams
        return DataLoader(
            self.datasets[split],
            batch_size=hp.batch_size,
            shuffle=shuffle,
            num_workers=hp.num_workers,
            drop_last=shuffle and len(self.datasets[split]) > hp.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
