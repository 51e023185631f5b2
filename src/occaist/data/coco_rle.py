"""COCO run-length encoding of binary masks, through pycocotools' mask API.

A thin layer over ``pycocotools.mask`` (``encode``, ``decode``, ``area``, ``toBbox``,
``frPyObjects``) that takes and returns JSON-ready dicts:

- Masks are ``(H, W)`` arrays; runs are taken in **column-major** (Fortran) order and alternate
  0-runs and 1-runs, starting with a (possibly empty) 0-run.
- Uncompressed RLE: ``{"size": [H, W], "counts": [int, ...]}``.
- Compressed RLE: ``{"size": [H, W], "counts": str}`` (pycocotools' string form, decoded from
  bytes so that it can be written to JSON).

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
from pycocotools import mask as mask_api

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
    return counts_from_string(encode(mask)["counts"])


def encode_uncompressed(mask: np.ndarray) -> RLE:
    """Uncompressed RLE ``{"size": [H, W], "counts": [...]}`` of a binary ``(H, W)`` mask."""
    h, w = np.shape(mask)
    return {"size": [int(h), int(w)], "counts": uncompressed_counts(mask)}


def _plain(rle: dict[str, Any]) -> RLE:
    counts = rle["counts"]
    counts = counts.decode("ascii") if isinstance(counts, bytes) else counts
    return {"size": [int(v) for v in rle["size"]], "counts": counts}


def _native(rle: RLE) -> dict[str, Any]:
    """The pycocotools object of a compressed or uncompressed RLE dict."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        total = int(np.sum(counts))
        if total != h * w:
            raise ValueError(f"RLE counts sum to {total}, expected {h}*{w}={h * w}")
        return mask_api.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    return {
        "size": [h, w],
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }


def encode(mask: np.ndarray) -> RLE:
    """Compressed RLE ``{"size": [H, W], "counts": str}`` of a binary ``(H, W)`` mask."""
    binary = np.asfortranarray((np.asarray(mask) != 0).astype(np.uint8))
    return _plain(mask_api.encode(binary))


def counts_to_string(counts: list[int]) -> str:
    """pycocotools' compressed string of uncompressed run lengths (any image size whose pixel
    count is their sum: a ``1 x sum`` image)."""
    total = int(sum(counts))
    return _plain(mask_api.frPyObjects({"size": [1, total], "counts": list(counts)}, 1, total))[
        "counts"
    ]


def counts_from_string(s: str) -> list[int]:
    """Run lengths of a compressed counts string (inverse of :func:`counts_to_string`)."""
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:  # pycocotools' rleFrString; the mask API has no public inverse of the counts
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(int(x))
    return counts


def decode(rle: RLE) -> np.ndarray:
    """Binary ``(H, W)`` uint8 mask of a compressed or uncompressed RLE."""
    return np.ascontiguousarray(mask_api.decode(_native(rle)))


def area(rle: RLE) -> int:
    """Foreground pixel count."""
    return int(mask_api.area(_native(rle)))


def to_bbox(rle: RLE) -> list[float]:
    """pycocotools ``toBbox``: ``[x, y, w, h]`` (``[0, 0, 0, 0]`` when empty)."""
    return [float(v) for v in mask_api.toBbox(_native(rle))]
