"""Keep checkpoints loadable with ``weights_only=True`` and able to rebuild their model."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from occaist.utils.checkpoint import CONFIG_KEY, plain


class ConfigInCheckpoint(pl.Callback):
    """On every checkpoint save: plain hyperparameters, and the run's model / data config.

    ``save_hyperparameters`` records the objects Hydra passed to the module (an optimizer
    partial, a scheduler); :func:`~occaist.utils.checkpoint.plain` replaces them by their config
    dicts so that resuming and evaluation load the file with ``weights_only=True``. The resolved
    ``model`` and ``data`` configs (plain containers) go under
    :data:`~occaist.utils.checkpoint.CONFIG_KEY`; evaluation rebuilds the model from them.
    The entry points add this callback to every run, whatever ``callbacks=`` selects.

    Args:
        config: ``{"model": {...}, "data": {...}, "experiment": name or None}``, plain values.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = plain(config)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint:
                checkpoint[key] = plain(checkpoint[key])
        checkpoint[CONFIG_KEY] = self.config
