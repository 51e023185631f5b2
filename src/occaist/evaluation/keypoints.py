"""Keypoint evaluation of Occlusion-Net: PCK tables with baselines, COCO keypoint AP, figures.

Records (one plain dict per car instance, from the module's ``test_step``):

- ``sample``: a unique id; ``keypoints``: ``(K, 3)`` ground truth in pixels with COCO ``v``;
  ``box``: the ground-truth box ``(x0, y0, x1, y1)``, used only as the PCK normaliser
  ``L = max(w, h)`` and the OKS area;
- one ``(K, 2)`` pixel prediction per predictor (``heatmap``: the graph's input, ``kgnn2d``,
  ``kgnn3d``, and with the fitted camera ``kgnn3d_fit``: the 3D-KGNN's fit without its learned
  node weights, a diagnostic of what learning them adds), ``confidence`` ``(K,)`` the input
  nodes' confidences, ``visibility`` ``(K,)`` the predicted probability of being visible;
- optionally ``noise``: ``{sigma: {predictor: (K, 2)}}`` for the noise study.

The report holds, for PCK@alpha on visible / occluded / all evaluated keypoints and by number of
occluded keypoints (the paper's protocol), the model's rows beside two baselines computed here
from the same inputs: the input heatmap keypoints themselves and the least-squares fit of the
shape basis and a weak-perspective camera to them (``occaist.geometry.shape_fit``, weighted by
the input confidences, Cauchy-reweighted against gross errors). COCO keypoint AP (pycocotools,
14 car OKS sigmas, ``occaist.metrics.oks``) is a column of the same table. Files:
``occnet_eval`` (table), ``occnet_noise`` (noise study), ``pck_curves`` and
``pck_curves_occ<n>`` (figures), ``occnet_samples`` (per instance).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from occaist.data.keypoints import OCCLUDED, VISIBLE
from occaist.evaluation.base import Evaluator, Report
from occaist.geometry.shape_fit import robust_fit_shape_basis
from occaist.metrics.oks import CAR_OKS_SIGMAS, coco_keypoint_ap
from occaist.metrics.pck import PCK, pck_curves_figure

__all__ = ["KeypointEvaluator", "keypoint_records"]

#: Row label of each predictor key (the paper's names).
DEFAULT_LABELS = {
    "heatmap": "heatmap (Keypoint R-CNN)",
    "lsq_fit": "least-squares shape fit",
    "kgnn2d": "2D-KGNN",
    "kgnn3d": "3D-KGNN",
    "kgnn3d_fit": "3D-KGNN, learned weights off",
}


def keypoint_records(
    ids: Sequence[str],
    keypoints: Any,
    boxes: Any,
    rois: Any,
    predictions: Mapping[str, Any],
    confidence: Any,
    visibility: Any,
    noise: Sequence[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The records of the module docstring from tensors over ``N`` instances: ``keypoints``
    ``(N, K, 3)``, ``boxes`` and ``rois`` ``(N, 4)``, ``predictions`` ``{key: (N, K, 2)}``,
    ``confidence`` and ``visibility`` ``(N, K)``, ``noise`` one dict per instance."""
    records = []
    for i, sample in enumerate(ids):
        rec = {
            "sample": sample,
            "keypoints": keypoints[i].tolist(),
            "box": boxes[i].tolist(),
            "roi": rois[i].tolist(),
            "confidence": confidence[i].tolist(),
            "visibility": visibility[i].tolist(),
            **{key: value[i].tolist() for key, value in predictions.items()},
        }
        if noise is not None:
            rec["noise"] = noise[i]
        records.append(rec)
    return records


def _pct(value: float) -> float:
    return float("nan") if value is None or math.isnan(value) else round(100.0 * value, 2)


