"""Stop a run at the first non-finite loss or gradient, saying which term went bad."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient became NaN or infinite."""


class NaNGuard(pl.Callback):
    """Raise :class:`NonFiniteLossError` when a logged loss or a gradient is not finite.

    Looks at every ``*loss*`` value the module logged (``trainer.callback_metrics``) after each
    ``check_every_n_steps`` training batches and at the gradients before each optimizer step
    (automatic optimisation only; manual modules check their own losses through the logged
    values). The message names the offending term so a diverging GAN or renderer is caught at
    the step where it broke, not hours later.
    """

    def __init__(self, check_every_n_steps: int = 1) -> None:
        self.check_every_n_steps = max(int(check_every_n_steps), 1)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.global_step % self.check_every_n_steps:
            return
        bad = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if "loss" in name and torch.is_tensor(value) and not torch.isfinite(value).all()
        }
        if bad:
            raise NonFiniteLossError(
                f"non-finite loss at global step {trainer.global_step}: {bad}"
            )

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if trainer.global_step % self.check_every_n_steps:
            return
        for name, param in pl_module.named_parameters():
            if param.grad is not None and not torch.isfinite(param.grad).all():
                raise NonFiniteLossError(
                    f"non-finite gradient in {name!r} at global step {trainer.global_step}"
                )
