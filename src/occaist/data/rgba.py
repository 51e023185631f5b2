"""RGBA image operations: normalisation of segmentations (thesis sections 3.2.1 and 4.1.1.1).

Torch-free; used by the preparation (``occaist.prep``) and by the unpaired reader.

All functions take and return ``uint8`` RGBA arrays of shape ``(H, W, 4)``; none modifies its
input. The car-to-frame ratio of an RGBA image is (thesis Definition 1)

    r = #{pixels with alpha > 0} / #{pixels with alpha == 0}.

Steps, in the order the pipeline applies them:

1. :func:`pad_to_square` -- the shorter side is padded with zeros by half the difference of the
   sides; an odd remainder goes to a side chosen at random (Fig. 3.12).
2. :func:`pad_to_ratio` -- the square of side ``s`` holding ``a`` car pixels is padded by the same
   amount on every side to a side ``S`` with ``a / (S² - a) = r``, i.e. ``S = sqrt(a (1 + r) / r)``
   (Fig. 3.13, ``r`` drawn from the normal distribution fitted to the synthetic training set).
3. :func:`resize_rgba` -- to the configured size (premultiplied alpha, so no colour bleeds in from
   the transparent padding).
4. :func:`color_correct` -- RGB ``(0, 0, 0)`` with alpha > 0 becomes ``(1, 1, 1)`` (section
   4.1.1.1), so "RGB == 0" identifies the background exactly. It runs last so that the invariant
   holds on the bytes written to disk; the CycleGAN data applies the same function to the renders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Padding:
    """Pixels added on each side: ``top``, ``bottom``, ``left``, ``right``."""

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    def __add__(self, other: Padding) -> Padding:
        return Padding(
            self.top + other.top,
            self.bottom + other.bottom,
            self.left + other.left,
            self.right + other.right,
        )


def _check_rgba(rgba: np.ndarray) -> None:
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"expected uint8 RGBA of shape (H, W, 4), got {rgba.dtype} {rgba.shape}")


def car_to_frame_ratio(alpha: np.ndarray) -> float:
    """Thesis Definition 1: ``#(alpha > 0) / #(alpha == 0)`` of an alpha channel ``(H, W)``.

    Returns ``inf`` when no pixel is transparent.
    """
    car = int(np.count_nonzero(alpha))
    frame = alpha.size - car
    return math.inf if frame == 0 else car / frame


def pad(rgba: np.ndarray, padding: Padding) -> np.ndarray:
    """Zero-pad (transparent black) ``rgba`` ``(H, W, 4)`` by ``padding``; returns a new array."""
    _check_rgba(rgba)
    return np.pad(
        rgba,
        ((padding.top, padding.bottom), (padding.left, padding.right), (0, 0)),
        mode="constant",
    )


def square_padding(height: int, width: int, rng: np.random.Generator) -> Padding:
    """The padding that makes a ``height x width`` image square (Fig. 3.12).

    The shorter side gets half the difference on each side; an odd remainder goes to one of the
    two sides, chosen by ``rng``.
    """
    diff = abs(height - width)
    half, odd = divmod(diff, 2)
    first, second = half, half
    if odd:
        if rng.integers(2) == 0:
            first += 1
        else:
            second += 1
    if height < width:
        return Padding(top=first, bottom=second)
    return Padding(left=first, right=second)


def pad_to_square(rgba: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Padding]:
    """Pad ``rgba`` ``(H, W, 4)`` to ``(S, S, 4)``, ``S = max(H, W)`` (:func:`square_padding`)."""
    _check_rgba(rgba)
    padding = square_padding(rgba.shape[0], rgba.shape[1], rng)
    return pad(rgba, padding), padding


def ratio_padding(side: int, car_pixels: int, ratio: float) -> int:
    """Pixels ``n`` to add on every side of a square of ``side`` holding ``car_pixels`` car pixels.

    Solves ``a / ((s + 2n)² - a) = r`` (Fig. 3.13) for the integer ``n`` whose ratio is closest
    to ``r``. Returns 0 when the square is already at or below ``r`` (padding can only lower the
    ratio; the pipeline counts those as ``ratio_unreachable``).
    """
    if ratio <= 0 or not math.isfinite(ratio):
        raise ValueError(f"target car-to-frame ratio must be positive and finite, got {ratio}")
    if car_pixels <= 0:
        return 0
    target_side = math.sqrt(car_pixels * (1.0 + ratio) / ratio)
    if target_side <= side:
        return 0
    exact = (target_side - side) / 2.0
    best, best_err = 0, math.inf
    for n in (math.floor(exact), math.ceil(exact)):
        total = (side + 2 * n) ** 2
        err = abs(car_pixels / (total - car_pixels) - ratio) if total > car_pixels else math.inf
        if err < best_err:
            best, best_err = n, err
    return max(best, 0)


def pad_to_ratio(rgba: np.ndarray, ratio: float) -> tuple[np.ndarray, Padding]:
    """Pad the square ``rgba`` ``(S, S, 4)`` equally on all sides to the car-to-frame ``ratio``."""
    _check_rgba(rgba)
    if rgba.shape[0] != rgba.shape[1]:
        raise ValueError(f"pad_to_ratio expects a square image, got {rgba.shape[:2]}")
    n = ratio_padding(rgba.shape[0], int(np.count_nonzero(rgba[..., 3])), ratio)
    padding = Padding(n, n, n, n)
    return pad(rgba, padding), padding


def resize_rgba(rgba: np.ndarray, size: int) -> np.ndarray:
    """Resize a square ``rgba`` ``(S, S, 4)`` to ``(size, size, 4)``.

    Pillow resamples RGBA with premultiplied alpha, so transparent padding does not darken the
    car's edge. ``Image.BOX`` averages when shrinking (most segmentations are larger than 128)
    and is bilinear-like when enlarging.
    """
    _check_rgba(rgba)
    if rgba.shape[0] == size and rgba.shape[1] == size:
        return rgba.copy()
    image = Image.fromarray(rgba, mode="RGBA")
    return np.asarray(image.resize((size, size), resample=Image.Resampling.BOX)).copy()


def color_correct(rgba: np.ndarray) -> np.ndarray:
    """Thesis 4.1.1.1: pixels with RGB ``(0, 0, 0)`` and alpha > 0 become ``(1, 1, 1)``.

    Args:
        rgba: ``uint8`` array ``(H, W, 4)``.

    Returns:
        A corrected copy; every other pixel is unchanged, so afterwards ``RGB == 0`` holds exactly
        where ``alpha == 0`` or the pixel already was transparent black.
    """
    _check_rgba(rgba)
    out = rgba.copy()
    black = (out[..., 0] | out[..., 1] | out[..., 2]) == 0  # channel planes: faster than any()
    out[black & (out[..., 3] > 0), :3] = 1
    return out


def clear_background(rgba: np.ndarray) -> np.ndarray:
    """Zero the RGB of fully transparent pixels (``alpha == 0``), as the renders have it."""
    _check_rgba(rgba)
    out = rgba.copy()
    out[..., :3] *= (out[..., 3:] > 0).astype(np.uint8)
    return out
