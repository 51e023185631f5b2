"""ShapeNet renders in the DPC layout (work in progress)."""

from __future__ import annotations

import pytorch_lightning as pl


class ShapeNetRendersDataModule(pl.LightningDataModule):
    """DPC layout reader (work in progress)."""

    def __init__(
        self,
        root: str,
        synset: str = "02958343",
        batch_size: int = 8,
        views_per_model: int = 4,
        num_views: int = 5,
        image_size: int = 128,
        eval_batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        max_models: int | None = None,
        load_depth: bool = False,
        cache_dir: str | None = None,
        shuffle: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
