"""Shared fixtures: environment for offline, quiet, single-threaded tests; the tiny world."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _accelerator_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """``OCCAIST_TEST_ACCELERATOR=gpu pytest ...`` runs every Lightning ``Trainer`` the tests
    build (Hydra's ``trainer=cpu`` included) on that accelerator, one device: the suite's
    training tests as a CUDA check on a GPU machine. Unset (CI), nothing changes. DDP trainers
    keep their own settings; the bitwise resume test of AIST fails there by design (CUDA
    kernels are not bitwise deterministic with ``deterministic: false``)."""
    accelerator = os.environ.get("OCCAIST_TEST_ACCELERATOR")
    if not accelerator:
        return
    import pytorch_lightning as pl

    init = pl.Trainer.__init__

    def on_accelerator(self: pl.Trainer, *args: object, **kwargs: object) -> None:
        if "ddp" not in str(kwargs.get("strategy", "")):
            kwargs.update(accelerator=accelerator, devices=1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "__init__", on_accelerator)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` synthetic world (seed 0), generated once per test session and worker."""
    from occaist.synth import generate_world

    root = tmp_path_factory.mktemp("world")
    generate_world(root, preset="tiny", seed=0)
    return root
