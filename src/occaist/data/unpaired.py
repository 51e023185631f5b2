"""Unpaired synthetic/real RGBA images for the AIST CycleGAN (thesis chapters 3-4, 6.1).

Domain A = X: ShapeNet renders in the DPC layout, ``<renders_root>/renders/<synset>/<id>/
render_<i>.png`` (RGBA), model ids from the split files ``<synset>_<split>.txt``, read with the
DPC reader's helpers (:mod:`occaist.data.shapenet_renders`). Domain B = Y: real segments
prepared by ``python -m occaist.prep``, ``<prepared_root>/{train,test}/*.png`` (RGBA).

Every image is resized (premultiplied alpha) to ``image_size``, its fully transparent pixels get
RGB 0, and it is colour corrected (:func:`occaist.data.rgba.color_correct`): after this,
"any RGB channel > -1" in [-1, 1] is exactly "alpha > 0", which the thesis's Alpha proxy needs.
Items are ``{"A": x, "B": y, "A_index": i, "B_index": j}`` with x, y (C, H, W) in [-1, 1],
C = 3 (RGB) or 4 (RGBA, for ``alpha_mode=channel``).

Pairs are unaligned as upstream's ``unaligned`` mode: an epoch has max(|A|, |B|) items, item k
takes A[k mod |A|] and a uniformly random B (training) or B[k mod |B|] (evaluation). Splits:
train = (A train, B train), val = (A val, B test), test = (A test, B test).

Randomness is reproducible and resumable: the shuffle order comes from a datamodule-owned
``torch.Generator`` handed to the DataLoader, the random partner and flips from a dataset-owned
generator (re-seeded in each worker from the worker seed PyTorch derives from the loader's
generator). Both generators' states are in the datamodule's ``state_dict``, which Lightning puts
in checkpoints. No sampler is set by hand: under DDP Lightning injects a DistributedSampler.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, get_worker_info

from occaist.data.common import warn_if_synthetic
from occaist.data.shapenet_renders import split_render_files
from occaist.data.rgba import clear_background, color_correct, resize_rgba
from occaist.utils.logging import RankedLogger

log = RankedLogger(__name__)

CREATE_RENDERS = (
    "python -m occaist.synth --root {world} --preset demo   (a synthetic stand-in with this "
    "layout), or download the DPC renders (data/download_train_data.sh 02958343 in "
    "eldar/differentiable-point-clouds) and pass data.renders_root=<their root>"
)
CREATE_REAL = (
    "python -m occaist.prep data_root=<Stanford Cars root> ratio_fit.renders_root=<renders root> "
    "out_dir={prepared}  (see docs/prep.md; for a synthetic world made with "
    "`python -m occaist.synth --root WORLD`: python -m occaist.prep data_root=WORLD/stanford_cars "
    "ratio_fit.renders_root=WORLD/shapenet_renders out_dir={prepared}; after `make demo`, "
    "`python -m occaist.prep` with no argument prepares data/world into data/prepared/real)"
)


class DataNotFoundError(FileNotFoundError):
    """An input folder or split file is missing (the message names it and how to create it)."""


def load_rgba(path: str | os.PathLike, image_size: int) -> np.ndarray:
    """Read a PNG as RGBA uint8 (S, S, 4), resized to ``image_size``, background RGB 0,
    colour corrected (thesis 4.1.1.1)."""
    with Image.open(path) as image:
        rgba = np.asarray(image.convert("RGBA"))
    if rgba.shape[0] != rgba.shape[1]:
        raise ValueError(f"{path}: expected a square image, got {rgba.shape[:2]}")
    return color_correct(clear_background(resize_rgba(rgba, image_size)))


def to_tensor(rgba: np.ndarray, channels: int) -> Tensor:
    """uint8 (H, W, 4) -> float (C, H, W) in [-1, 1]; C = 3 drops alpha, C = 4 keeps it."""
    if channels not in (3, 4):
        raise ValueError(f"channels must be 3 or 4, got {channels}")
    t = torch.from_numpy(np.ascontiguousarray(rgba[..., :channels])).permute(2, 0, 1)
    return t.float().div(127.5).sub(1.0)


def render_files(renders_root: str | os.PathLike, synset: str, split: str) -> list[Path]:
    """The ``render_<i>.png`` of the split's models (first 5 views each, as the DPC converter),
    listed by :func:`occaist.data.shapenet_renders.split_render_files`."""
    root = Path(renders_root)
    how = "\n  Create them with: " + CREATE_RENDERS.format(world=root.parent)
    if not (root / "renders" / synset).is_dir():
        raise DataNotFoundError(
            f"synthetic renders not found: {root / 'renders' / synset} does not exist.{how}"
        )
    try:
        files = split_render_files(root, split, synset)
    except FileNotFoundError as err:
        raise DataNotFoundError(f"{err}{how}") from err
    if not files:
        raise DataNotFoundError(f"no {split!r} renders in {root / 'renders' / synset}{how}")
    return files


def segment_files(prepared_root: str | os.PathLike, split: str) -> list[Path]:
    """The prepared real segments ``<prepared_root>/<split>/*.png``, sorted."""
    folder = Path(prepared_root) / split
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not files:
        raise DataNotFoundError(
            f"no prepared real segments in {folder}.\n  Create them with: "
            + CREATE_REAL.format(prepared=Path(prepared_root))
        )
    return files


class UnpairedDataset(Dataset):
    """A[k mod |A|] with a random (or k mod |B|) B; see the module docstring.

    Args:
        a_files, b_files: RGBA PNGs of domain A (synthetic) and B (real).
        image_size: output side (a multiple of 4).
        channels: 3 (RGB) or 4 (RGBA).
        random_partner: draw B uniformly at random (training) instead of B[k mod |B|].
        flip: flip A and B horizontally, each with probability 1/2 (independently).
        seed: seed of the dataset's generator (partner and flips).
    """

    def __init__(
        self,
        a_files: list[Path],
        b_files: list[Path],
        image_size: int,
        channels: int,
        random_partner: bool,
        flip: bool,
        seed: int = 0,
    ) -> None:
        self.a_files = list(a_files)
        self.b_files = list(b_files)
        self.image_size = image_size
        self.channels = channels
        self.random_partner = random_partner
        self.flip = flip
        self.rng = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return max(len(self.a_files), len(self.b_files))

    def _load(self, path: Path, flip: bool) -> Tensor:
        image = to_tensor(load_rgba(path, self.image_size), self.channels)
        return image.flip(-1) if flip else image

    def __getitem__(self, index: int) -> dict[str, Any]:
        a_index = index % len(self.a_files)
        if self.random_partner:
            b_index = int(torch.randint(len(self.b_files), (), generator=self.rng).item())
        else:
            b_index = index % len(self.b_files)
        flips = (
            torch.rand(2, generator=self.rng) < 0.5 if self.flip else torch.zeros(2, dtype=bool)
        )
        return {
            "A": self._load(self.a_files[a_index], bool(flips[0])),
            "B": self._load(self.b_files[b_index], bool(flips[1])),
            "A_index": a_index,
            "B_index": b_index,
        }


def seed_worker(worker_id: int) -> None:
    """Re-seed a worker's copy of the dataset generator from the worker seed PyTorch assigns
    (``base_seed + worker_id``, ``base_seed`` drawn from the DataLoader's generator)."""
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, UnpairedDataset):
        info.dataset.rng.manual_seed(info.seed)


class UnpairedDataModule(pl.LightningDataModule):
    """Synthetic renders (X) vs prepared real segments (Y) for :class:`AISTCycleGAN`.

    Args:
        renders_root: ShapeNet-renders root (DPC layout).
        prepared_root: prepared real segments root (``train/``, ``test/``).
        synset: ShapeNet synset of the renders (cars: ``02958343``).
        image_size: images are resized to this side (128 default, as the renders; 256 upstream).
        channels: 3 (RGB, thesis) or 4 (RGBA, ``alpha_mode=channel``).
        batch_size: per process (4 in the thesis).
        eval_batch_size: validation/test batch size.
        flip: random horizontal flips in training (upstream default on).
        num_workers, pin_memory, persistent_workers: DataLoader settings.
        seed: seed of the shuffle order and the partner/flip draws.
        max_items_per_domain: keep only the first N files of each domain per split (smoke runs).
    """

    def __init__(
        self,
        renders_root: str,
        prepared_root: str,
        synset: str = "02958343",
        image_size: int = 128,
        channels: int = 3,
        batch_size: int = 4,
        eval_batch_size: int = 4,
        flip: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        seed: int = 0,
        max_items_per_domain: int | None = None,
    ) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (generator), got {image_size}")
        self.save_hyperparameters(logger=False)
        self.loader_generator = torch.Generator().manual_seed(seed)
        self.datasets: dict[str, UnpairedDataset] = {}

    def _files(self, a_split: str, b_split: str) -> tuple[list[Path], list[Path]]:
        hp = self.hparams
        a = render_files(hp.renders_root, hp.synset, a_split)
        b = segment_files(hp.prepared_root, b_split)
        if hp.max_items_per_domain is not None:
            a, b = a[: hp.max_items_per_domain], b[: hp.max_items_per_domain]
        return a, b

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        warn_if_synthetic(hp.renders_root)
        warn_if_synthetic(hp.prepared_root)
        wanted = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",),
        }.get(stage or "", ("train", "val", "test"))
        splits = {"train": ("train", "train"), "val": ("val", "test"), "test": ("test", "test")}
        for name in wanted:
            if name in self.datasets:
                continue
            a, b = self._files(*splits[name])
            training = name == "train"
            self.datasets[name] = UnpairedDataset(
                a,
                b,
                hp.image_size,
                hp.channels,
                random_partner=training,
                flip=training and hp.flip,
                seed=hp.seed + 1,
            )
            log.info("unpaired %s: |A|=%d renders, |B|=%d real segments", name, len(a), len(b))

    def _loader(self, name: str, batch_size: int, shuffle: bool) -> DataLoader:
        hp = self.hparams
        return DataLoader(
            self.datasets[name],
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory,
            persistent_workers=hp.persistent_workers and hp.num_workers > 0,
            worker_init_fn=seed_worker,
            # evaluation loaders get their own fixed generator so they never consume the global
            # RNG (a resumed run must draw the same numbers as an uninterrupted one)
            generator=self.loader_generator if shuffle else torch.Generator().manual_seed(hp.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.hparams.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.hparams.eval_batch_size, shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        """Generator states of the shuffle order and of the training partner/flip draws."""
        state = {"loader_generator": self.loader_generator.get_state()}
        if "train" in self.datasets:
            state["train_rng"] = self.datasets["train"].rng.get_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.loader_generator.set_state(state_dict["loader_generator"])
        if "train_rng" in state_dict:
            self.setup("fit")
            self.datasets["train"].rng.set_state(state_dict["train_rng"])
