"""A progress bar that counts what bounds the run: optimiser steps, with an ETA."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    """Lightning's rich bar, but one bar over ``trainer.max_steps`` when the run is step-bounded.

    Lightning draws a bar per epoch (``Epoch 11/-2 ... 1/1`` when ``max_epochs`` is unset and an
    epoch is one batch), which tells nothing about when a step-bounded run ends. With
    ``max_steps > 0`` this draws a single bar from the resumed ``global_step`` to ``max_steps``
    (elapsed and remaining time beside it) whose description names the epoch. The CycleGAN
    steps two optimisers per batch, so its bar advances by two per batch, as ``max_steps``
    counts. Epoch-bounded runs keep Lightning's bars.
    """

    @staticmethod
    def _by_steps(trainer: pl.Trainer) -> bool:
        return trainer.max_steps is not None and trainer.max_steps > 0

    def _description(self, trainer: pl.Trainer) -> str:
        return f"Steps (epoch {trainer.current_epoch})"

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.is_disabled or not self._by_steps(trainer):
            super().on_train_epoch_start(trainer, pl_module)
            return
        if self.progress is None:
            return
        if self.train_progress_bar_id is None:
            self.train_progress_bar_id = self._add_task(
                trainer.max_steps, self._description(trainer)
            )
            self.progress.update(self.train_progress_bar_id, completed=trainer.global_step)
        else:
            description = self._description(trainer)
            self.progress.update(self.train_progress_bar_id, description=description)
        self.refresh()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.is_disabled or not self._by_steps(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        if self.train_progress_bar_id is None and self.progress is not None:
            self.train_progress_bar_id = self._add_task(
                trainer.max_steps, self._description(trainer)
            )
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()
