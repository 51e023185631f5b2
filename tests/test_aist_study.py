"""The AIST study end to end on the tiny world: table, figure, manifests, and resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from occaist.pipelines.aist_study import AIST_RUNS, DATASETS, DPC_RUNS, run_study
from occaist.pipelines.stages import MANIFEST
from occaist.utils.compose import composed

pytestmark = pytest.mark.slow


def _study(tiny_world: Path, tmp_path: Path, *extra: str) -> dict:
    overrides = [
        "budget=tiny",
        f"world.root={tiny_world}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"study_dir={tmp_path / 'study'}",
        *extra,
    ]
    with composed(overrides, config_name="aist_study.yaml", output_dir=tmp_path / "run") as cfg:
        return run_study(cfg)


def test_study_runs_resumes_and_reports(tiny_world: Path, tmp_path: Path) -> None:
    first = _study(tiny_world, tmp_path, "stop_after=prepare")
    assert first["ran"] == ["world", "prepare"]

    second = _study(tiny_world, tmp_path)
    assert second["skipped"] == ["world", "prepare"]  # finished stages are not redone
    expected = {"real_test_set", "report"} | {f"aist_{d}" for d in AIST_RUNS}
    expected |= {f"stylize_{d}" for d in AIST_RUNS} | {f"dpc_{r}" for r in DPC_RUNS}
    expected |= {f"eval_{r}" for r in DPC_RUNS}
    assert set(second["ran"]) == expected

    study = tmp_path / "study"
    for stage in ["world", "prepare", *expected]:
        manifest = json.loads((study / stage / MANIFEST).read_text())
        assert manifest["stage"] == stage and len(manifest["config_hash"]) == 64

    report = study / "report"
    rows = list(csv.DictReader((report / "table_6_2.csv").open()))
    assert len(rows) == len(DPC_RUNS) * len(DATASETS)
    for row in rows:
        for key in ("precision", "coverage", "chamfer", "acc30", "median_deg"):
            assert float(row[key]) >= 0.0
        assert abs(float(row["chamfer"]) - float(row["precision"]) - float(row["coverage"])) < 1e-3
    assert "| Baseline | Original |" in (report / "table_6_2.md").read_text()
    assert (report / "mask_xor_cdf.png").stat().st_size > 1000

    # the stylized copies keep the renders' layout and every alpha channel
    for dataset in AIST_RUNS:
        manifest = study / f"stylize_{dataset}" / "shapenet_renders" / "manifest.json"
        assert manifest.is_file()

    third = _study(tiny_world, tmp_path)
    assert third["ran"] == []
