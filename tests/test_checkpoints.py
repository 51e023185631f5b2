"""Checkpoints as users meet them: resume in a fresh process, evaluation of foreign checkpoints.

Every model's experiment runs 2 steps from the command line, then 2 more from its ``last.ckpt``
in a new process (PyTorch loads with ``weights_only=True``: a Hydra partial or any object in the
hyperparameters would fail here). Evaluation rebuilds the model the checkpoint holds, refuses a
checkpoint of another model by name, and explains a truncated file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from occaist.utils.checkpoint import CONFIG_KEY, CheckpointError, load_checkpoint, plain
from tests.helpers import TINY_AIST, write_segments

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

COMMON = ["trainer.max_time=null", "test=false", "logger=csv", "extras.num_threads=1"]


def _experiments(world: Path, prepared: Path) -> dict[str, list[str]]:
    """The overrides a user types to run each model's experiment on the tiny world."""
    return {
        "dpc_demo_cpu": [f"data.root={world / 'shapenet_renders'}"],
        "occnet_graph": [f"data.root={world / 'carfusion'}"],
        "aist_constrained": [
            f"data.renders_root={world / 'shapenet_renders'}",
            f"data.prepared_root={prepared}",
            *TINY_AIST,
        ],
    }


def _train(cwd: Path, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python train.py`` from ``cwd`` (whose data/ and logs/ the defaults read)."""
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)  # as users run it
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        *COMMON,
        f"hydra.run.dir={run_dir}",
        f"paths.output_dir={run_dir}",
        *overrides,
    ]
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_segments(tmp_path_factory.mktemp("prepared"))


@pytest.fixture(scope="module")
def two_step_runs(
    repo_root: Path, tiny_world: Path, prepared: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """``last.ckpt`` of a 2-step run of each experiment."""
    out = {}
    for name, overrides in _experiments(tiny_world, prepared).items():
        run = tmp_path_factory.mktemp(name)
        result = _train(repo_root, run, f"experiment={name}", "trainer.max_steps=2", *overrides)
        assert result.returncode == 0, result.stderr[-3000:]
        out[name] = run / "checkpoints" / "last.ckpt"
    return out


@pytest.mark.parametrize("experiment", ["dpc_demo_cpu", "occnet_graph", "aist_constrained"])
def test_resume_in_a_fresh_process(
    experiment: str,
    two_step_runs: dict[str, Path],
    repo_root: Path,
    tiny_world: Path,
    prepared: Path,
    tmp_path: Path,
) -> None:
    first = two_step_runs[experiment]
    checkpoint = load_checkpoint(first)  # weights_only=True
    steps_before = checkpoint["global_step"]
    assert steps_before > 0
    assert checkpoint[CONFIG_KEY]["experiment"] == experiment
    assert checkpoint[CONFIG_KEY]["model"]["_target_"].startswith("occaist.models.")
    more = steps_before * 2  # "2 more" batches (the CycleGAN counts 2 optimiser steps a batch)
    overrides = _experiments(tiny_world, prepared)[experiment]
    result = _train(
        repo_root,
        tmp_path,
        f"experiment={experiment}",
        f"trainer.max_steps={more}",
        f"ckpt_path={first}",
        *overrides,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Restored all states from the checkpoint" in result.stdout + result.stderr
    resumed = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == more
    # the optimizer state went on from the first run's, not from scratch
    assert resumed["optimizer_states"][0]["state"]


def _evaluate(repo_root: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    cmd = [sys.executable, str(repo_root / "eval.py"), "extras.num_threads=1", *overrides]
    return subprocess.run(
        cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def test_eval_rebuilds_the_checkpoints_model_and_says_how_it_differs(
    two_step_runs: dict[str, Path], repo_root: Path, tiny_world: Path, tmp_path: Path
) -> None:
    """A dpc_demo_cpu checkpoint under experiment=dpc_baseline (other sizes) evaluates; an
    evaluation setting given on the command line still applies over the checkpoint's."""
    result = _evaluate(
        repo_root,
        "experiment=dpc_baseline",
        "model.pose_threshold_deg=45",
        f"ckpt_path={two_step_runs['dpc_demo_cpu']}",
        f"data.root={tiny_world / 'shapenet_renders'}",
        f"hydra.run.dir={tmp_path}",
        f"paths.output_dir={tmp_path}",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "differs from experiment's" in output
    assert "trained with experiment=dpc_demo_cpu" in output
    summary = json.loads((tmp_path / "eval" / "summary_test.json").read_text())
    assert "acc45" in summary and "acc30" not in summary


def test_eval_refuses_another_models_checkpoint_by_name(
    two_step_runs: dict[str, Path], repo_root: Path, tiny_world: Path, tmp_path: Path
) -> None:
    result = _evaluate(
        repo_root,
        "experiment=dpc_baseline",
        f"ckpt_path={two_step_runs['aist_constrained']}",
        f"data.root={tiny_world / 'shapenet_renders'}",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 1
    assert "AISTCycleGAN checkpoint" in result.stderr
    assert "experiment=aist_constrained" in result.stderr
    assert "Traceback" not in result.stderr  # one clear message


def test_truncated_checkpoint_is_explained(
    two_step_runs: dict[str, Path], repo_root: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(two_step_runs["dpc_demo_cpu"].read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="incomplete or not a PyTorch checkpoint"):
        load_checkpoint(broken)
    result = _evaluate(repo_root, "experiment=dpc_demo_cpu", f"ckpt_path={broken}")
    assert result.returncode == 1
    assert "broken.ckpt is incomplete" in result.stderr and "Traceback" not in result.stderr


def test_plain_replaces_objects_by_their_config() -> None:
    import functools

    hparams = {
        "optimizer": functools.partial(torch.optim.Adam, lr=0.1, betas=(0.9, 0.99)),
        "net": torch.nn.Linear(2, 2),
        "sizes": (1, 2),
        "path": Path("/x"),
    }
    out = plain(hparams)
    assert out == {
        "optimizer": {
            "_target_": "torch.optim.adam.Adam",
            "_partial_": True,
            "lr": 0.1,
            "betas": [0.9, 0.99],
        },
        "net": {"_target_": "torch.nn.modules.linear.Linear"},
        "sizes": [1, 2],
        "path": "/x",
    }


def _study(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    cmd = [sys.executable, "-m", "occaist.pipelines.aist_study", "budget=tiny", *overrides]
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where the tiny study ran up to the DPC baseline, as ``make demo`` leaves one."""
    cwd = tmp_path_factory.mktemp("study")
    result = _study(cwd, "stop_after=dpc_baseline")
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd


def test_study_killed_after_a_checkpoint_write_resumes_on_rerun(tiny_study: Path) -> None:
    """A study killed right after a DPC stage wrote ``last.ckpt`` (no ``stage.json`` yet) reruns
    that stage from the checkpoint, in a new process, instead of failing on every rerun."""
    stage = tiny_study / "logs" / "aist_study" / "tiny" / "dpc_baseline"
    checkpoint = stage / "checkpoints" / "last.ckpt"
    steps = load_checkpoint(checkpoint)["global_step"]
    (stage / "stage.json").unlink()  # the kill: the checkpoint is there, the stage unfinished
    second = _study(tiny_study, "stop_after=dpc_baseline")
    assert second.returncode == 0, second.stderr[-3000:]
    assert (stage / "stage.json").is_file()
    resumed = (stage / "run.log").read_text().rsplit("$ ", 1)[-1]  # the rerun's command + output
    assert f"ckpt_path={checkpoint}" in resumed
    assert "Restored all states from the checkpoint" in resumed
    assert load_checkpoint(checkpoint)["global_step"] == steps


def test_the_headline_command_finds_the_studys_data(tiny_study: Path, repo_root: Path) -> None:
    """After the study, README's ``python train.py experiment=aist_constrained`` reads the
    study's prepared segments; only the ImageNet ResNet-18 may be missing, and it says so."""
    link = tiny_study / "data" / "prepared" / "real"
    assert link.is_symlink()
    assert link.resolve() == (tiny_study / "logs/aist_study/tiny/prepare/real").resolve()
    from occaist.utils.weights import default_weights_path

    # as written it trains for hours when the ImageNet weights are present; without them (CI,
    # this machine) it must stop at once, naming the weights, not the data
    if not default_weights_path("resnet18").is_file():
        env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
        env.pop("HYDRA_FULL_ERROR", None)
        as_written = subprocess.run(
            [sys.executable, str(REPO / "train.py"), "experiment=aist_constrained"],
            cwd=tiny_study, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert as_written.returncode == 1
        assert "resnet18" in as_written.stderr and "Traceback" not in as_written.stderr
        assert "prepared real segments" not in as_written.stderr
    one_batch = _train(
        tiny_study,
        tiny_study / "run_b",
        "experiment=aist_constrained",
        "model.res_weights=null",
        "debug=fdr",
        *TINY_AIST[:3],
    )
    assert one_batch.returncode == 0, one_batch.stderr[-3000:]


def test_eval_on_a_root_without_a_validation_split(
    two_step_runs: dict[str, Path], repo_root: Path, tiny_world: Path, tmp_path: Path
) -> None:
    """The study evaluates on the real-look set (a test split only): re-estimating the alignment
    from a validation split that is not there keeps the checkpoint's alignment, not fail."""
    import shutil

    root = tmp_path / "renders"
    shutil.copytree(tiny_world / "shapenet_renders", root, symlinks=True)
    for split_file in root.rglob("*_val.txt"):
        split_file.unlink()
    result = _evaluate(
        repo_root,
        "experiment=dpc_demo_cpu",
        f"ckpt_path={two_step_runs['dpc_demo_cpu']}",
        f"data.root={root}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.output_dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "no validation split to re-estimate the alignment" in result.stdout + result.stderr
    assert (tmp_path / "run" / "eval" / "summary_test.json").is_file()
