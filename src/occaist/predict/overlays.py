"""Pictures of predictions drawn on the input image (numpy + Pillow; no torch).

Colours: visible keypoints green, occluded (predicted) keypoints red, skeleton white, box
yellow; silhouettes are tinted cyan; the pose's box outline orange.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from occaist.data.keypoints import SKELETON

VISIBLE_COLOUR = (40, 220, 60)
OCCLUDED_COLOUR = (235, 40, 40)
SKELETON_COLOUR = (245, 245, 245)
BOX_COLOUR = (250, 210, 20)
SILHOUETTE_COLOUR = (0, 200, 255)
POSE_COLOUR = (255, 140, 0)


def rgb_of(rgba: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` of an RGBA image composited on white (transparent pixels become white)."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return rgb.round().astype(np.uint8)


def _line_width(size: tuple[int, int]) -> int:
    return max(1, round(max(size) / 250))


def draw_keypoint_detections(
    rgba: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    keypoints: np.ndarray,
    visible: np.ndarray,
    skeleton: Sequence[tuple[int, int]] = SKELETON,
) -> np.ndarray:
    """Boxes ``(n, 4)`` xyxy with their score, skeletons, and keypoints ``(n, K, 2)`` coloured by
    ``visible`` ``(n, K)`` (bool) on the image; returns ``(H, W, 3)`` uint8."""
    canvas = Image.fromarray(rgb_of(rgba))
    draw = ImageDraw.Draw(canvas)
    width = _line_width(canvas.size)
    radius = 1.5 * width + 1
    for box, score, points, vis in zip(boxes, scores, keypoints, visible):
        x1, y1, x2, y2 = (float(c) for c in box)
        draw.rectangle((x1, y1, x2, y2), outline=BOX_COLOUR, width=width)
        draw.text((x1 + 2, max(0.0, y1 - 11)), f"{float(score):.2f}", fill=BOX_COLOUR)
        for a, b in skeleton:
            draw.line([tuple(points[a]), tuple(points[b])], fill=SKELETON_COLOUR, width=width)
        for (x, y), v in zip(points, vis):
            colour = VISIBLE_COLOUR if v else OCCLUDED_COLOUR
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
    return np.asarray(canvas)


def tint(rgba: np.ndarray, mask: np.ndarray, colour=SILHOUETTE_COLOUR, strength: float = 0.55):
    """Blend ``colour`` into the image where ``mask`` ``(H, W)`` in [0, 1] is high, and outline
    the ``mask > 0.5`` region; returns ``(H, W, 3)`` uint8."""
    rgb = rgb_of(rgba).astype(np.float32)
    weight = strength * np.clip(mask, 0.0, 1.0)[..., None]
    out = rgb * (1.0 - weight) + np.asarray(colour, np.float32) * weight
    inside = mask > 0.5
    edge = inside & ~_eroded(inside)
    out[edge] = colour
    return out.round().astype(np.uint8)


def _eroded(mask: np.ndarray) -> np.ndarray:
    """4-neighbour binary erosion (pixels outside the image count as outside the mask)."""
    padded = np.pad(mask, 1, constant_values=False)
    return (
        padded[1:-1, 1:-1]
        & padded[:-2, 1:-1]
        & padded[2:, 1:-1]
        & padded[1:-1, :-2]
        & padded[1:-1, 2:]
    )


def side_by_side(images: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """RGB(A) images of one height next to each other on white, ``(H, ΣW + gaps, 3)``."""
    height = max(im.shape[0] for im in images)
    tiles = [rgb_of(im) if im.shape[-1] == 4 else im for im in images]
    width = sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1)
    out = np.full((height, width, 3), 255, np.uint8)
    x = 0
    for tile in tiles:
        out[: tile.shape[0], x : x + tile.shape[1]] = tile
        x += tile.shape[1] + gap
    return out


def draw_polylines(
    image: np.ndarray, lines: Sequence[np.ndarray], colour=POSE_COLOUR, width: int | None = None
) -> np.ndarray:
    """Polylines (each ``(M, 2)`` pixels) on an ``(H, W, 3)`` image; returns a new array."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    width = width or _line_width(canvas.size)
    for line in lines:
        draw.line([tuple(map(float, p)) for p in line], fill=colour, width=width)
    return np.asarray(canvas)
