"""ShapeNet renders in the DPC layout: reader, Dataset and LightningDataModule.

Layout (``eldar/differentiable-point-clouds``, ``create_tf_records.py``), under ``root``::

    renders/<synset>/<model_id>/render_{i}.png   RGBA; alpha is the mask (not always binary)
    renders/<synset>/<model_id>/depth_{i}.png    uint16, depth = value·10/65535 (background 10)
    renders/<synset>/<model_id>/camera_{i}.mat   ``extrinsic`` (4, 4), ``pos`` (3,) Blender z-up
    renders/<synset>_{train,val,test}.txt        model ids, one per line (also looked for in
                                                 ``root/`` and ``root/splits/``; copies in
                                                 several of them must list the same ids)
    gt/downsampled/<synset>/<model_id>.mat       ``points`` float64 (M, 3), M varies per model

As upstream's converter (``create_tf_records.py``): views are ``sorted(render_*.png)`` by the index
in the name, the first ``num_views`` (5) are used and a model needs at least that many; RGB is
composited on a **white** background, ``rgb·a + (1 − a)``, in [0, 1]; the mask is alpha; a
different ``image_size`` resizes RGB and mask bicubically and depth with nearest neighbour. The
ground-truth pose is ``quaternion_from_campos(pos)`` (``occaist.geometry.camera``). Model ids are
kept as strings (ShapeNet v1 ids have 29-32 characters; never pad them).

**Bad files.** A model with any unreadable file (empty, truncated or corrupt render, camera,
depth or ground-truth file, or a camera position that is not finite) is skipped: the dataset
returns ``None`` for it, logs a warning naming the file and the reason with the running count,
and keeps the record in ``skipped``; :func:`collate_models` drops it, and the datamodule logs a
summary of every skipped file of the run when it is torn down.

The same reader works unchanged on a stylized copy (the AIST ``stylize`` step rewrites only the
``render_{i}.png`` files). Public helpers other code reuses: :func:`find_split_file`,
:func:`read_split`, :func:`view_paths`, :func:`split_render_files`, :func:`read_view`,
:func:`read_gt_points`.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import scipy.io
import torch
from PIL import Image, UnidentifiedImageError
from scipy.io.matlab import MatReadError
from torch.utils.data import Dataset

from occaist.data.common import SplitLoaders, warn_if_synthetic
from occaist.geometry.camera import quaternion_from_campos
from occaist.utils.io import atomic_write
from occaist.utils.logging import RankedLogger

log = RankedLogger(__name__, rank_zero_only=False)

__all__ = [
    "CAR_SYNSET",
    "SPLIT_DIRS",
    "ShapeNetRendersDataModule",
    "ShapeNetRendersDataset",
    "UnreadableFileError",
    "collate_models",
    "find_split_file",
    "read_gt_points",
    "read_split",
    "read_view",
    "split_render_files",
    "view_paths",
]

CAR_SYNSET = "02958343"
#: Folders (relative to ``root``) searched in order for ``<synset>_<split>.txt``.
SPLIT_DIRS = ("renders", ".", "splits")
#: ``depth_{i}.png`` stores ``depth · DEPTH_PNG_SCALE / MAX_DEPTH`` as uint16.
DEPTH_PNG_SCALE = 65535.0
MAX_DEPTH = 10.0
_HOW_TO_GET = (
    "generate a synthetic world with `python -m occaist.synth --root DIR --preset demo` "
    "(then data.root=DIR/shapenet_renders), or download the DPC renders and ground truth "
    "(data/download_train_data.sh 02958343 and data/download_ground_truth.sh 02958343 in "
    "eldar/differentiable-point-clouds) and pass data.root=<their root>"
)
_VIEW_INDEX = re.compile(r"render_(\d+)\.png$")
#: What reading a damaged render, camera, depth or ground-truth file can raise (PIL, scipy's
#: MAT reader and the zlib / struct layers under them).
_READ_ERRORS = (
    OSError,
    UnidentifiedImageError,
    ValueError,
    KeyError,
    IndexError,
    EOFError,
    SyntaxError,
    MatReadError,
    struct.error,
    zlib.error,
)


class UnreadableFileError(OSError):
    """A file of the layout that cannot be read; ``path`` names it and ``reason`` says why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def _read(path: Path, reader: Any) -> Any:
    """``reader(path)``, with every read failure turned into :class:`UnreadableFileError`."""
    try:
        if path.is_file() and path.stat().st_size == 0:
            raise UnreadableFileError(path, "empty file (0 bytes)")
        return reader(path)
    except UnreadableFileError:
        raise
    except _READ_ERRORS as err:
        raise UnreadableFileError(path, f"{type(err).__name__}: {err}") from err


