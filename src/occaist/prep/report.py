"""Aggregate files of a complete preparation: manifest, rejections, report and figures.

Written from the committed per-image records in listing order, so their bytes depend only on
the inputs and the settings (not on workers, shards or interruptions).

* ``manifest.csv`` -- one row per output segment (source, instance, box, score, label, mask area,
  car-to-frame ratio before / sampled / after, padding, split; model id and true pose for
  synthetic sources).
* ``rejections.csv`` -- one row per rejected candidate with the rule that rejected it (and one
  per unusable or grayscale image, ``instance`` empty, ``stage`` = ``input`` / ``segmentation``).
* ``report.json`` -- counts per stage, as the thesis reports 16,185 images -> 17,398
  segmentations -> 14,092 after occlusion filtering and cropping detection.
* ``figures/ratio_before.png`` (Fig. 3.10) and ``figures/ratio_after.png`` (Fig. 3.14):
  car-to-frame ratio histograms of real vs synthetic before and after normalisation.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from occaist.data.image_files import CarImageRecord
from occaist.prep.filters import CLEANING_STAGE
from occaist.prep.records import (
    MANIFEST_COLUMNS,
    OUTPUT_SPLITS,
    REJECTION_COLUMNS,
    PrepSettings,
    count_rules,
    iter_records,
    write_csv,
)
from occaist.utils.io import atomic_path, write_json_atomic
from occaist.utils.logging import get_logger

log = get_logger(__name__)

#: Histogram bins and the quantile of the pooled ratios that sets their upper end (the real
#: ratios have a long tail; the figure shows the bulk).
HIST_BINS = 50
HIST_UPPER_QUANTILE = 0.99


def _manifest_row(record: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
    extra = c.get("extra") or {}
    pose = {k: v for k, v in extra.items() if k != "model_id"}
    return {
        "id": c["id"],
        "split": c["split"],
        "source_image": record["source"],
        "source_key": record["key"],
        "instance": c["instance"],
        "box_x0": c["box"][0],
        "box_y0": c["box"][1],
        "box_x1": c["box"][2],
        "box_y1": c["box"][3],
        "score": c["score"],
        "label": c["label"],
        "mask_area": c["mask_area"],
        "ratio_before": c.get("ratio_before"),
        "ratio_sampled": c["ratio_sampled"],
        "ratio_after": c["ratio_after"],
        "ratio_reached": c["ratio_reached"],
        "pad_top": c["pad"][0],
        "pad_bottom": c["pad"][1],
        "pad_left": c["pad"][2],
        "pad_right": c["pad"][3],
        "model_id": extra.get("model_id"),
        "true_pose": pose or None,
    }


def _rejection_row(record: dict[str, Any], verdict: dict[str, Any], c: dict | None) -> dict:
    return {
        "source_image": record["source"],
        "source_key": record["key"],
        "instance": None if c is None else c["instance"],
        "stage": verdict["stage"],
        "rule": verdict["rule"],
        "value": verdict["value"],
        "threshold": verdict["threshold"],
        "label": None if c is None else c["label"],
        "score": None if c is None else c["score"],
    }


def _histogram_figure(path: Path, real: Sequence[float], synthetic: Sequence[float], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pooled = np.asarray([*real, *synthetic], dtype=np.float64)
    pooled = pooled[np.isfinite(pooled)]
    upper = float(np.quantile(pooled, HIST_UPPER_QUANTILE)) if pooled.size else 1.0
    bins = np.linspace(0.0, max(upper, 1e-6), HIST_BINS + 1)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for values, name in ((synthetic, "synthetic (train renders)"), (real, "real segmentations")):
        v = np.clip(np.asarray(values, dtype=np.float64), 0.0, bins[-1])
        if v.size:
            ax.hist(v, bins=bins, density=True, alpha=0.55, label=f"{name}, n={v.size}")
    ax.set_xlabel("car-to-frame ratio  #(alpha>0) / #(alpha=0)  (last bin: everything above)")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def aggregate(
    out: Path, listing: Sequence[CarImageRecord], fit: dict[str, Any], settings: PrepSettings
) -> dict[str, Any]:
    """Write the aggregate files of a complete output; returns the report."""
    manifest: list[dict[str, Any]] = []
    rejections: list[dict[str, Any]] = []
    unusable: Counter = Counter()
    conversions: Counter = Counter()
    rejected = count_rules()
    images_grayscale = images_segmented = detected = after_seg = 0
    unreachable = 0
    ratios_before: list[float] = []
    for record in iter_records(out, listing):
        conversions.update(record.get("notes", []))
        if record["status"] == "unusable":
            unusable[record["reason"]] += 1
            verdict = {
                "stage": "input",
                "rule": record["reason"],
                "value": None,
                "threshold": None,
            }
            rejections.append(_rejection_row(record, verdict, None))
            continue
        if record["status"] == "grayscale":
            images_grayscale += 1
            rejected["grayscale"] += 1
            rejections.append(_rejection_row(record, record["verdict"], None))
            continue
        images_segmented += 1
        for c in record["candidates"]:
            detected += 1
            if "ratio_before" in c:
                after_seg += 1
                ratios_before.append(c["ratio_before"])
            if c["decision"] == "rejected":
                rejected[c["verdict"]["rule"]] += 1
                rejections.append(_rejection_row(record, c["verdict"], c))
            else:
                manifest.append(_manifest_row(record, c))
                unreachable += not c["ratio_reached"]
    split_counts = Counter(row["split"] for row in manifest)
    ratios_after = [row["ratio_after"] for row in manifest]
    cleaning_rejected = sum(
        1 for r in rejections if r["stage"] == CLEANING_STAGE and r["instance"] is not None
    )
    report = {
        "complete": True,
        "stages": {
            "images_listed": len(listing),
            "images_usable": len(listing) - sum(unusable.values()),
            "images_segmented": images_segmented,
            "candidates_detected": detected,
            "after_segmentation_filters": after_seg,
            "after_cleaning": after_seg - cleaning_rejected,
            "accepted": len(manifest),
        },
        "thesis_counts": {
            "images_listed": 16185,
            "after_segmentation_filters": 17398,
            "after_cleaning": 14092,
        },
        "images_unusable_by_reason": dict(sorted(unusable.items())),
        "input_conversions": dict(sorted(conversions.items())),
        "images_grayscale": images_grayscale,
        "rejected_by_rule": dict(rejected),
        "splits": {name: split_counts.get(name, 0) for name in OUTPUT_SPLITS},
        "ratio_unreachable": unreachable,
        "ratio_fit": {k: fit[k] for k in ("mean", "std", "count", "split")},
        "ratio_medians": {
            "synthetic": _median(fit["ratios"]),
            "real_before": _median(ratios_before),
            "real_after": _median(ratios_after),
        },
        "settings": {
            "filters": asdict(settings.filters),
            "normalize": asdict(settings.normalize),
            "seed": settings.seed,
            "train_fraction": settings.train_fraction,
        },
    }
    write_csv(out / "manifest.csv", MANIFEST_COLUMNS, manifest)
    write_csv(out / "rejections.csv", REJECTION_COLUMNS, rejections)
    write_json_atomic(out / "report.json", report)
    if settings.figures:
        _histogram_figure(
            out / "figures" / "ratio_before.png",
            ratios_before,
            fit["ratios"],
            "Car-to-frame ratio before normalisation (thesis Fig. 3.10)",
        )
        _histogram_figure(
            out / "figures" / "ratio_after.png",
            ratios_after,
            fit["ratios"],
            "Car-to-frame ratio after filtering and normalisation (thesis Fig. 3.14)",
        )
    log.info(
        "prep complete: %d images -> %d segmentations -> %d after cleaning -> %d written",
        len(listing), after_seg, report["stages"]["after_cleaning"], len(manifest),
    )  # fmt: skip
    return report


def _median(values: Sequence[float]) -> float | None:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(np.median(arr)) if arr.size else None
