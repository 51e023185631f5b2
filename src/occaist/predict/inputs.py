"""Inputs of ``predict``: list the images of a file, a folder or a glob, and decode each robustly.

Decoding never raises for bad data: a file that cannot be used comes back with a ``reason``
(``missing_file``, ``empty_file``, ``unreadable``, ``truncated``, ``too_large``), is counted and
reported by the run, and the run goes on. Every usable image becomes 8-bit RGBA ``(H, W, 4)``
after its EXIF orientation is applied: grayscale, palette, CMYK and 16-bit files are converted,
and ``has_alpha`` tells whether the alpha channel came from the file (RGBA, LA, transparent
palette) or was filled with 255.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

#: File name endings listed when the input is a folder or a glob (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm")
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputFile:
    """One listed input: its ``path``, and ``key``, its path relative to the input's base folder
    without the suffix (``"sub/img0"``), used to name every output of the image."""

    path: Path
    key: str


@dataclass
class DecodedInput:
    """The outcome of reading one :class:`InputFile`.

    Attributes:
        file: the listed input.
        index: its position in the listing (COCO ``image_id`` is ``index + 1``).
        rgba: ``uint8`` ``(H, W, 4)`` after EXIF orientation, or ``None`` when unusable.
        has_alpha: whether the file had an alpha channel of its own.
        reason: why the file is unusable, else ``None``.
        tensor: the model's input made from ``rgba`` by the predictor's ``prepare`` (any type).
        meta: what ``prepare`` needs to map outputs back onto the image (padding, scale).
    """

    file: InputFile
    index: int
    rgba: np.ndarray | None = None
    has_alpha: bool = False
    reason: str | None = None
    tensor: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.rgba is not None


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _keys(paths: Sequence[Path], base: Path) -> list[InputFile]:
    """Output keys: the path relative to ``base`` without its suffix; when two files differ only
    by suffix (``a.jpg``, ``a.png``), each keeps its suffix in the key (``a_jpg``, ``a_png``)."""
    stems = []
    for path in paths:
        try:
            rel = path.resolve().relative_to(base.resolve())
        except ValueError:  # a glob reaching outside its base (``../x/*.jpg``): the name only
            rel = Path(path.name)
        stems.append(rel.with_suffix("").as_posix())
    clashes = {s for s in stems if stems.count(s) > 1}
    files = []
    for path, stem in zip(paths, stems):
        key = f"{stem}_{path.suffix.lstrip('.').lower()}" if stem in clashes else stem
        files.append(InputFile(path, key))
    return files


def _glob_base(pattern: str) -> Path:
    """The folder in front of the first component holding a glob character."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def list_inputs(source: str | os.PathLike, limit: int | None = None) -> list[InputFile]:
    """The images of ``source``, sorted, at most ``limit`` of them.

    ``source`` is an image file (taken whatever its suffix), a folder (every file with an image
    suffix below it, recursively) or a glob pattern (``"photos/**/*.jpg"``, recursive ``**``).

    Raises:
        FileNotFoundError: nothing matches ``source``.
    """
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_file():
        files = _keys([path], path.parent)
    elif path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and _is_image_name(p))
        files = _keys(found, path)
    elif _GLOB_CHARS & set(text):
        matches = glob.glob(os.path.expanduser(text), recursive=True)
        found = sorted(Path(p) for p in matches if Path(p).is_file())
        files = _keys(found, _glob_base(os.path.expanduser(text)))
    else:
        raise FileNotFoundError(f"input {text!r} is neither a file, a folder nor a glob pattern")
    if not files:
        raise FileNotFoundError(
            f"no images found in {text!r} (suffixes: {', '.join(IMAGE_SUFFIXES)})"
        )
    return files[:limit] if limit is not None else files


def _sixteen_bit_to_gray(image: Image.Image) -> Image.Image:
    values = np.asarray(image).astype(np.int64)
    values = values >> 8 if values.max() > 255 else values
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")


def decode_rgba(path: str | os.PathLike) -> tuple[np.ndarray | None, bool, str | None]:
    """``(rgba, has_alpha, reason)`` for ``path``; never raises for bad data (module docstring)."""
    path = Path(path)
    if not path.is_file():
        return None, False, "missing_file"
    if path.stat().st_size == 0:
        return None, False, "empty_file"
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            has_alpha = image.mode in _ALPHA_MODES or (
                image.mode == "P" and "transparency" in image.info
            )
            if image.mode in _SIXTEEN_BIT_MODES:
                image = _sixteen_bit_to_gray(image)
            rgba = np.array(image.convert("RGBA"), dtype=np.uint8)
    except UnidentifiedImageError:
        return None, False, "unreadable"
    except Image.DecompressionBombError:
        return None, False, "too_large"
    except (OSError, SyntaxError, ValueError) as err:
        return None, False, "truncated" if "truncated" in str(err).lower() else "unreadable"
    if rgba.ndim != 3 or min(rgba.shape[:2]) < 1:
        return None, False, "unreadable"
    return rgba, has_alpha, None


class InputDataset(Dataset):
    """Decodes the listed files and applies ``prepare(rgba) -> (tensor, meta)`` to good ones.

    Items are :class:`DecodedInput`; use ``collate_fn=list`` (a batch is a list of them), so that
    unreadable files travel with the batch and are counted where the results are written.
    """

    def __init__(
        self,
        files: Sequence[InputFile],
        prepare: Callable[[np.ndarray], tuple[Any, dict[str, Any]]],
    ) -> None:
        self.files = list(files)
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> DecodedInput:
        file = self.files[index]
        rgba, has_alpha, reason = decode_rgba(file.path)
        item = DecodedInput(file, index, rgba, has_alpha, reason)
        if rgba is not None:
            item.tensor, item.meta = self.prepare(rgba)
        return item
