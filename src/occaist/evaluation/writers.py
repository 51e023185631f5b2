"""Writing a :class:`~occaist.evaluation.base.Report`: tables, per-sample rows, figures."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from occaist.evaluation.base import Report
from occaist.utils.io import atomic_write, write_json_atomic, write_text_atomic


def csv_text(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Rows as CSV text; columns default to the keys of the first row, in order."""
    columns = list(columns or (rows[0].keys() if rows else []))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return "" if value is None else str(value)


def markdown_table(rows: list[dict[str, Any]], digits: int = 2) -> str:
    """Rows as a GitHub Markdown table (floats with ``digits`` decimals)."""
    if not rows:
        return ""
    columns = list(rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c), digits) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict[str, Any]], stem: str | Path, digits: int = 2) -> None:
    """``<stem>.md``, ``<stem>.csv`` and ``<stem>.json`` holding the same rows."""
    stem = Path(stem)
    write_text_atomic(stem.with_suffix(".md"), markdown_table(rows, digits))
    write_text_atomic(stem.with_suffix(".csv"), csv_text(rows))
    write_json_atomic(stem.with_suffix(".json"), rows)


def write_report(report: Report, out_dir: str | Path, split: str) -> list[Path]:
    """Write every part of ``report`` under ``out_dir``; return the paths written.

    Names: ``summary_<split>.{json,csv}``, each table ``<name>.{md,csv,json}``, each per-sample
    list ``<name>.csv``, each figure ``<name>.png``, each document ``<name>.json``.
    """
    out = Path(out_dir)
    written: list[Path] = []
    if report.summary:
        write_json_atomic(out / f"summary_{split}.json", report.summary)
        flat = {k: v for k, v in report.summary.items() if not isinstance(v, (list, dict))}
        write_text_atomic(out / f"summary_{split}.csv", csv_text([flat]))
        written += [out / f"summary_{split}.json", out / f"summary_{split}.csv"]
    for name, rows in report.tables.items():
        write_table(rows, out / name)
        written += [out / f"{name}{s}" for s in (".md", ".csv", ".json")]
    for name, rows in report.samples.items():
        write_text_atomic(out / f"{name}.csv", csv_text(rows))
        written.append(out / f"{name}.csv")
    for name, figure in report.figures.items():
        atomic_write(out / f"{name}.png", lambda p, f=figure: f.savefig(p, dpi=120))
        written.append(out / f"{name}.png")
    for name, obj in report.documents.items():
        write_json_atomic(out / f"{name}.json", obj)
        written.append(out / f"{name}.json")
    return written
