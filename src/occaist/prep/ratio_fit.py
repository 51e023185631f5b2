"""The car-to-frame ratio distribution of the synthetic training renders (thesis Fig. 3.10).

The thesis fits a normal distribution ``N(μ, σ)`` to the ratios
``#(alpha > 0) / #(alpha == 0)`` of the synthetic *training* renders and pads every real
segmentation to a ratio drawn from it. The fit (and the ratios, for the figures) is saved with
the prepared output as ``ratio_fit.json`` so a shard or a rerun reuses exactly the same numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from occaist.data.rgba import car_to_frame_ratio
from occaist.utils.io import write_json_atomic
from occaist.utils.logging import get_logger

log = get_logger(__name__)

#: ShapeNet synset of cars (``occaist.data.shapenet_renders.CAR_SYNSET``, not imported: that
#: module pulls in Lightning, which preparation workers do not need).
CAR_SYNSET = "02958343"


def render_ratio(path: Path) -> float:
    """Car-to-frame ratio of one RGBA render (alpha from the PNG; opaque files give ``inf``)."""
    with Image.open(path) as im:
        rgba = np.asarray(im.convert("RGBA"))
    return car_to_frame_ratio(rgba[..., 3])


def fit_ratio_distribution(
    root: str | Path,
    split: str = "train",
    synset: str = CAR_SYNSET,
    max_images: int | None = None,
) -> dict[str, Any]:
    """Fit ``N(μ, σ)`` to the car-to-frame ratios of the synthetic renders of ``split``.

    Args:
        root: the ``shapenet_renders`` folder (DPC layout, listed by
            :func:`occaist.data.shapenet_renders.split_render_files`: every view of every model
            in the split file).
        split: which split file to read (the thesis: training set).
        synset: category folder.
        max_images: use only the first renders (quick runs); None uses all.

    Returns:
        ``{"mean", "std", "count", "split", "source", "ratios"}`` (``std`` is the maximum
        likelihood estimate, ``ratios`` in render order).
    """
    from occaist.data.shapenet_renders import split_render_files

    root = Path(root)
    paths = split_render_files(root, split, synset, num_views=None)
    if max_images is not None:
        paths = paths[:max_images]
    ratios = [render_ratio(p) for p in paths]
    ratios = [r for r in ratios if math.isfinite(r)]
    if len(ratios) < 2:
        raise ValueError(f"need at least two renders with a background under {root}, got {paths}")
    arr = np.asarray(ratios, dtype=np.float64)
    fit = {
        "mean": float(arr.mean()),
        "std": float(arr.std()),
        "count": len(ratios),
        "split": split,
        "source": str(root),
        "ratios": [float(r) for r in arr],
    }
    log.info(
        "car-to-frame ratio fit on %d %s renders: N(%.4f, %.4f)",
        len(ratios),
        split,
        fit["mean"],
        fit["std"],
    )
    return fit


def load_or_fit(
    out_file: Path,
    root: str | Path | None,
    split: str,
    max_images: int | None,
    fit_file: str | None = None,
) -> dict[str, Any]:
    """The fit saved with the output if present, else ``fit_file`` if given, else a new fit.

    Writes ``out_file`` atomically, so concurrent shards agree on the bytes.
    """
    if out_file.is_file():
        return json.loads(out_file.read_text(encoding="utf-8"))
    if fit_file is not None:
        fit = json.loads(Path(fit_file).read_text(encoding="utf-8"))
    else:
        if root is None:
            raise ValueError("ratio_fit.renders_root or ratio_fit.file must be set")
        fit = fit_ratio_distribution(root, split, max_images=max_images)
    write_json_atomic(out_file, fit)
    return fit


def sample_ratio(fit: dict[str, Any], rng: np.random.Generator, max_draws: int) -> float:
    """Draw ``r ~ N(μ, σ)`` redrawn until positive (a ratio is positive); after ``max_draws``
    non-positive draws the mean is used."""
    for _ in range(max_draws):
        r = float(rng.normal(fit["mean"], fit["std"]))
        if r > 0:
            return r
    return float(fit["mean"])
