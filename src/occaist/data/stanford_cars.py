"""Stanford Cars in its published layout, as raw RGB images for the AIST preparation.

Layout (what :class:`torchvision.datasets.StanfordCars` reads; ``root`` is the ``stanford_cars``
folder itself or its parent)::

    stanford_cars/cars_train/<name>.jpg   stanford_cars/devkit/cars_train_annos.mat
    stanford_cars/cars_test/<name>.jpg    stanford_cars/cars_test_annos_withlabels.mat
    stanford_cars/devkit/cars_meta.mat

The thesis (chapter 3) merges the official train and test splits before segmenting and re-splits
80/20 after filtering, so ``splits=["train", "test"]`` is the default. The listing reads the
annotation files as torchvision does (same order) without requiring the folder's name; decoding
is ours because a lab's copy of the data is never clean: :func:`read_image_rgb`
applies the EXIF orientation, converts CMYK, 16-bit, palette, RGBA and grayscale images to 8-bit
RGB (noting what it did) and returns a reason instead of raising for files it cannot use
(:mod:`occaist.data.image_files`, torch-free so preparation workers start fast).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from occaist.data.common import warn_if_synthetic
from occaist.data.image_files import (
    DATASET_FOLDER,
    CarImageRecord,
    DecodedImage,
    dataset_folder,
    read_image_rgb,
)
from occaist.utils.errors import MissingDataError
from occaist.utils.logging import get_logger

log = get_logger(__name__)

__all__ = [
    "DATASET_FOLDER",
    "CarImageRecord",
    "DecodedImage",
    "StanfordCarsDataModule",
    "StanfordCarsImages",
    "collate_records",
    "dataset_folder",
    "list_images",
    "read_image_rgb",
]


#: The annotation file of each split, relative to the dataset folder (torchvision's layout).
ANNOTATIONS = {
    "train": Path("devkit") / "cars_train_annos.mat",
    "test": Path("cars_test_annos_withlabels.mat"),
}


def _split_samples(folder: Path, split: str) -> list[tuple[str, int]]:
    """``(path, class index)`` of a split, in annotation order (what torchvision lists)."""
    import scipy.io as sio

    annotations = np.atleast_1d(
        sio.loadmat(folder / ANNOTATIONS[split], squeeze_me=True)["annotations"]
    )
    return [(str(folder / f"cars_{split}" / a["fname"]), int(a["class"]) - 1) for a in annotations]


def list_images(
    root: str | Path, splits: Sequence[str] = ("train", "test")
) -> list[CarImageRecord]:
    """The images of ``splits`` in torchvision's ``StanfordCars`` order, merged.

    ``root`` is the dataset folder (any name) or the parent of a ``stanford_cars`` folder. The
    annotation files are read directly, so the folder need not be named ``stanford_cars`` as
    torchvision requires.

    Raises:
        MissingDataError: the layout is incomplete; the message names the folder and the files
            that are missing.
    """
    folder = dataset_folder(root)
    records: list[CarImageRecord] = []
    for split in splits:
        if split not in ANNOTATIONS:
            raise ValueError(f"unknown Stanford Cars split {split!r}; known: {list(ANNOTATIONS)}")
        needed = [folder / ANNOTATIONS[split], folder / f"cars_{split}"]
        missing = [str(p) for p in needed if not p.exists()]
        if missing:
            raise MissingDataError(
                f"Stanford Cars split {split!r} not found under {folder}: missing "
                f"{', '.join(missing)}. Point data_root at the folder holding devkit/, "
                "cars_train/, cars_test/ and cars_test_annos_withlabels.mat (get the dataset "
                "from its mirrors; "
                "the original URL is gone), or generate the synthetic world with "
                "`python -m occaist.synth --root data/world --preset demo`."
            )
        for path, target in _split_samples(folder, split):
            records.append(CarImageRecord(f"{split}/{Path(path).stem}", path, split, int(target)))
    return records


class StanfordCarsImages(Dataset):
    """Merged Stanford Cars images as dicts (variable sizes; use :func:`collate_records`).

    An item: ``key`` (str), ``path`` (str), ``split`` (official split), ``class_index`` (int),
    ``image`` (``uint8`` tensor ``(3, H, W)`` or None), ``reason`` (str or None), ``notes``.
    """

    def __init__(self, records: Sequence[CarImageRecord], min_side: int = 1) -> None:
        self.records = list(records)
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        decoded = read_image_rgb(rec.path, self.min_side)
        image = None if decoded.rgb is None else torch.from_numpy(decoded.rgb).permute(2, 0, 1)
        return {
            "key": rec.key,
            "path": rec.path,
            "split": rec.split,
            "class_index": rec.class_index,
            "image": image,
            "reason": decoded.reason,
            "notes": decoded.notes,
        }


def collate_records(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep a batch as a list: images differ in size and some are None."""
    return items


class StanfordCarsDataModule(pl.LightningDataModule):
    """Stanford Cars (train and test merged, as in the thesis) for segmentation and preparation.

    Every split's dataloader yields lists of item dicts (see :class:`StanfordCarsImages`);
    ``predict_dataloader`` is the one the preparation uses.

    Args:
        root: the ``stanford_cars`` folder (or its parent).
        splits: official splits to merge, in order.
        batch_size: images per batch.
        num_workers: dataloader worker processes.
        min_image_side: shorter sides below this are reported as ``tiny_image``.
        max_images: keep only the first ``max_images`` (smoke runs); None keeps all.
    """

    def __init__(
        self,
        root: str,
        splits: list[str] = ["train", "test"],  # noqa: B006  (Hydra needs a literal default)
        batch_size: int = 4,
        num_workers: int = 0,
        min_image_side: int = 32,
        max_images: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.root = root
        self.splits = list(splits)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.min_image_side = min_image_side
        self.max_images = max_images
        self.dataset: StanfordCarsImages | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        warn_if_synthetic(dataset_folder(self.root))
        records = list_images(self.root, self.splits)
        if self.max_images is not None:
            records = records[: self.max_images]
        self.dataset = StanfordCarsImages(records, self.min_image_side)
        log.info("Stanford Cars: %d images from splits %s", len(records), self.splits)

    def _loader(self) -> DataLoader:
        if self.dataset is None:
            self.setup()
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate_records,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()
