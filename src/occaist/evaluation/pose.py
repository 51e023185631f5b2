"""The pose regressor's evaluation report: ADD / ADD-S accuracies per object, with a baseline.

Records (one per test sample, from ``PoseRegressor.test_step``): ``obj_id``, ``diameter``,
``symmetric``, the model's ``add``, ``adds`` (mm), ``rot_err_deg``, ``trans_err_mm``, the
breakdown ``add_true_rotation``, ``add_true_translation`` (ADD with the true rotation or the true
translation put in) and ``rot_err_half_turn_deg``, and the "mean training pose" baseline's
``baseline_add``, ``baseline_adds``. The ``pose_accuracy`` table has one row per method and
object (and an ``all`` row): the seed's figures, the fraction of samples whose ADD / ADD-S is
below ``fraction`` of the object's diameter, in percent; the model's rows add the median errors
and the breakdown (:func:`_breakdown`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from occaist.evaluation.base import Evaluator, Report

__all__ = ["PoseEvaluator", "pose_accuracy_rows"]

METHODS = {"model": "", "mean training pose": "baseline_"}


def pose_accuracy_rows(records: list[dict[str, Any]], fraction: float = 0.1) -> list[dict]:
    """Rows ``method, object, n, ADD, ADD-S`` (percent under ``fraction`` · diameter)."""
    rows = []
    objects = sorted({int(r["obj_id"]) for r in records})
    for method, prefix in METHODS.items():
        for obj in [*objects, "all"]:
            sel = [r for r in records if obj == "all" or int(r["obj_id"]) == obj]
            if not sel:
                continue
            diameter = np.array([r["diameter"] for r in sel])
            row = {"method": method, "object": obj, "n": len(sel)}
            for name in ("add", "adds"):
                err = np.array([r[f"{prefix}{name}"] for r in sel])
                row["ADD" if name == "add" else "ADD-S"] = round(
                    100.0 * float(np.mean(err < fraction * diameter)), 1
                )
            if method == "model":
                row["rot_err_deg"] = round(float(np.median([r["rot_err_deg"] for r in sel])), 2)
                row["trans_err_mm"] = round(float(np.median([r["trans_err_mm"] for r in sel])), 2)
                row.update(_breakdown(sel, diameter, fraction))
            rows.append(row)
    return rows


def _breakdown(sel: list[dict[str, Any]], diameter: np.ndarray, fraction: float) -> dict:
    """Which part of the pose fails: ADD (%) with the true rotation put in ("ADD true R": only
    the translation is the model's), with the true translation put in ("ADD true t"), the median
    rotation error up to a half turn about the model's y axis and the share (%) of predictions
    more than 150° off (mostly such half turns). Empty for records without these errors."""
    if "add_true_rotation" not in sel[0]:
        return {}
    out = {}
    for key, column in (
        ("add_true_rotation", "ADD true R"),
        ("add_true_translation", "ADD true t"),
    ):
        err = np.array([r[key] for r in sel])
        out[column] = round(100.0 * float(np.mean(err < fraction * diameter)), 1)
    half = np.array([r["rot_err_half_turn_deg"] for r in sel])
    out["rot_err_half_turn_deg"] = round(float(np.median(half)), 2)
    rot = np.array([r["rot_err_deg"] for r in sel])
    out["over_150deg"] = round(100.0 * float(np.mean(rot > 150.0)), 1)
    return out


class PoseEvaluator(Evaluator):
    """ADD / ADD-S table (model and mean-training-pose baseline) and per-sample errors."""

    unique_key = "sample"

    def __init__(self, fraction: float = 0.1) -> None:
        super().__init__()
        self.fraction = fraction

    def evaluate(self, records: list[dict[str, Any]], context: dict[str, Any]) -> Report:
        rows = pose_accuracy_rows(records, self.fraction)
        summary = {
            "split": context.get("split"),
            "root": context.get("root"),
            "samples": len(records),
            "fraction": self.fraction,
            **{f"test/{k}": v for k, v in context.get("metrics", {}).items()},
        }
        return Report(
            summary=summary, tables={"pose_accuracy": rows}, samples={"pose_samples": records}
        )
