"""The NaN guard stops training at the first non-finite loss and names it."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.demos.boring_classes import BoringModel

from occaist.callbacks.nan_guard import NaNGuard, NonFiniteLossError


class _DivergingModel(BoringModel):
    def __init__(self, bad_step: int) -> None:
        super().__init__()
        self.bad_step = bad_step

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        if self.global_step >= self.bad_step:
            out["loss"] = out["loss"] * torch.tensor(float("nan"))
        self.log("train/loss", out["loss"])
        return out


@pytest.mark.parametrize("bad_step", [0, 3])
def test_stops_at_first_nan(tmp_path: Path, bad_step: int) -> None:
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_steps=10,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[NaNGuard()],
    )
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        trainer.fit(_DivergingModel(bad_step))
    assert trainer.global_step <= bad_step + 1


def test_finite_training_is_untouched(tmp_path: Path) -> None:
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_steps=5,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[NaNGuard()],
    )
    trainer.fit(_DivergingModel(bad_step=10**6))
    assert trainer.global_step == 5
