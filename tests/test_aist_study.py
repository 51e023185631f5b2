"""The AIST study end to end on the tiny world: table, figure, manifests, and resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from occaist.pipelines.aist_study import (
    AIST_RUNS,
    DATASETS,
    DPC_RUNS,
    Stage,
    _expected_seconds,
    build_stages,
    expected_makespan,
    plan_study,
    run_study,
    summary_text,
)
from occaist.pipelines.stages import MANIFEST
from occaist.utils.compose import composed


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


@pytest.mark.slow
def test_study_runs_resumes_and_reports(tiny_world: Path, tmp_path: Path) -> None:
    first = _study(tiny_world, tmp_path, "stop_after=prepare")
    assert first["ran"] == ["world", "prepare"]

    second = _study(tiny_world, tmp_path)
    assert second["skipped"] == ["world", "prepare"]  # finished stages are not redone
    expected = {"real_test_set", "domain_gap", "report"} | {f"aist_{d}" for d in AIST_RUNS}
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
    gap = list(csv.DictReader((report / "domain_gap.csv").open()))
    assert [r["method"] for r in gap] == ["originals (identity)", *AIST_RUNS]
    assert (report / "domain_gap_montage.png").is_file()
    assert {"train_set_auc", "train_set_colour"} <= set(rows[0])
    assert "Domain gap" in summary_text(second)

    # the stylized copies keep the renders' layout and every alpha channel
    for dataset in AIST_RUNS:
        manifest = study / f"stylize_{dataset}" / "shapenet_renders" / "manifest.json"
        assert manifest.is_file()

    third = _study(tiny_world, tmp_path)
    assert third["ran"] == []


def _plan(tmp_path: Path, *extra: str):
    overrides = ["budget=demo", f"study_dir={tmp_path / 'study'}", *extra]
    with composed(overrides, config_name="aist_study.yaml", output_dir=tmp_path / "run") as cfg:
        stages = build_stages(cfg, tmp_path / "study")
        return cfg, stages, plan_study(cfg)


def test_demo_budget_names_the_cpu_experiments_and_plans_under_30_minutes(tmp_path: Path):
    cfg, stages, plan = _plan(tmp_path)
    by_name = {s.name: s for s in stages}
    assert by_name["aist_stylized_2"].config["experiment"] == (
        "experiment=[aist_constrained,aist_demo_cpu]"
    )
    assert by_name["dpc_baseline"].config["experiment"] == "experiment=dpc_demo_cpu"
    assert all(item["action"] == "run" for item in plan)
    makespan = expected_makespan(stages, _expected_seconds(cfg, stages), cfg.jobs)
    assert makespan <= 30 * 60
    serial = expected_makespan(stages, _expected_seconds(cfg, stages), 1)
    assert makespan < serial


def test_dry_run_says_skip_and_rerun(tmp_path: Path):
    cfg, stages, _ = _plan(tmp_path)
    world = next(s for s in stages if s.name == "world")
    (tmp_path / "study" / "world").mkdir(parents=True)
    (tmp_path / "study" / "world" / "world.json").write_text("{}")
    (tmp_path / "study" / "world" / MANIFEST).write_text(
        json.dumps({"stage": "world", "config_hash": world.hash})
    )
    plan = {item["stage"]: item for item in plan_study(cfg)}
    assert plan["world"]["action"] == "skip"
    assert plan["prepare"]["action"] == "run"
    _, _, changed = _plan(tmp_path, "world.seed=1")
    assert {i["stage"]: i for i in changed}["world"]["action"] == "rerun"


def test_expected_makespan_runs_independent_stages_together():
    def stage(name: str, *up: str) -> Stage:
        return Stage(name, {"upstream": {u: "" for u in up}}, lambda d: None)

    stages = [stage("a"), stage("b", "a"), stage("c", "a"), stage("d", "b", "c")]
    times = {"a": 1.0, "b": 5.0, "c": 5.0, "d": 1.0}
    assert expected_makespan(stages, times, 1) == 12.0
    assert expected_makespan(stages, times, 2) == 7.0
