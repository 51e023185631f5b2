"""The domain-gap figure: synthetic (ShapeNet-look) renders above real-look (Stanford Cars) crops.

Real photos are cropped square around their main car (the box of its instance mask, padded),
as the AIST preparation would, and all tiles are shown at 128×128 over white.

    python scripts/make_domain_gap_figure.py --out docs/figures/domain_gap.png
    python scripts/make_domain_gap_figure.py --root data --columns 8   # from an existing world
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from occaist.synth import generate_world

log = logging.getLogger("make_domain_gap_figure")
TILE = 128
LABEL_WIDTH = 110
CROP_PAD = 0.12  # fraction of the box side added around the main car


def synthetic_tiles(root: Path, n: int) -> list[Image.Image]:
    base = root / "shapenet_renders" / "renders" / "02958343"
    tiles = []
    for i, folder in enumerate(sorted(p for p in base.iterdir() if p.is_dir())[:n]):
        rgba = Image.open(folder / f"render_{i % 5}.png").convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        tiles.append(Image.alpha_composite(white, rgba).convert("RGB").resize((TILE, TILE)))
    return tiles


def real_tiles(root: Path, n: int) -> list[Image.Image]:
    base = root / "stanford_cars"
    coco = json.loads((base / "synthetic" / "instances.json").read_text())
    images = {im["id"]: im for im in coco["images"]}
    main = [a for a in coco["annotations"] if a["id"] % 100 == 1][:n]
    tiles = []
    for ann in main:
        image = Image.open(base / images[ann["image_id"]]["file_name"]).convert("RGB")
        x, y, w, h = ann["bbox"]
        side = min(max(w, h) * (1 + 2 * CROP_PAD), image.width, image.height)
        # Centre on the car, then slide the square inside the photo (no padding needed).
        left = float(np.clip(x + w / 2 - side / 2, 0, image.width - side))
        top = float(np.clip(y + h / 2 - side / 2, 0, image.height - side))
        box = tuple(round(v) for v in (left, top, left + side, top + side))
        tiles.append(image.crop(box).resize((TILE, TILE), Image.Resampling.BICUBIC))
    return tiles


def grid(rows: list[tuple[str, list[Image.Image]]]) -> Image.Image:
    columns = max(len(t) for _, t in rows)
    canvas = Image.new("RGB", (LABEL_WIDTH + columns * TILE, len(rows) * TILE), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, tiles) in enumerate(rows):
        draw.multiline_text((6, r * TILE + TILE // 2 - 12), label, fill=(0, 0, 0))
        for c, tile in enumerate(tiles):
            canvas.paste(tile, (LABEL_WIDTH + c * TILE, r * TILE))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="world root (default: tiny, temp)")
    parser.add_argument("--columns", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("docs/figures/domain_gap.png"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or generate_world(Path(tmp) / "world", "tiny", 0, progress=False)
        figure = grid(
            [
                ("synthetic\n(ShapeNet look,\nrender_i.png)", synthetic_tiles(root, args.columns)),
                ("real\n(Stanford Cars\nlook, cropped)", real_tiles(root, args.columns)),
            ]
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out, optimize=True)
    log.info("wrote %s (%d KB)", args.out, args.out.stat().st_size // 1024)


if __name__ == "__main__":
    main()
