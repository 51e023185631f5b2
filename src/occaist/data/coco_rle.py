"""COCO run-length encoding of binary masks in numpy (the format of pycocotools ``mask.py``).

- Masks are ``(H, W)`` arrays; runs are taken in **column-major** (Fortran) order and alternate
  0-runs and 1-runs, starting with a (possibly empty) 0-run.
- Uncompressed RLE: ``{"size": [H, W], "counts": [int, ...]}``.
- Compressed RLE: ``{"size": [H, W], "counts": str}``, pycocotools' ``rleToString``: each count
  (from the fourth on, minus the count two places before it) written as a LEB128-like sequence of
  5-bit groups, 6 bits per ASCII character offset by 48.
- ``area`` and ``to_bbox`` reproduce pycocotools ``area``/``toBbox`` (bbox ``[x, y, w, h]``).

>>> m = np.zeros((4, 5), dtype=np.uint8); m[1:3, 2:4] = 1
>>> rle = encode(m)
>>> rle
{'size': [4, 5], 'counts': '92203'}
>>> bool((decode(rle) == m).all()), area(rle), to_bbox(rle)
(True, 4, [2.0, 1.0, 2.0, 2.0])
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "area",
    "counts_from_string",
    "counts_to_string",
    "decode",
    "encode",
    "encode_uncompressed",
    "to_bbox",
    "uncompressed_counts",
]

RLE = dict[str, Any]


def uncompressed_counts(mask: np.ndarray) -> list[int]:
    """Run lengths of a binary ``(H, W)`` mask in column-major order, starting with zeros."""
    flat = np.asarray(mask).astype(bool).ravel(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def counts_to_string(counts: list[int]) -> str:
    """pycocotools ``rleToString``: compress uncompressed counts to the ASCII form."""
    out: list[str] = []
    for i, c in enumerate(counts):
        x = int(c) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5  # arithmetic shift, as C's signed long
            more = x != -1 if ch & 0x10 else x != 0
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def counts_from_string(s: str) -> list[int]:
    """pycocotools ``rleFrString``: decompress the ASCII form into run lengths."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = 0
        k = 0
        more = True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode_uncompressed(mask: np.ndarray) -> RLE:
    """Uncompressed RLE ``{"size": [H, W], "counts": [...]}`` of a binary ``(H, W)`` mask."""
    h, w = np.shape(mask)
    return {"size": [int(h), int(w)], "counts": uncompressed_counts(mask)}


def encode(mask: np.ndarray) -> RLE:
    """Compressed RLE ``{"size": [H, W], "counts": str}`` of a binary ``(H, W)`` mask."""
    rle = encode_uncompressed(mask)
    return {"size": rle["size"], "counts": counts_to_string(rle["counts"])}


def _counts(rle: RLE) -> list[int]:
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return counts_from_string(counts) if isinstance(counts, str) else [int(c) for c in counts]


def decode(rle: RLE) -> np.ndarray:
    """Binary ``(H, W)`` uint8 mask of a compressed or uncompressed RLE."""
    h, w = (int(v) for v in rle["size"])
    counts = np.asarray(_counts(rle), dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {counts.sum()}, expected {h}*{w}={h * w}")
    values = (np.arange(len(counts)) % 2).astype(np.uint8)
    return np.repeat(values, counts).reshape((h, w), order="F")


def area(rle: RLE) -> int:
    """Foreground pixel count (sum of the 1-runs)."""
    return int(sum(_counts(rle)[1::2]))


def to_bbox(rle: RLE) -> list[float]:
    """pycocotools ``toBbox``: ``[x, y, w, h]`` from the runs (``[0, 0, 0, 0]`` when empty).

    Like pycocotools, a foreground run that wraps from one column into the next widens the box
    to the full image height.
    """
    h = int(rle["size"][0])
    counts = np.asarray(_counts(rle), dtype=np.int64)
    m = (len(counts) // 2) * 2
    if m == 0:
        return [0.0, 0.0, 0.0, 0.0]
    j = np.arange(m)
    t = np.cumsum(counts[:m]) - j % 2  # first pixel of each 1-run, last pixel of each 1-run
    y = t % h
    x = (t - y) // h
    xs, xe = int(x.min()), int(x.max())
    ys, ye = int(y.min()), int(y.max())
    if np.any(x[0::2] < x[1::2]):
        ys, ye = 0, h - 1
    return [float(xs), float(ys), float(xe - xs + 1), float(ye - ys + 1)]
