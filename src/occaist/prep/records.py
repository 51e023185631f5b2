"""What a preparation run records: its settings, per-image commit records, the output tables.

Shared by :mod:`occaist.prep.pipeline` (which writes the records) and :mod:`occaist.prep.report`
(which aggregates them into ``manifest.csv``, ``rejections.csv`` and ``report.json``), so neither
imports the other's internals.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from occaist.data.image_files import CarImageRecord
from occaist.evaluation.writers import csv_text
from occaist.prep.filters import FilterConfig, rule_names
from occaist.utils.io import write_text_atomic

STATE_DIR = ".prep"
OUTPUT_SPLITS = ("train", "test")
MANIFEST_COLUMNS = [
    "id", "split", "source_image", "source_key", "instance",
    "box_x0", "box_y0", "box_x1", "box_y1", "score", "label", "mask_area",
    "ratio_before", "ratio_sampled", "ratio_after", "ratio_reached",
    "pad_top", "pad_bottom", "pad_left", "pad_right", "model_id", "true_pose",
]  # fmt: skip
REJECTION_COLUMNS = [
    "source_image", "source_key", "instance", "stage", "rule", "value", "threshold",
    "label", "score",
]  # fmt: skip


@dataclass
class RatioFitSettings:
    """Where the synthetic ratio fit comes from (thesis Fig. 3.10).

    ``renders_root``: the synthetic ``shapenet_renders`` folder; ``split``: the thesis uses the
    training set; ``max_images``: cap for quick runs; ``file``: reuse a saved ``ratio_fit.json``
    instead (cluster nodes without the renders); ``max_draws``: redraws of a non-positive ratio.
    """

    renders_root: str | None = None
    split: str = "train"
    max_images: int | None = None
    file: str | None = None
    max_draws: int = 100


@dataclass
class NormalizeSettings:
    """Output side length (the renders' 128) and the colour correction switch (thesis 4.1.1.1)."""

    size: int = 128
    color_correct: bool = True


@dataclass
class PrepSettings:
    """Everything a preparation run reads from its config (``conf/prep/prep.yaml``).

    ``segmenter`` is a ``_target_`` node (``conf/prep/segmenter/*.yaml``) built in each worker.
    ``workers``, ``shard`` and ``progress`` do not change the outputs; the rest does and is
    pinned in ``.prep/settings.json`` (a second run with different values is refused).
    """

    data_root: str = "data/stanford_cars"
    out_dir: str = "data/prepared/real"
    splits: list[str] = field(default_factory=lambda: ["train", "test"])
    min_image_side: int = 32
    max_images: int | None = None
    seed: int = 0
    train_fraction: float = 0.8
    batch_size: int = 4
    workers: int = 1
    mp_context: str = "spawn"
    shard: str = "0/1"
    progress: bool = True
    figures: bool = True
    filters: FilterConfig = field(default_factory=FilterConfig)
    normalize: NormalizeSettings = field(default_factory=NormalizeSettings)
    ratio_fit: RatioFitSettings = field(default_factory=RatioFitSettings)
    segmenter: Any = None


#: Settings that do not influence any output byte.
RUNTIME_ONLY = ("out_dir", "workers", "mp_context", "shard", "progress", "max_images")


def flat_key(key: str) -> str:
    """A file-name-safe key (``train/00001`` -> ``cars_train_00001``)."""
    split, stem = key.split("/", 1)
    return f"cars_{split}_{stem}".replace("/", "_")


def record_path(out: Path, key: str) -> Path:
    """Where the commit record of ``key`` lives (256 sub-folders keep directories small)."""
    bucket = hashlib.sha1(key.encode()).hexdigest()[:2]
    return out / STATE_DIR / "records" / bucket / f"{flat_key(key)}.json"


def iter_records(out: Path, listing: Sequence[CarImageRecord]) -> Iterator[dict[str, Any]]:
    """The committed records in listing order."""
    for rec in listing:
        yield json.loads(record_path(out, rec.key).read_text(encoding="utf-8"))


def count_rules() -> Counter:
    """A zeroed counter over every rule name (so the report lists rules that rejected nothing)."""
    return Counter(dict.fromkeys(rule_names(), 0))


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """A CSV with fixed columns and float formatting (stable bytes), written atomically."""
    formatted = [{k: _fmt(row.get(k)) for k in columns} for row in rows]
    write_text_atomic(path, csv_text(formatted, list(columns)))


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.6f}" if math.isfinite(v) else str(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)
