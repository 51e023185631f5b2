"""Keypoint graphs of CarFusion instances (no pixels) for training the KGNNs alone.

Each item is one car instance: ``index``, ``keypoints`` (K, 3) in pixels with COCO ``v`` and
its hull box ``box`` (4,) xyxy (see :mod:`occaist.data.carfusion`). The detector-like input is
made by the graph module (``occaist.models.occlusion_net.graph_module.OcclusionGraphNet``), fresh at
every step, unless ``heatmap_graphs`` names a file of a trained heatmap network's graphs
(``scripts/occnet_heatmaps.py``): then items also carry its ``nodes`` (K, 3) ``(x, y, c)`` in the
ROI frame of ``roi`` (4,). Left/right mirroring (``flip_prob``) mirrors x inside the box and
swaps left/right keypoints; on a heatmap network's graphs (``flip_nodes``) it mirrors about the
ROI's centre line instead, which maps ROI-frame ``x`` to ``-x`` exactly, so the nodes (and the
heatmap network's errors) are mirrored with the ground truth and its box.
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
    """Instances ``(keypoints (N, K, 3), boxes (N, 4))`` as items of ``{"index", "keypoints",
    "box"}``, plus ``nodes`` (N, K, 3) and ``roi`` (N, 4) of a heatmap network when given."""

    def __init__(
        self,
        keypoints: np.ndarray,
        boxes: np.ndarray,
        flip_prob: float = 0.0,
        nodes: np.ndarray | None = None,
        rois: np.ndarray | None = None,
    ) -> None:
        self.keypoints = torch.as_tensor(keypoints, dtype=torch.float32)
        self.boxes = torch.as_tensor(boxes, dtype=torch.float32)
        self.flip_prob = flip_prob
        self.nodes = None if nodes is None else torch.as_tensor(nodes, dtype=torch.float32)
        self.rois = None if rois is None else torch.as_tensor(rois, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.keypoints)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        kps, box = self.keypoints[index].clone(), self.boxes[index].clone()
        nodes = roi = None
        if self.nodes is not None:
            nodes, roi = self.nodes[index].clone(), self.rois[index]
        if self.flip_prob > 0 and torch.rand(()) < self.flip_prob:
            perm = list(FLIP_PERMUTATION)
            axis = box[0] + box[2] if roi is None else roi[0] + roi[2]  # twice the mirror line
            kps[:, 0] = axis - kps[:, 0]
            kps = kps[perm]
            box = torch.stack([axis - box[2], box[1], axis - box[0], box[3]])
            if nodes is not None:
                nodes[:, 0] = -nodes[:, 0]
                nodes = nodes[perm]
        item = {"index": torch.tensor(index), "keypoints": kps, "box": box}
        if nodes is not None:
            item["nodes"], item["roi"] = nodes, roi
        return item


class CarFusionGraphDataModule(pl.LightningDataModule):
    """CarFusion instances as keypoint graphs (see module docstring).

    Args:
        root, train_sequences, test_sequences, val_sequences, allow_missing_sequences: as
            ``CarFusionDataModule``.
        min_keypoints: drop instances with fewer labelled keypoints.
        heatmap_graphs: a ``.pt`` file of a heatmap network's graphs per split (``{split:
            {"keypoints", "box", "nodes", "roi"}}``, ``scripts/occnet_heatmaps.py``) read instead
            of the ``gt/*.txt`` files (``None``: ground truth only).
        heatmap_graph_splits: the splits read from ``heatmap_graphs`` (default all; e.g.
            ``[val, test]`` trains on the stand-in and evaluates on the network's graphs).
        flip_prob: training mirror probability.
        flip_nodes: mirror the heatmap network's training graphs too (``flip_prob``; the
            default ``false`` keeps the earlier recipe, which did not mirror them).
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
        heatmap_graphs: str | None = None,
        heatmap_graph_splits: list[str] = ("train", "val", "test"),
        flip_prob: float = 0.5,
        flip_nodes: bool = False,
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
        cached = None
        if hp.heatmap_graphs:
            path = Path(hp.heatmap_graphs)
            if not path.is_file():
                raise FileNotFoundError(
                    f"heatmap graphs {path} not found (scripts/occnet_heatmaps.py)"
                )
            cached = torch.load(path, map_location="cpu", weights_only=True)
        for split, seqs in names.items():
            use_cache = cached is not None and split in hp.heatmap_graph_splits
            if use_cache and split not in self.datasets:
                part = cached[split if split in cached else "test"]
                flip = hp.flip_prob if split == "train" and hp.flip_nodes else 0.0
                self.datasets[split] = KeypointGraphDataset(
                    part["keypoints"], part["box"], flip, part["nodes"], part["roi"]
                )
                log.info("heatmap graphs %s: %d instances", split, len(self.datasets[split]))
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
