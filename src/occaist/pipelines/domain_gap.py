"""The study's domain-gap report: how close each training set of Table 6.2 is to the real domain.

For the original renders and every stylised copy of them (same models, same views), against the
prepared real segments, :func:`domain_gap_report` computes the measures of
:mod:`occaist.evaluation.stylisation` (two-sample AUC, colour correlation, alpha IoU) and writes
``domain_gap.{md,csv,json}`` and the montage ``domain_gap_montage.png`` (original, each
stylisation, the nearest real segment).

Each row also has the set's foreground statistics (brightness, its spread over images,
saturation, fine-texture noise); the summary has the real segments' (``real_statistics``), so
the table says what a stylisation changed and what the real domain differs by.

``python -m occaist.pipelines.domain_gap <renders root> <real segments root> [name=<stylised
root> ...] --out DIR`` runs it by hand (for example on a generator's stylisation made with
``python -m occaist.stylize``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from occaist.data.unpaired import load_rgba
from occaist.evaluation import Report, write_report
from occaist.evaluation.stylisation import (
    ClassifierBudget,
    domain_gap_rows,
    foreground_statistics,
    montage,
    nearest_real,
)
from occaist.utils.logging import get_logger

log = get_logger(__name__)

#: Images per set the measure aims for (``views_per_model`` is chosen to reach it).
TARGET_IMAGES = 240


def sample_renders(renders_root: Path, target: int = TARGET_IMAGES) -> list[Path]:
    """``renders/<synset>/<model>/render_<i>.png``, relative to ``renders_root``: the first
    ``ceil(target / models)`` views of every model (one view each when there are ``target``
    models or more), sorted, so the same list serves the original and the stylised copies."""
    models = sorted(p for p in (renders_root / "renders").glob("*/*") if p.is_dir())
    views = max(1, -(-target // max(1, len(models))))
    files = []
    for model in models:
        ordered = sorted(model.glob("render_*.png"), key=lambda p: int(p.stem.split("_")[1]))
        files += [p.relative_to(renders_root) for p in ordered[:views]]
    return files


def real_segments(prepared_root: Path) -> list[Path]:
    """Every prepared real segment (``train/`` and ``test/``), sorted."""
    return sorted(p for split in ("train", "test") for p in (prepared_root / split).glob("*.png"))


def load_images(paths: list[Path], size: int) -> np.ndarray:
    """RGB uint8 (N, size, size, 3), preprocessed as the CycleGAN sees them (background RGB 0)."""
    return np.stack([load_rgba(p, size)[..., :3] for p in paths])


def domain_gap_report(
    renders_root: Path,
    prepared_root: Path,
    stylised_roots: Mapping[str, Path],
    out_dir: Path,
    budget: ClassifierBudget | None = None,
) -> list[dict[str, Any]]:
    """Measure the originals and every stylised copy against the real segments; write the report.

    Returns the ``domain_gap`` rows (the originals first).
    """
    budget = budget or ClassifierBudget()
    start = time.perf_counter()
    rel = sample_renders(Path(renders_root))
    if not rel:
        raise FileNotFoundError(f"no renders under {Path(renders_root) / 'renders'}")
    size = budget.image_size
    originals = load_images([Path(renders_root) / p for p in rel], size)
    stylised = {
        name: load_images([Path(root) / p for p in rel], size)
        for name, root in stylised_roots.items()
    }
    real = load_images(real_segments(Path(prepared_root)), size)
    rows = domain_gap_rows(originals, stylised, real, budget)
    for row in rows:
        row["budget"] = (
            f"{budget.epochs} epochs, {budget.image_size}px, seed {budget.seed}, 2 folds, "
            f"mean of {budget.repeats} repeats"
        )
    shown = slice(0, 6)
    columns = {"original": originals[shown], **{k: v[shown] for k, v in stylised.items()}}
    last = list(columns.values())[-1]
    columns["nearest real"] = nearest_real(last, real)
    figure = montage(columns, title="original / stylised / nearest real segment")
    report = Report(
        summary={
            "rows": rows,
            "renders_root": str(renders_root),
            "prepared_root": str(prepared_root),
            "real_statistics": foreground_statistics(real),
            "seconds": round(time.perf_counter() - start, 1),
        },
        tables={"domain_gap": rows},
        figures={"domain_gap_montage": figure},
    )
    write_report(report, out_dir, "domain_gap")
    import matplotlib.pyplot as plt

    plt.close(figure)
    log.info(
        "domain gap (%d renders, %d real) in %.1f s",
        len(rel),
        len(real),
        time.perf_counter() - start,
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("renders_root", type=Path)
    parser.add_argument("prepared_root", type=Path)
    parser.add_argument("stylised", nargs="*", help="name=<stylised renders root>")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    roots = dict(item.split("=", 1) for item in args.stylised)
    rows = domain_gap_report(
        args.renders_root, args.prepared_root, {k: Path(v) for k, v in roots.items()}, args.out
    )
    from occaist.evaluation.writers import markdown_table

    real = foreground_statistics(
        load_images(real_segments(args.prepared_root), ClassifierBudget().image_size)
    )
    log.info(
        "domain gap, written to %s:\n%s\nreal segments: %s",
        args.out,
        markdown_table(rows, digits=3),
        ", ".join(f"{k} {v:.3f}" for k, v in real.items()),
    )


if __name__ == "__main__":
    main()
