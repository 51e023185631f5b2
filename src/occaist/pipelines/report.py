"""Table 6.2 and the cumulative mask-XOR curves (thesis Fig. 6.5) from the study's evaluations.

Beside each row, the domain gap of the DPC model's *training set* (two-sample AUC against the
real segments, colour correlation with the originals; from the study's ``domain_gap`` stage), so
the table shows whether the sets that are closer to the real domain give better real-set pose.
The domain-gap table and montage are copied into the report folder.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from occaist.utils.io import atomic_path, write_text_atomic

#: Table columns: (summary key, header, format).
COLUMNS = (
    ("precision", "Precision", "{:.2f}"),
    ("coverage", "Coverage", "{:.2f}"),
    ("chamfer", "Chamfer distance", "{:.2f}"),
    ("acc30", "Accuracy@30", "{:.2f}"),
    ("median_deg", "Median error (deg)", "{:.2f}"),
    ("mask_xor_median", "Mask XOR (median)", "{:.3f}"),
    ("train_set_auc", "Train set AUC vs real", "{:.3f}"),
    ("train_set_colour", "Train set colour corr.", "{:.2f}"),
)
#: The domain-gap table's row name of the original renders.
ORIGINALS_ROW = "originals (identity)"
RUN_TITLES = {
    "baseline": "Baseline",
    "experiment_2": "Experiment 2",
    "experiment_3": "Experiment 3",
}
DATASET_TITLES = {
    "original": "Original",
    "stylized_2": "Stylized 2",
    "stylized_3": "Stylized 3",
    "real": "Real (synthetic world)",
}


def load_gap(study_dir: Path) -> dict[str, dict[str, object]]:
    """The ``domain_gap`` stage's rows by training-set name (``original``, ``stylized_2``, ...)."""
    path = study_dir / "domain_gap" / "domain_gap.json"
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text())
    return {("original" if r["method"] == ORIGINALS_ROW else r["method"]): r for r in rows}


def load_rows(
    study_dir: Path, runs: Sequence[str] | Mapping[str, str], datasets: Sequence[str]
) -> list[dict[str, object]]:
    """One row per (DPC run, test set) from ``eval_<run>/<set>/eval/``; when ``runs`` maps each
    run to its training set, that set's domain gap is added to its rows."""
    gap = load_gap(study_dir)
    train_sets = dict(runs) if isinstance(runs, Mapping) else {}
    rows = []
    for run in runs:
        measured = gap.get(train_sets.get(run, ""), {})
        for dataset in datasets:
            eval_dir = study_dir / f"eval_{run}" / dataset / "eval"
            summary = json.loads((eval_dir / "summary_test.json").read_text())
            xor = per_model_column(eval_dir / "per_model_test.csv", "mask_xor")
            rows.append(
                {
                    "experiment": RUN_TITLES.get(run, run),
                    "dataset": DATASET_TITLES.get(dataset, dataset),
                    **{key: summary.get(key) for key, _, _ in COLUMNS if key in summary},
                    "mask_xor_median": float(np.median(xor)) if xor.size else None,
                    "train_set_auc": measured.get("two_sample_auc"),
                    "train_set_colour": measured.get("colour_correlation"),
                    "models": summary.get("models"),
                }
            )
    return rows


def per_model_column(path: Path, column: str) -> np.ndarray:
    """The finite values of ``column`` in a per-model CSV (empty when absent)."""
    if not path.is_file():
        return np.zeros(0)
    with path.open(newline="") as handle:
        values = [row.get(column) for row in csv.DictReader(handle)]
    numbers = np.array([float(v) for v in values if v not in (None, "")], dtype=np.float64)
    return numbers[np.isfinite(numbers)]


def table_markdown(rows: Sequence[Mapping[str, object]]) -> str:
    """Rows as a Markdown table in the layout of the thesis's Table 6.2 (blank repeated names)."""
    header = ["Experiment", "Dataset", *(title for _, title, _ in COLUMNS), "Models"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    previous = None
    for row in rows:
        name = row["experiment"] if row["experiment"] != previous else ""
        previous = row["experiment"]
        cells = [str(name), str(row["dataset"])]
        for key, _, fmt in COLUMNS:
            value = row.get(key)
            cells.append("n/a" if value is None else fmt.format(float(value)))
        cells.append(str(row.get("models", "")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv(rows: Sequence[Mapping[str, object]]) -> str:
    keys = ["experiment", "dataset", *(key for key, _, _ in COLUMNS), "models"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def plot_xor_cdf(curves: Mapping[str, np.ndarray], path: Path) -> None:
    """Cumulative distribution of the normalised mask disagreement, one curve per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, values in curves.items():
        if values.size == 0:
            continue
        xs = np.sort(values)
        ax.step(xs, np.arange(1, xs.size + 1) / xs.size, where="post", label=name)
    ax.set_xlabel("pixels in disagreement / pixels of the real mask (XOR)")
    ax.set_ylabel("fraction of real test images")
    ax.set_title("Cumulative mask XOR on the real test set (cf. thesis Fig. 6.5)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_report(
    study_dir: Path, out_dir: Path, runs: Mapping[str, str], datasets: Sequence[str]
) -> None:
    """Write ``table_6_2.{md,csv}``, ``mask_xor_cdf.png`` and the domain gap into ``out_dir``."""
    rows = load_rows(study_dir, runs, datasets)
    for path in sorted((study_dir / "domain_gap").glob("domain_gap*")):
        shutil.copyfile(path, out_dir / path.name)
    write_text_atomic(out_dir / "table_6_2.md", table_markdown(rows))
    write_text_atomic(out_dir / "table_6_2.csv", table_csv(rows))
    curves = {
        RUN_TITLES.get(run, run): per_model_column(
            study_dir / f"eval_{run}" / "real" / "eval" / "per_model_test.csv", "mask_xor"
        )
        for run in runs
    }
    plot_xor_cdf(curves, out_dir / "mask_xor_cdf.png")
