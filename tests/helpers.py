"""Helpers for tests: compose configs in-process, as users' runs do; tiny real-domain data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from occaist.utils.compose import composed

__all__ = ["TINY_AIST", "composed", "write_segments"]

#: Overrides that make an AIST experiment a seconds-long run (narrow nets, 32 px, random Phi).
TINY_AIST = [
    "model.generator.base_channels=4",
    "model.generator.num_blocks=1",
    "model.discriminator.base_channels=4",
    "model.res_weights=null",
    "data.image_size=32",
    "data.num_workers=0",
    "model.measure_epochs=2",
]


def write_segments(root: Path, count: int = 4) -> Path:
    """``count`` RGBA segments per split in the layout ``python -m occaist.prep`` writes."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rgba = rng.integers(0, 255, (40, 40, 4), dtype=np.uint8)
            rgba[..., 3] = 0
            rgba[8:32, 6:34, 3] = 255
            Image.fromarray(rgba, "RGBA").save(root / split / f"seg_{i}.png")
    return root