class KeypointEvaluator(Evaluator):
    """PCK / OKS report of Occlusion-Net's predictors and their baselines (module docstring).

    Args:
        keypoints: indices evaluated (the paper: 12 of 14, from ``occaist.data.keypoints``).
        alpha: the PCK threshold of the tables (paper 0.1).
        labels: row label per predictor key (defaults: :data:`DEFAULT_LABELS`).
        shape_basis: ``(mean (K, 3), basis (B, K, 3), sigma (B,))`` for the least-squares
            baseline (``None``: no such row).
        fit_iterations, fit_ridge: of :func:`~occaist.geometry.shape_fit.fit_shape_basis`.
        oks_sigmas: per-keypoint OKS sigmas of the COCO AP column.
        visibility_threshold: a node is predicted visible above this probability.
    """

    unique_key = "sample"

    def __init__(
        self,
        keypoints: Sequence[int],
        alpha: float = 0.1,
        labels: Mapping[str, str] | None = None,
        shape_basis: tuple[Any, Any, Any] | None = None,
        fit_iterations: int = 50,
        fit_ridge: float = 1e-2,
        oks_sigmas: Sequence[float] = CAR_OKS_SIGMAS,
        visibility_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.keypoints = list(keypoints)
        self.alpha = float(alpha)
        self.labels = {**DEFAULT_LABELS, **(labels or {})}
        self.shape_basis = shape_basis
        self.fit_iterations = fit_iterations
        self.fit_ridge = fit_ridge
        self.oks_sigmas = tuple(oks_sigmas)
        self.visibility_threshold = visibility_threshold

    def least_squares_fit(
        self, points: np.ndarray, confidence: np.ndarray, rois: np.ndarray
    ) -> np.ndarray:
        """The baseline: the shape basis fitted to the input points, weighted by confidence,
        robust to gross errors (Cauchy IRLS at 3 % of the ROI's larger side)."""
        mean, basis, sigma = (np.asarray(a, dtype=np.float64) for a in self.shape_basis)
        weights = np.clip(confidence, 0.0, None) + 1e-6
        size = (rois[:, 2:] - rois[:, :2]).max(1)
        fit = robust_fit_shape_basis(
            points, weights, mean, basis, sigma, size,
            iterations=self.fit_iterations, ridge=self.fit_ridge,
        )  # fmt: skip
        return fit["projection"]

    def _pck(self, pred: np.ndarray, gt: np.ndarray, boxes: np.ndarray) -> PCK:
        metric = PCK(alpha=self.alpha, keypoints=self.keypoints)
        metric.update(
            torch.as_tensor(pred), torch.as_tensor(gt[..., :2]), torch.as_tensor(gt[..., 2]),
            torch.as_tensor(boxes),
        )  # fmt: skip
        return metric

    def _oks(self, preds: np.ndarray, gt: np.ndarray, boxes: np.ndarray) -> float:
        names = [str(k) for k in range(gt.shape[1])]
        images, anns, dets = [], [], []
        for i, (kps, box, pred) in enumerate(zip(gt, boxes, preds, strict=True)):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            flat = [[float(x), float(y), int(v)] if v > 0 else [0.0, 0.0, 0] for x, y, v in kps]
            images.append({"id": i + 1, "width": 1, "height": 1, "file_name": str(i)})
            anns.append({
                "id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h,
                "num_keypoints": int((kps[:, 2] > 0).sum()),
                "keypoints": [v for p in flat for v in p],
            })  # fmt: skip
            dets.append({
                "image_id": i + 1, "category_id": 1, "score": 1.0,
                "keypoints": [float(v) for p in pred for v in (p[0], p[1], 1.0)],
            })  # fmt: skip
        gt_coco = {
            "images": images,
            "annotations": anns,
            "categories": [{"id": 1, "name": "car", "keypoints": names, "skeleton": []}],
        }
        return coco_keypoint_ap(gt_coco, dets, self.oks_sigmas)["AP"]

    def evaluate(self, records: list[dict[str, Any]], context: dict[str, Any]) -> Report:
        report = Report(summary={"split": context.get("split"), "instances": len(records)})
        if not records:
            return report
        gt = np.asarray([r["keypoints"] for r in records], dtype=np.float64)
        boxes = np.asarray([r["box"] for r in records], dtype=np.float64)
        preds = {
            key: np.asarray([r[key] for r in records], dtype=np.float64)
            for key in ("heatmap", "kgnn2d", "kgnn3d", "kgnn3d_fit")
            if key in records[0]
        }
        if self.shape_basis is not None and "heatmap" in preds:
            conf = np.asarray([r["confidence"] for r in records], dtype=np.float64)
            rois = np.asarray([r.get("roi", r["box"]) for r in records], dtype=np.float64)
            preds = {
                "heatmap": preds["heatmap"],
                "lsq_fit": self.least_squares_fit(preds["heatmap"], conf, rois),
                **{k: v for k, v in preds.items() if k != "heatmap"},
            }
        metrics = {key: self._pck(pred, gt, boxes) for key, pred in preds.items()}
        results = {
            key: {k: float(v) for k, v in m.compute().items()} for key, m in metrics.items()
        }
        buckets = [
            n for n in range(1, len(self.keypoints) + 1)
            if not math.isnan(results[next(iter(results))].get(f"all_{n}", math.nan))
        ]  # fmt: skip
        rows = []
        for key, res in results.items():
            row = {
                "method": self.labels[key],
                "visible": _pct(res["visible"]),
                "occluded": _pct(res["occluded"]),
                "all": _pct(res["all"]),
                **{f"occ={n}": _pct(res[f"all_{n}"]) for n in buckets},
                "coco_AP": _pct(self._oks(preds[key], gt, boxes)),
            }
            rows.append(row)
            for col in ("visible", "occluded", "all", "coco_AP"):
                report.summary[f"{col}_{key}"] = row[col]
        report.tables["occnet_eval"] = rows
        counts = (gt[:, self.keypoints, 2] == OCCLUDED).sum(1)
        report.summary["instances_by_occluded"] = {
            str(n): int((counts == n).sum()) for n in range(len(self.keypoints) + 1)
        }
        report.summary["alpha"] = self.alpha
        self._visibility(records, gt, report)
        self._noise(records, gt, boxes, report)
        self._figures(metrics, buckets, report)
        report.samples["occnet_samples"] = self._samples(records, preds, gt, boxes)
        return report

    def _visibility(self, records: list[dict], gt: np.ndarray, report: Report) -> None:
        if "visibility" not in records[0]:
            return
        vis = np.asarray([r["visibility"] for r in records])[:, self.keypoints]
        labels = gt[:, self.keypoints, 2]
        mask = labels > 0
        acc = (
            float(((vis > self.visibility_threshold) == (labels == VISIBLE))[mask].mean())
            if mask.any()
            else math.nan
        )
        report.summary["visibility_accuracy"] = _pct(acc)

    def _noise(self, records: list[dict], gt: np.ndarray, boxes: np.ndarray, report: Report):
        if "noise" not in records[0]:
            return
        rows = []
        for sigma in records[0]["noise"]:
            row: dict[str, Any] = {"sigma": float(sigma)}
            for key in records[0]["noise"][sigma]:
                pred = np.asarray([r["noise"][sigma][key] for r in records], dtype=np.float64)
                res = self._pck(pred, gt, boxes).compute()
                row[self.labels[key]] = _pct(float(res["occluded"]))
                row[f"{self.labels[key]} (all)"] = _pct(float(res["all"]))
            rows.append(row)
        report.tables["occnet_noise"] = rows

    def _figures(self, metrics: dict[str, PCK], buckets: list[int], report: Report) -> None:
        curves = {key: m.curves() for key, m in metrics.items()}
        alphas = next(iter(metrics.values())).alphas
        report.figures["pck_curves"] = pck_curves_figure(
            {self.labels[k]: (alphas, c["occluded"].tolist()) for k, c in curves.items()},
            title="occluded keypoints",
        )
        for n in buckets:  # the paper's figures: one per number of occluded keypoints
            report.figures[f"pck_curves_occ{n}"] = pck_curves_figure(
                {self.labels[k]: (alphas, c[f"all_{n}"].tolist()) for k, c in curves.items()},
                title=f"{n}/{len(self.keypoints)} occluded",
            )

    def _samples(self, records, preds, gt, boxes) -> list[dict[str, Any]]:
        kp = self.keypoints
        size = (boxes[:, 2:] - boxes[:, :2]).max(1)
        rows = []
        for i, rec in enumerate(records):
            labelled = gt[i, kp, 2] > 0
            row = {"sample": rec["sample"], "occluded": int((gt[i, kp, 2] == OCCLUDED).sum())}
            for key, pred in preds.items():
                err = np.linalg.norm(pred[i, kp] - gt[i, kp, :2], axis=-1) / size[i]
                row[f"pck_{key}"] = (
                    float((err[labelled] < self.alpha).mean()) if labelled.any() else math.nan
                )
            rows.append(row)
        return rows
