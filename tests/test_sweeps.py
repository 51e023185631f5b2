"""Hydra multirun from the command line as the README writes it: a 2-point grid and a 2-trial
Optuna search (AIST), run from a fresh working directory with no ``hydra.sweep.dir`` override
(the sweep lands in ``<cwd>/logs/<task name>/multiruns/<time>``)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import TINY_AIST, write_segments

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_segments(tmp_path_factory.mktemp("prepared"))


def _multirun(repo_root: Path, cwd: Path, *overrides: str) -> tuple[Path, str]:
    """Run ``python train.py -m ...`` in ``cwd``; return the sweep folder and the output."""
    cwd.mkdir(parents=True)
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(repo_root / "train.py"), "-m", *overrides]
    result = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    (sweep,) = (cwd / "logs").glob("*/multiruns/*")
    return sweep, result.stdout + result.stderr


def test_grid_runs_every_point(
    repo_root: Path, tiny_world: Path, prepared: Path, tmp_path: Path
) -> None:
    sweep, _ = _multirun(
        repo_root,
        tmp_path / "grid",
        "experiment=aist_constrained",
        "model.lambda_alpha=1,4",
        f"data.renders_root={tiny_world / 'shapenet_renders'}",
        f"data.prepared_root={prepared}",
        *TINY_AIST,
    )
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    alphas = []
    for job in jobs:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        alphas.append(next(o for o in overrides if o.startswith("model.lambda_alpha=")))
        assert (job / "config_tree.log").is_file()
    assert alphas == ["model.lambda_alpha=1", "model.lambda_alpha=4"]


def test_optuna_search_runs_trials(
    repo_root: Path, tiny_world: Path, prepared: Path, tmp_path: Path
) -> None:
    sweep, output = _multirun(
        repo_root,
        tmp_path / "optuna",
        "hparams_search=aist_optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=1",
        f"data.renders_root={tiny_world / 'shapenet_renders'}",
        f"data.prepared_root={prepared}",
        *TINY_AIST,
    )
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {
        "model.lambda_alpha",
        "model.lambda_res",
        "model.lambda_idt",
    }
    search = yaml.safe_load((repo_root / "conf" / "hparams_search" / "aist_optuna.yaml").open())
    metric = search["optimized_metric"]
    assert len([p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()]) == 2
    # every trial's value is printed and kept, and the best one is among them
    rows = list(csv.DictReader((sweep / "objectives.csv").open()))
    assert len(rows) == 2 and {r["metric"] for r in rows} == {metric}
    values = [float(r["value"]) for r in rows]
    assert float(results["best_value"]) == pytest.approx(max(values))
    assert output.count(f"objective {metric} = ") == 2
    # the objective measures something at this budget: two settings, two different values
    assert values[0] != values[1]
