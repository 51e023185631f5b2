"""The command line works from the repository root, as users type it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _run(repo_root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    return subprocess.run(
        [sys.executable, *args],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_train_help(repo_root: Path) -> None:
    result = _run(repo_root, "train.py", "--help")
    assert result.returncode == 0, result.stderr
    assert "== Config ==" in result.stdout
    assert "experiment:" in result.stdout


def test_train_cfg_job_prints_resolved_groups(repo_root: Path) -> None:
    result = _run(repo_root, "train.py", "--cfg", "job", "trainer=cpu")
    assert result.returncode == 0, result.stderr
    for key in ("data:", "model:", "trainer:", "callbacks:", "logger:", "paths:"):
        assert key in result.stdout


def test_eval_requires_a_checkpoint(repo_root: Path) -> None:
    result = _run(repo_root, "eval.py", "ckpt_path=/nonexistent/model.ckpt", "logger=csv")
    assert result.returncode != 0
    assert "/nonexistent/model.ckpt" in result.stderr
