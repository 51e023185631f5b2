"""Lightning's W&B logger without its spurious ``anonymous`` warning."""

from __future__ import annotations

import inspect
from typing import Any

from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger


class WandbLogger(LightningWandbLogger):
    """``pytorch_lightning.loggers.WandbLogger`` that leaves W&B's deprecated settings unset.

    Lightning always passes ``anonymous=None`` to ``wandb.init``, and current W&B warns
    "The anonymous setting has no effect" on every run for any value but unset. Every other
    argument is Lightning's; ``mode`` (``offline`` / ``online`` / ``disabled``) is W&B's own.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)

    # the config schema (occaist.schemas) is derived from Lightning's arguments, not *args/**kwargs
    __init__.__signature__ = inspect.signature(LightningWandbLogger.__init__)  # type: ignore[attr-defined]
    __init__.__annotations__ = dict(LightningWandbLogger.__init__.__annotations__)