def _split_ids(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def find_split_file(root: str | os.PathLike, synset: str, split: str) -> Path:
    """The split file ``<synset>_<split>.txt`` under one of :data:`SPLIT_DIRS` of ``root``.

    When several of those folders hold one, they must list the same model ids: the first (in
    :data:`SPLIT_DIRS` order) is used and the others named in a log line; copies that differ
    raise ``ValueError`` naming both, rather than one silently winning.
    """
    root = Path(root)
    found = [
        root / folder / f"{synset}_{split}.txt"
        for folder in SPLIT_DIRS
        if (root / folder / f"{synset}_{split}.txt").is_file()
    ]
    if not found:
        looked = ", ".join(str(root / d / f"{synset}_{split}.txt") for d in SPLIT_DIRS)
        raise FileNotFoundError(f"split file for split {split!r} not found (looked at {looked})")
    chosen = found[0]
    if len(found) > 1:
        ids = _split_ids(chosen)
        for other in found[1:]:
            if _split_ids(other) != ids:
                raise ValueError(
                    f"split {split!r} has two different split files: {chosen} and {other} "
                    "list different model ids; delete or fix the one that is wrong"
                )
        log.info(
            "split %r: using %s (identical copies: %s)",
            split,
            chosen,
            ", ".join(str(p) for p in found[1:]),
        )
    return chosen


def read_split(root: str | os.PathLike, synset: str, split: str) -> list[str]:
    """Model ids of ``split`` in file order (blank lines skipped, ids kept as strings)."""
    return _split_ids(find_split_file(root, synset, split))


def view_paths(model_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(view index, render_{i}.png)`` of a model folder, sorted by index (parsed from names)."""
    found = []
    for path in Path(model_dir).glob("render_*.png"):
        match = _VIEW_INDEX.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def split_render_files(
    root: str | os.PathLike,
    split: str,
    synset: str = CAR_SYNSET,
    num_views: int | None = 5,
) -> list[Path]:
    """Every ``render_{i}.png`` of the models of ``split`` (first ``num_views`` per model, as the
    DPC converter; ``None`` = all), in split-file then view order. Missing model folders are
    skipped."""
    models = Path(root) / "renders" / synset
    files: list[Path] = []
    for model_id in read_split(root, synset, split):
        views = view_paths(models / model_id)
        files.extend(p for _, p in (views if num_views is None else views[:num_views]))
    return files


def _resize(array: np.ndarray, size: int, resample: Image.Resampling) -> np.ndarray:
    channels = [array] if array.ndim == 2 else [array[..., c] for c in range(array.shape[-1])]
    out = [
        np.asarray(Image.fromarray(c.astype(np.float32), mode="F").resize((size, size), resample))
        for c in channels
    ]
    return out[0] if array.ndim == 2 else np.stack(out, -1)


def read_view(
    model_dir: str | os.PathLike,
    view: int,
    image_size: int | None = None,
    load_depth: bool = False,
) -> dict[str, np.ndarray]:
    """One view of a model folder as float32 arrays.

    Returns ``rgba`` (H, W, 4) as stored in [0, 1]; ``rgb`` (H, W, 3) composited on white;
    ``mask`` (H, W) = alpha; ``cam_pos`` (3,); ``extrinsic`` (4, 4); with ``load_depth`` also
    ``depth`` (H, W) in [0, 10]. ``image_size`` resizes (bicubic for RGB and mask, clipped to
    [0, 1]; nearest for depth). Raises :class:`UnreadableFileError` (an ``OSError``) naming the
    file when one cannot be read or its camera is not finite.
    """
    model_dir = Path(model_dir)
    rgba = _read(model_dir / f"render_{view}.png", _read_rgba)
    camera_path = model_dir / f"camera_{view}.mat"
    out = _read(camera_path, _read_camera)
    if not (np.isfinite(out["cam_pos"]).all() and np.isfinite(out["extrinsic"]).all()):
        raise UnreadableFileError(camera_path, "camera values are not finite")
    if image_size is not None and rgba.shape[0] != image_size:
        rgba = np.clip(_resize(rgba, image_size, Image.Resampling.BICUBIC), 0.0, 1.0)
    alpha = rgba[..., 3]
    out["rgba"] = rgba
    out["mask"] = alpha
    out["rgb"] = rgba[..., :3] * alpha[..., None] + (1.0 - alpha[..., None])
    if load_depth:
        depth = _read(model_dir / f"depth_{view}.png", _read_depth)
        if image_size is not None and depth.shape[0] != image_size:
            depth = _resize(depth, image_size, Image.Resampling.NEAREST)
        out["depth"] = depth
    return out


def _read_rgba(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0


def _read_camera(path: Path) -> dict[str, np.ndarray]:
    camera = scipy.io.loadmat(path)
    return {
        "cam_pos": np.asarray(camera["pos"], dtype=np.float32).reshape(3),
        "extrinsic": np.asarray(camera["extrinsic"], dtype=np.float32).reshape(4, 4),
    }


def _read_depth(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im, dtype=np.float32) * (MAX_DEPTH / DEPTH_PNG_SCALE)


def _read_points(path: Path) -> np.ndarray:
    points = np.asarray(scipy.io.loadmat(path)["points"], dtype=np.float32).reshape(-1, 3)
    if not np.isfinite(points).all():
        raise UnreadableFileError(path, "ground-truth points are not finite")
    return points


def read_gt_points(root: str | os.PathLike, synset: str, model_id: str) -> np.ndarray | None:
    """Ground-truth cloud ``(M, 3)`` float32 from ``gt/downsampled/<synset>/<id>.mat``, or None
    when the file does not exist; :class:`UnreadableFileError` when it cannot be read."""
    path = Path(root) / "gt" / "downsampled" / synset / f"{model_id}.mat"
    if not path.is_file():
        return None
    return _read(path, _read_points)


class ShapeNetRendersDataset(Dataset):
    """Models of one split; an item is several views of one model (and its ground-truth cloud).

    Item (``None`` when a file of the model is unreadable: skipped, logged with the file's path
    and counted in ``unreadable`` (model ids) and ``skipped`` (model id, file, reason);
    :func:`collate_models` drops it):

    - ``image`` (V, 3, H, W) float in [0, 1] on white, ``mask`` (V, 1, H, W),
    - ``quaternion`` (V, 4) ground-truth pose from ``cam_pos`` (V, 3), ``view`` (V,) indices,
    - ``model_id`` str, ``model_index`` int (position in the split file),
    - ``points`` (M, 3) ground truth (``(0, 3)`` when missing) if ``with_gt``,
    - ``depth`` (V, 1, H, W) if ``load_depth``.

    ``views_per_model=None`` returns all ``num_views`` views in order (evaluation); otherwise
    that many views are drawn without replacement, fresh for every item (training, upstream's
    ``np.random.choice``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        synset: str = CAR_SYNSET,
        num_views: int = 5,
        views_per_model: int | None = None,
        image_size: int = 128,
        load_depth: bool = False,
        with_gt: bool = False,
        max_models: int | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.synset = synset
        self.num_views = num_views
        self.views_per_model = views_per_model
        self.image_size = image_size
        self.load_depth = load_depth
        self.with_gt = with_gt
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.unreadable: list[str] = []
        self.skipped: list[dict[str, str]] = []
        if views_per_model is not None and views_per_model > num_views:
            raise ValueError(f"views_per_model={views_per_model} > num_views={num_views}")
        ids = read_split(self.root, synset, split)
        if max_models is not None:
            ids = ids[:max_models]
        self.model_ids = ids
        self.views: list[list[int]] = []
        models_dir = self.root / "renders" / synset
        for model_id in ids:
            found = [i for i, _ in view_paths(models_dir / model_id)]
            if len(found) < num_views:
                raise ValueError(
                    f"model {model_id} of split {split!r} has {len(found)} views in "
                    f"{models_dir / model_id}, fewer than num_views={num_views}"
                )
            self.views.append(found[:num_views])

    def __len__(self) -> int:
        return len(self.model_ids)

    def _cache_file(self, index: int) -> Path | None:
        if self.cache_dir is None:
            return None
        tag = f"{self.synset}_{self.image_size}_{int(self.load_depth)}"
        return self.cache_dir / tag / f"{self.model_ids[index]}.npz"

    def _load_model(self, index: int) -> dict[str, np.ndarray]:
        """Every used view of model ``index`` (from the cache when there is one)."""
        cache = self._cache_file(index)
        if cache is not None and cache.is_file():
            with np.load(cache) as data:
                return {k: data[k] for k in data.files}
        model_dir = self.root / "renders" / self.synset / self.model_ids[index]
        views = [
            read_view(model_dir, v, self.image_size, self.load_depth) for v in self.views[index]
        ]
        arrays = {
            "rgb": np.stack([v["rgb"] for v in views]),
            "mask": np.stack([v["mask"] for v in views]),
            "cam_pos": np.stack([v["cam_pos"] for v in views]),
            "view": np.asarray(self.views[index], dtype=np.int64),
        }
        if self.load_depth:
            arrays["depth"] = np.stack([v["depth"] for v in views])
        if cache is not None:
            stored = dict(arrays)
            stored["rgb"] = np.round(arrays["rgb"] * 255).astype(np.uint8)
            stored["mask"] = np.round(arrays["mask"] * 255).astype(np.uint8)
            atomic_write(cache, lambda p: np.savez(p, **stored))
        return arrays

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        model_id = self.model_ids[index]
        try:
            arrays = self._load_model(index)
            points = read_gt_points(self.root, self.synset, model_id) if self.with_gt else None
        except _READ_ERRORS as err:
            path = getattr(err, "path", None) or getattr(err, "filename", None) or "?"
            reason = getattr(err, "reason", None) or f"{type(err).__name__}: {err}"
            if model_id not in self.unreadable:
                self.unreadable.append(model_id)
                self.skipped.append({"model_id": model_id, "file": str(path), "reason": reason})
            log.warning(
                "skipping model %s of split %r: unreadable file %s (%s); %d model(s) skipped",
                model_id,
                self.split,
                path,
                reason,
                len(self.unreadable),
            )
            return None
        rgb, mask = arrays["rgb"], arrays["mask"]
        if rgb.dtype == np.uint8:
            rgb, mask = rgb.astype(np.float32) / 255.0, mask.astype(np.float32) / 255.0
        count = len(arrays["view"])
        if self.views_per_model is None:
            pick = torch.arange(count)
        else:
            pick = torch.randperm(count)[: self.views_per_model]
        cam_pos = torch.from_numpy(arrays["cam_pos"]).double()[pick]
        item: dict[str, Any] = {
            "image": torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2)[pick],
            "mask": torch.from_numpy(np.ascontiguousarray(mask))[:, None][pick],
            "cam_pos": cam_pos.float(),
            "quaternion": quaternion_from_campos(cam_pos).float(),
            "view": torch.from_numpy(arrays["view"])[pick],
            "model_id": self.model_ids[index],
            "model_index": index,
        }
        if self.load_depth:
            item["depth"] = torch.from_numpy(arrays["depth"])[:, None][pick]
        if self.with_gt:
            item["points"] = torch.from_numpy(
                points if points is not None else np.zeros((0, 3), np.float32)
            )
        return item


def collate_models(items: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Stack model items (dropping ``None``: unreadable models); ``None`` if nothing is left.

    Fixed-size tensors are stacked to ``(B, ...)``; ``model_id`` becomes a list; ground-truth
    clouds of different sizes are padded to ``points`` (B, M_max, 3) with ``num_points`` (B,).
    """
    items = [it for it in items if it is not None]
    if not items:
        return None
    batch: dict[str, Any] = {"model_id": [it["model_id"] for it in items]}
    batch["model_index"] = torch.tensor([it["model_index"] for it in items])
    for key in ("image", "mask", "cam_pos", "quaternion", "view", "depth"):
        if key in items[0]:
            batch[key] = torch.stack([it[key] for it in items])
    if "points" in items[0]:
        sizes = [it["points"].shape[0] for it in items]
        padded = torch.zeros(len(items), max(max(sizes), 1), 3)
        for i, it in enumerate(items):
            padded[i, : sizes[i]] = it["points"]
        batch["points"] = padded
        batch["num_points"] = torch.tensor(sizes)
    return batch


class ShapeNetRendersDataModule(SplitLoaders, pl.LightningDataModule):
    """Batches of B models x V views from the DPC layout (see the module docstring).

    Training batches: ``batch_size`` models, ``views_per_model`` views each drawn without
    replacement (upstream: 8 x 4 = 32 images). Validation / test batches: ``eval_batch_size``
    models with all ``num_views`` views and the ground-truth cloud.

    Args:
        root: the ``shapenet_renders`` folder (original, stylized copy, or real segments in the
            same layout).
        synset: category folder (cars ``02958343``).
        batch_size: models per training batch (B).
        views_per_model: views per model in training (V).
        num_views: views used per model (the first by index; upstream 5).
        image_size: network input side; renders of another size are resized.
        eval_batch_size: models per validation / test batch.
        num_workers: DataLoader workers.
        pin_memory: DataLoader ``pin_memory``.
        train_split, val_split, test_split: split names (``<synset>_<split>.txt``).
        max_models: use only the first models of every split (quick runs); None = all.
        load_depth: also read ``depth_{i}.png`` (not used by training; upstream
            ``saved_depth: false``).
        cache_dir: one-time conversion cache (one ``.npz`` of uint8 images per model), written
            on first read and reused; None reads the PNGs every time.
        shuffle: shuffle training models (upstream reads records in order: ``false``).
    """

    collate_fn = staticmethod(collate_models)  # B models x V views (skips unreadable models)

    def __init__(
        self,
        root: str,
        synset: str = CAR_SYNSET,
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
        self.data_train: ShapeNetRendersDataset | None = None
        self.data_val: ShapeNetRendersDataset | None = None
        self.data_test: ShapeNetRendersDataset | None = None

    def _dataset(self, split: str, train: bool) -> ShapeNetRendersDataset:
        hp = self.hparams
        return ShapeNetRendersDataset(
            hp.root,
            split,
            synset=hp.synset,
            num_views=hp.num_views,
            views_per_model=hp.views_per_model if train else None,
            image_size=hp.image_size,
            load_depth=hp.load_depth,
            with_gt=not train,
            max_models=hp.max_models,
            cache_dir=hp.cache_dir,
        )

    def _check_root(self) -> None:
        root = Path(self.hparams.root)
        if not (root / "renders" / self.hparams.synset).is_dir():
            raise FileNotFoundError(
                f"ShapeNet renders not found: {root / 'renders' / self.hparams.synset} does not "
                f"exist.\n  To get them, {_HOW_TO_GET}."
            )
        warn_if_synthetic(root)

    def setup(self, stage: str | None = None) -> None:
        self._check_root()
        hp = self.hparams
        if stage in (None, "fit") and self.data_train is None:
            self.data_train = self._dataset(hp.train_split, train=True)
        if stage in (None, "fit", "validate") and self.data_val is None:
            self.data_val = self._dataset(hp.val_split, train=False)
        if stage in (None, "test", "predict") and self.data_test is None:
            self.data_test = self._dataset(hp.test_split, train=False)
        for name, ds in (
            ("train", self.data_train),
            ("val", self.data_val),
            ("test", self.data_test),
        ):
            if ds is not None:
                log.info("shapenet_renders %s (%s): %d models", name, ds.split, len(ds))

    def skipped(self) -> list[dict[str, str]]:
        """Every skipped model of this process's datasets: split, model id, file, reason.

        Datasets read in DataLoader worker processes count there, not here (``num_workers`` 0
        keeps the full list; the workers' warnings still name every file)."""
        out = []
        for ds in (self.data_train, self.data_val, self.data_test):
            if ds is not None:
                out += [{"split": ds.split, **rec} for rec in ds.skipped]
        return out

    def teardown(self, stage: str | None = None) -> None:
        skipped = self.skipped()
        if skipped:
            log.warning(
                "%d model(s) skipped for unreadable files: %s",
                len(skipped),
                "; ".join(
                    f"{r['split']}/{r['model_id']}: {r['file']} ({r['reason']})" for r in skipped
                ),
            )
