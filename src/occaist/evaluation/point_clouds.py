"""Evaluation of point clouds and poses (the DPC model): tables with baselines and diagnostics.

Records come from :meth:`occaist.models.dpc.module.PointCloudPoseNet.test_step`, one per model:
``model_id``, ``views``, ``mask_xor`` and, when the model has a ground-truth cloud,
``precision`` / ``coverage`` / ``chamfer`` (×100, view-averaged); for pose-predicting runs the
per-view ``errors_deg`` after the global alignment, the raw (unaligned) poses ``raw_pose`` and
the ground-truth poses ``gt_pose`` (lists of ``[w, x, y, z]``) and, when measured, the winning
candidate of every view (``wins``) with every candidate's raw pose (``raw_candidates``, per view
a list of K quaternions).

The report (``write_report`` names, under the evaluation folder):

* ``per_model_<split>.csv``: one row per model (the columns of ``PER_MODEL_COLUMNS``);
* ``summary_<split>.json`` / ``.csv``: the test metrics and the diagnostics, with the split,
  root, counts and both global rotations;
* ``methods_<split>.{md,csv,json}``: the model's rows beside baselines that need no training:
  the same predictions under the oracle alignment (the best single global rotation for these
  very views), a constant pose (the best single pose for every view, chosen on these views),
  uniformly random poses (closed form) and a template car (the medoid of the training split's
  ground-truth clouds, perfectly posed) for the Chamfer columns;
  The candidate diagnostics (with ``raw_candidates``) sit below them: the candidate whose render
  fits the view's mask best (what training picks; it needs the mask, so it is not a method) and
  the best candidate (an oracle), which separate a student that lags behind its teacher from an
  ensemble that picks the wrong hypothesis (a 180° flip);
* ``pose_errors_<split>.png``: the cumulative distribution of per-view errors under both
  alignments and of the alignment-free relative errors;
* ``alignment.json``: the reference rotation used, how it was applied, the oracle rotation and
  the angle between the two.

How to read the diagnostics is explained in ``docs/dpc.md`` ("Reading the evaluation").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from occaist.data.shapenet_renders import CAR_SYNSET, read_gt_points, read_split
from occaist.evaluation.base import Evaluator, Report
from occaist.geometry.quaternion import quaternion_conjugate, quaternion_multiply
from occaist.metrics.point_cloud import chamfer_distance
from occaist.metrics.pose import (
    median_upper,
    oracle_alignment,
    quaternion_angle_deg,
    relative_pose_errors,
)
from occaist.utils.logging import RankedLogger

log = RankedLogger(__name__)

__all__ = ["PER_MODEL_COLUMNS", "PointCloudEvaluator", "random_rotation_angle_quantile"]

#: Columns of ``per_model_<split>.csv``, in order (the first nine are the historical ones).
PER_MODEL_COLUMNS = [
    "model_id",
    "precision",
    "coverage",
    "chamfer",
    "acc",
    "median_deg",
    "mask_xor",
    "views",
    "errors_deg",
    "relative_acc",
    "relative_median_deg",
    "oracle_errors_deg",
    "winners",
]


#: a view whose aligned error exceeds this is counted as flipped (``flipped_share``)
FLIP_DEG = 150.0
#: the student "agrees" with its winning candidate within this angle
AGREE_DEG = 15.0


def random_rotation_cdf(angle_deg: float) -> float:
    """P(θ < angle) for the angle θ of a uniformly random rotation: ``(θ − sin θ)/π``."""
    theta = math.radians(angle_deg)
    return (theta - math.sin(theta)) / math.pi


def random_rotation_angle_quantile(p: float) -> float:
    """The angle in degrees below which a uniformly random rotation falls with probability p."""
    lo, hi = 0.0, 180.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if random_rotation_cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def _mean(values: list[float]) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


class PointCloudEvaluator(Evaluator):
    """Builds the DPC report from per-model records (see the module docstring).

    Args:
        threshold_deg: the pose accuracy threshold; the accuracy key is ``acc<threshold>``
            (``acc30`` by default, the key the study's tables read).
        reference_rotation: the global rotation ``q_ref`` (w, x, y, z) the records were aligned
            with (``None``: camera-supervised, no alignment).
        alignment_source: how ``q_ref`` was estimated (written to ``alignment.json``).
        num_candidates: K, for the win fractions.
        template_models: training models whose ground-truth clouds the template-car baseline
            chooses its medoid from (0: no template row).
        synset: the category folder, to read ground-truth clouds for the template baseline.
        pose_source: where the model's pose comes from (``student`` head, or ``silhouette_fit``:
            the candidate that fits the input's alpha best); written to the summary.
    """

    unique_key = "model_id"

    def __init__(
        self,
        threshold_deg: float = 30.0,
        reference_rotation: list[float] | None = None,
        alignment_source: str = "",
        num_candidates: int = 1,
        template_models: int = 12,
        synset: str = CAR_SYNSET,
        pose_source: str = "student",
    ) -> None:
        super().__init__()
        self.pose_source = pose_source
        self.threshold_deg = threshold_deg
        self.reference_rotation = reference_rotation
        self.alignment_source = alignment_source
        self.num_candidates = num_candidates
        self.template_models = template_models
        self.synset = synset
        self.acc_key = f"acc{threshold_deg:g}"

    # ------------------------------------------------------------------ pose diagnostics
    def _pose_diagnostics(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        posed = [r for r in records if r.get("raw_pose")]
        if not posed:
            return {}
        raw = torch.tensor([q for r in posed for q in r["raw_pose"]], dtype=torch.float64)
        gt = torch.tensor([q for r in posed for q in r["gt_pose"]], dtype=torch.float64)
        aligned = torch.tensor([e for r in posed for e in r["errors"]], dtype=torch.float64)
        extra = torch.tensor([self.reference_rotation]) if self.reference_rotation else None
        oracle = oracle_alignment(raw, gt, self.threshold_deg, extra_candidates=extra)
        relative, offset = [], 0
        for r in posed:
            v = len(r["raw_pose"])
            rel = relative_pose_errors(raw[offset : offset + v], gt[offset : offset + v])
            r["_relative"] = rel
            r["_oracle"] = oracle["errors_deg"][offset : offset + v]
            relative.append(rel)
            offset += v
        relative = torch.cat(relative)
        constant = self._constant_pose(gt)
        t = self.threshold_deg
        out = {
            "aligned": aligned,
            "oracle": oracle,
            "relative": relative,
            "constant": constant,
            "constant_relative": self._constant_relative(posed),
            "random": {
                "accuracy": random_rotation_cdf(t),
                "median_deg": random_rotation_angle_quantile(0.5),
            },
        }
        if any("wins" in r for r in posed):
            wins = torch.tensor([w for r in posed for w in r.get("wins", [])], dtype=torch.long)
            counts = torch.bincount(wins, minlength=self.num_candidates).double()
            out["win_fractions"] = (counts / counts.sum().clamp_min(1)).tolist()
        out["flipped_share"] = float((aligned > FLIP_DEG).double().mean())
        if all(r.get("raw_candidates") and r.get("wins") for r in posed):
            out["candidates"] = self._candidate_diagnostics(posed, raw, gt)
        return out

    def _candidate_diagnostics(
        self, posed: list[dict[str, Any]], raw: torch.Tensor, gt: torch.Tensor
    ) -> dict[str, Any]:
        """Errors ``(n,)`` under the alignment in use of the mask-winning candidate
        (``winner``) and of the best candidate (``best``), and the share of views whose student
        pose is within ``AGREE_DEG`` of its winner (``student_agrees``)."""
        cands = torch.tensor(
            [c for r in posed for c in r["raw_candidates"]], dtype=torch.float64
        )  # (n, K, 4)
        wins = torch.tensor([w for r in posed for w in r["wins"]], dtype=torch.long)
        ref = torch.tensor(self.reference_rotation or [1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
        n, k = cands.shape[:2]
        aligned = quaternion_multiply(cands, quaternion_conjugate(ref).expand(n, k, 4))
        errors = quaternion_angle_deg(aligned, gt[:, None].expand(n, k, 4))  # (n, K)
        index = torch.arange(n)
        return {
            "winner": errors[index, wins],
            "best": errors.min(dim=1).values,
            "student_agrees": float(
                (quaternion_angle_deg(raw, cands[index, wins]) < AGREE_DEG).double().mean()
            ),
        }

    def _constant_pose(self, gt: torch.Tensor) -> dict[str, float]:
        """The best single pose for every view (candidates: every ground-truth pose)."""
        step = max(1, -(-gt.shape[0] // 2000))
        best = None
        for c in gt[::step]:
            errors = quaternion_angle_deg(c.expand_as(gt), gt)
            key = (
                -float((errors < self.threshold_deg).double().mean()),
                float(median_upper(errors)),
            )
            if best is None or key < best[0]:
                best = (key, errors)
        assert best is not None
        errors = best[1]
        return {
            "accuracy": float((errors < self.threshold_deg).double().mean()),
            "median_deg": float(median_upper(errors)),
        }

    def _constant_relative(self, posed: list[dict[str, Any]]) -> torch.Tensor:
        """Relative errors of a constant pose: the true relative angles of the view pairs."""
        parts = []
        for r in posed:
            gt = torch.tensor(r["gt_pose"], dtype=torch.float64)
            same = gt[:1].expand_as(gt)
            parts.append(relative_pose_errors(same, gt))
        return torch.cat(parts)

    # ------------------------------------------------------------------ template baseline
    def _template_chamfer(self, records: list[dict[str, Any]], root: str) -> dict[str, float]:
        """Chamfer of the training split's medoid cloud against every test model's cloud."""
        if self.template_models <= 0 or not root or not Path(root).is_dir():
            return {}
        try:
            train_ids = read_split(root, self.synset, "train")[: self.template_models]
            clouds = [read_gt_points(root, self.synset, m) for m in train_ids]
        except (OSError, ValueError) as err:
            log.info("template baseline skipped: %s", err)
            return {}
        clouds = [torch.from_numpy(c) for c in clouds if c is not None and len(c)]
        if not clouds:
            return {}
        n = len(clouds)
        cost = torch.zeros(n)
        for i in range(n):
            for j in range(i + 1, n):
                p, c = chamfer_distance(clouds[i], clouds[j])
                cost[i] += p + c
                cost[j] += p + c
        template = clouds[int(cost.argmin())]
        precision, coverage = [], []
        for r in records:
            if r.get("chamfer") is None:
                continue
            try:
                gt = read_gt_points(root, self.synset, r["model_id"])
            except OSError:
                gt = None
            if gt is None or not len(gt):
                continue
            p, c = chamfer_distance(template, torch.from_numpy(gt))
            precision.append(100 * float(p))
            coverage.append(100 * float(c))
        if not precision:
            return {}
        return {
            "precision": _mean(precision),
            "coverage": _mean(coverage),
            "chamfer": _mean(precision) + _mean(coverage),
        }

    # ------------------------------------------------------------------ the report
    def evaluate(self, records: list[dict[str, Any]], context: dict[str, Any]) -> Report:
        split, root = context.get("split", "test"), context.get("root", "")
        used = {tuple(r["reference_rotation"]) for r in records if r.get("reference_rotation")}
        if len(used) > 1:
            raise ValueError(f"records were aligned with {len(used)} different rotations: {used}")
        if used:  # the rotation the test step applied wins over the one known at construction
            self.reference_rotation = list(used.pop())  # (re-estimated after it, on test start)
        metrics = context.get("metrics", {})
        t, acc = self.threshold_deg, self.acc_key
        diag = self._pose_diagnostics(records)
        summary: dict[str, Any] = {}
        for key in ("precision", "coverage", "chamfer"):
            if key in metrics:
                summary[key] = metrics[key]
        if diag:
            aligned = diag["aligned"]
            summary[acc] = metrics.get(acc, float((aligned < t).double().mean()))
            summary["median_deg"] = metrics.get("median_deg", float(median_upper(aligned)))
            summary["mean_deg"] = float(aligned.mean())
            summary[f"oracle_{acc}"] = diag["oracle"]["accuracy"]
            summary["oracle_median_deg"] = diag["oracle"]["median_deg"]
            rel = diag["relative"]
            if rel.numel():
                summary[f"relative_{acc}"] = float((rel < t).double().mean())
                summary["relative_median_deg"] = float(median_upper(rel))
            if "win_fractions" in diag:
                summary["win_fractions"] = diag["win_fractions"]
            summary["flipped_share"] = diag["flipped_share"]
            if "candidates" in diag:
                for name in ("winner", "best"):
                    errors = diag["candidates"][name]
                    summary[f"{name}_candidate_{acc}"] = float((errors < t).double().mean())
                    summary[f"{name}_candidate_median_deg"] = float(median_upper(errors))
                summary["student_agrees_with_winner"] = diag["candidates"]["student_agrees"]
        if "mask_xor" in metrics:
            summary["mask_xor"] = metrics["mask_xor"]
        summary.update(
            split=split,
            root=root,
            models=len(records),
            views=int(sum(r["views"] for r in records)),
            pose_threshold_deg=t,
            reference_rotation=self.reference_rotation or [1.0, 0.0, 0.0, 0.0],
            camera_supervised=self.reference_rotation is None,
        )
        if diag:
            summary["pose_source"] = self.pose_source
            summary["oracle_reference_rotation"] = diag["oracle"]["reference_rotation"].tolist()
        report = Report(summary=summary)
        report.samples[f"per_model_{split}"] = [self._per_model_row(r) for r in records]
        report.tables[f"methods_{split}"] = self._methods(summary, diag, root, records)
        if diag:
            report.figures[f"pose_errors_{split}"] = self._error_figure(diag)
            report.documents["alignment"] = self._alignment_document(diag)
        return report

    def _per_model_row(self, r: dict[str, Any]) -> dict[str, Any]:
        row = {c: r.get(c) for c in PER_MODEL_COLUMNS[:8]}
        if r.get("errors"):
            row["errors_deg"] = " ".join(f"{e:.3f}" for e in r["errors"])
        rel = r.get("_relative")
        if rel is not None and rel.numel():
            row["relative_acc"] = float((rel < self.threshold_deg).double().mean())
            row["relative_median_deg"] = float(median_upper(rel))
        if r.get("_oracle") is not None:
            row["oracle_errors_deg"] = " ".join(f"{e:.3f}" for e in r["_oracle"].tolist())
        if r.get("wins"):
            row["winners"] = " ".join(str(w) for w in r["wins"])
        return {c: row.get(c) for c in PER_MODEL_COLUMNS}

    def _methods(
        self,
        summary: dict[str, Any],
        diag: dict[str, Any],
        root: str,
        records: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        acc, t = self.acc_key, self.threshold_deg
        nan = float("nan")

        def row(method: str, **values: Any) -> dict[str, Any]:
            out = {"method": method}
            for key in ("precision", "coverage", "chamfer", acc, "median_deg"):
                out[key] = values.get(key, nan)
            out[f"relative_{acc}"] = values.get("relative_acc", nan)
            out["relative_median_deg"] = values.get("relative_median", nan)
            out["mask_xor"] = values.get("mask_xor", nan)
            return out

        def rel_values(errors: torch.Tensor) -> dict[str, float]:
            if not errors.numel():
                return {}
            return {
                "relative_acc": float((errors < t).double().mean()),
                "relative_median": float(median_upper(errors)),
            }

        name = "model (ICP alignment)" if diag else "model"
        rows = [
            row(
                name,
                **{k: summary[k] for k in ("precision", "coverage", "chamfer") if k in summary},
                **({acc: summary[acc], "median_deg": summary["median_deg"]} if diag else {}),
                **(rel_values(diag["relative"]) if diag else {}),
                mask_xor=summary.get("mask_xor", nan),
            )
        ]
        if diag:
            oracle = diag["oracle"]
            rows.append(
                row(
                    "model (oracle alignment)",
                    **{acc: oracle["accuracy"], "median_deg": oracle["median_deg"]},
                    **rel_values(diag["relative"]),
                )
            )
            labels = {
                "winner": "diagnostic: candidate that fits the mask best (needs the mask)",
                "best": "diagnostic: best candidate (oracle)",
            }
            for name, label in labels.items():
                if "candidates" in diag:
                    errors = diag["candidates"][name]
                    rows.append(
                        row(
                            label,
                            **{acc: float((errors < t).double().mean())},
                            median_deg=float(median_upper(errors)),
                        )
                    )
            constant = diag["constant"]
            rows.append(
                row(
                    "baseline: one pose for all views (oracle)",
                    **{acc: constant["accuracy"], "median_deg": constant["median_deg"]},
                    **rel_values(diag["constant_relative"]),
                )
            )
            rows.append(
                row(
                    "baseline: uniformly random pose",
                    **{
                        acc: diag["random"]["accuracy"],
                        "median_deg": diag["random"]["median_deg"],
                    },
                    relative_acc=diag["random"]["accuracy"],
                    relative_median=diag["random"]["median_deg"],
                )
            )
        template = self._template_chamfer(records, root)
        if template:
            rows.append(row("baseline: template car (training medoid, true pose)", **template))
        return rows

    def _error_figure(self, diag: dict[str, Any]) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        curves = {
            "ICP alignment": diag["aligned"],
            "oracle alignment": diag["oracle"]["errors_deg"].double(),
            "relative (view pairs)": diag["relative"],
        }
        for label, errors in curves.items():
            if errors.numel():
                x = errors.sort().values.numpy()
                ax.plot(x, (torch.arange(1, len(x) + 1) / len(x)).numpy(), label=label)
        grid = torch.linspace(0, 180, 181)
        ax.plot(grid, [random_rotation_cdf(float(a)) for a in grid], "k:", label="random pose")
        ax.axvline(self.threshold_deg, color="grey", lw=0.8)
        ax.set_xlabel("angular error (deg)")
        ax.set_ylabel("fraction of views below")
        ax.set_xlim(0, 180)
        ax.set_ylim(0, 1)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        return fig

    def _alignment_document(self, diag: dict[str, Any]) -> dict[str, Any]:
        ref = torch.tensor(self.reference_rotation or [1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
        oracle = diag["oracle"]["reference_rotation"].double()
        return {
            "reference_rotation_wxyz": ref.tolist(),
            "applied_as": "P <- q_ref (x) P (x) conj(q_ref); q <- q (x) conj(q_ref)",
            "estimated_on": self.alignment_source,
            "oracle_rotation_wxyz": oracle.tolist(),
            "angle_to_oracle_deg": float(quaternion_angle_deg(ref, oracle)),
        }
