"""Image files of the Stanford Cars layout: records and robust decoding (numpy + Pillow only).

Kept free of torch and Lightning so that preparation workers start in about a second;
:mod:`occaist.data.stanford_cars` (the listing and the LightningDataModule) re-exports these.
:func:`read_image_rgb` applies the EXIF orientation, converts CMYK, 16-bit, palette, RGBA and
grayscale images to 8-bit RGB (noting what it did) and returns a reason instead of raising for
files it cannot use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Folder name torchvision expects under its root.
DATASET_FOLDER = "stanford_cars"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Byte offset of the bit depth in a PNG's IHDR chunk.
_PNG_BIT_DEPTH_OFFSET = 24
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


@dataclass
class DecodedImage:
    """The outcome of reading one file.

    Attributes:
        rgb: ``uint8`` array ``(H, W, 3)`` after EXIF orientation, or ``None`` when unusable.
        reason: why the file is unusable (``missing_file``, ``empty_file``, ``unreadable``,
            ``truncated``, ``too_large``, ``unsupported_mode:<mode>``, ``tiny_image``), else None.
        notes: conversions applied (``cmyk``, ``16bit``, ``palette``, ``rgba``, ``grayscale_mode``,
            ``exif_rotated``); counted in the preparation report.
    """

    rgb: np.ndarray | None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)


def _png_bit_depth(path: Path) -> int | None:
    with open(path, "rb") as fh:
        head = fh.read(_PNG_BIT_DEPTH_OFFSET + 1)
    if not head.startswith(_PNG_SIGNATURE) or len(head) <= _PNG_BIT_DEPTH_OFFSET:
        return None
    return head[_PNG_BIT_DEPTH_OFFSET]


def _to_rgb(image: Image.Image, notes: list[str]) -> np.ndarray | None:
    """8-bit RGB ``(H, W, 3)`` from any mode Pillow decodes; None for modes we do not accept."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image)
    if mode == "CMYK":
        notes.append("cmyk")
        return np.asarray(image.convert("RGB"))
    if mode in _SIXTEEN_BIT_MODES:
        notes.append("16bit")
        gray = np.asarray(image).astype(np.int64)
        gray8 = np.clip(gray >> 8 if gray.max() > 255 else gray, 0, 255).astype(np.uint8)
        notes.append("grayscale_mode")
        return np.repeat(gray8[..., None], 3, axis=-1)
    if mode in ("P", "PA"):
        notes.append("palette")
        return np.asarray(image.convert("RGBA").convert("RGB"))
    if mode in ("RGBA", "RGBa", "RGBX"):
        notes.append("rgba")
        return np.asarray(image.convert("RGB"))
    if mode in ("L", "LA", "1"):
        notes.append("grayscale_mode")
        return np.asarray(image.convert("RGB"))
    if mode == "YCbCr":
        return np.asarray(image.convert("RGB"))
    return None


def read_image_rgb(path: str | Path, min_side: int = 1) -> DecodedImage:
    """Read ``path`` as 8-bit RGB with the EXIF orientation applied; never raises for bad data.

    Args:
        path: image file (any format Pillow reads).
        min_side: images whose shorter side is below this are rejected as ``tiny_image``.
    """
    path = Path(path)
    notes: list[str] = []
    if not path.is_file():
        return DecodedImage(None, "missing_file")
    if path.stat().st_size == 0:
        return DecodedImage(None, "empty_file")
    try:
        with Image.open(path) as image:
            image.load()
            if _png_bit_depth(path) == 16 and image.mode not in _SIXTEEN_BIT_MODES:
                notes.append("16bit")  # Pillow already reduced 48/64-bit PNG to 8 bits/channel
            transposed = ImageOps.exif_transpose(image)
            if transposed is not image:
                orientation = image.getexif().get(0x0112, 1)
                if orientation not in (None, 1):
                    notes.append("exif_rotated")
            rgb = _to_rgb(transposed, notes)
            mode = transposed.mode
    except UnidentifiedImageError:
        return DecodedImage(None, "unreadable")
    except Image.DecompressionBombError:
        return DecodedImage(None, "too_large")
    except (OSError, SyntaxError, ValueError) as err:
        reason = "truncated" if "truncated" in str(err).lower() else "unreadable"
        return DecodedImage(None, reason)
    if rgb is None:
        return DecodedImage(None, f"unsupported_mode:{mode}", notes)
    if min(rgb.shape[:2]) < min_side:
        return DecodedImage(None, "tiny_image", notes)
    return DecodedImage(np.array(rgb, dtype=np.uint8, order="C", copy=True), None, notes)


def dataset_folder(root: str | Path) -> Path:
    """The Stanford Cars folder, given it (any name) or the parent of a ``stanford_cars``."""
    root = Path(root)
    if (root / "devkit").is_dir() or root.name == DATASET_FOLDER:
        return root
    if (root / DATASET_FOLDER).is_dir():
        return root / DATASET_FOLDER
    return root


@dataclass(frozen=True)
class CarImageRecord:
    """One listed image: stable ``key`` (``<split>/<file stem>``), path, split and class index."""

    key: str
    path: str
    split: str
    class_index: int
