"""Rank-aware logging: messages from rank 0 only unless asked otherwise."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any


def _rank() -> int:
    try:
        from lightning_fabric.utilities.rank_zero import rank_zero_only
    except ImportError:  # Lightning is a dependency, but logging must work without importing it
        return 0
    return int(getattr(rank_zero_only, "rank", 0) or 0)


class RankedLogger(logging.LoggerAdapter):
    """A logger that prefixes the rank; logs on rank 0 only unless ``rank_zero_only=False``."""

    def __init__(
        self,
        name: str = __name__,
        rank_zero_only: bool = True,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(logging.getLogger(name), extra or {})
        self.rank_zero_only = rank_zero_only

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        rank = _rank()
        if self.rank_zero_only and rank != 0:
            return
        msg, kwargs = self.process(msg, kwargs)
        self.logger.log(level, f"[rank: {rank}] {msg}", *args, **kwargs)


def get_logger(name: str) -> logging.Logger:
    """The plain module logger used by library code that runs outside Lightning (synth, prep)."""
    return logging.getLogger(name)
