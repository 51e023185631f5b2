"""The command lines ``train.py`` / ``eval.py`` (and ``occaist-train`` / ``occaist-eval``).

Each wraps a task of :mod:`occaist.tasks` in ``@hydra.main``. The project's own errors about
data, weights, checkpoints and configuration print as one clear message and exit 1; set
``HYDRA_FULL_ERROR=1`` (or ``OCCAIST_TRACEBACK=1``) to see the traceback as well.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from occaist.schemas import register_schemas
from occaist.tasks import (
    NON_FINITE_OBJECTIVE,
    evaluate,
    objective_value,
    record_objective,
    train,
)

__all__ = [
    "NON_FINITE_OBJECTIVE",
    "clear_errors",
    "eval_main",
    "evaluate",
    "objective_value",
    "train",
    "train_main",
]


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that explain themselves: printed without a traceback by the entry points."""
    from occaist.utils.checkpoint import CheckpointError
    from occaist.utils.errors import UserError

    return (UserError, CheckpointError, FileNotFoundError, PermissionError)


def clear_errors(main: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Print a user-facing error as its message alone (exit 1) unless a traceback is asked for."""

    @functools.wraps(main)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return main(cfg)
        except Exception as err:
            cause = _user_error_in(err)
            traceback_asked = os.environ.get("HYDRA_FULL_ERROR") == "1" or os.environ.get(
                "OCCAIST_TRACEBACK"
            )
            if cause is None or traceback_asked:
                raise
            print(f"error: {cause}\n(HYDRA_FULL_ERROR=1 shows the traceback)", file=sys.stderr)
            sys.exit(1)

    return wrapper


def _user_error_in(err: BaseException) -> BaseException | None:
    """``err`` or the user error it wraps (Hydra's instantiate wraps what a constructor raised)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, _user_errors()):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


register_schemas()


@hydra.main(version_base="1.3", config_path="conf", config_name="train.yaml")
@clear_errors
def train_main(cfg: DictConfig) -> float | None:
    """Console script ``occaist-train`` (same as ``python train.py``)."""
    from hydra.core.hydra_config import HydraConfig

    metrics, _ = train(cfg)
    name = cfg.get("optimized_metric")
    if not name:
        return None
    hydra_cfg = HydraConfig.get()
    direction = str(hydra_cfg.sweeper.get("direction", "minimize"))
    value = objective_value(metrics, name, direction)
    if hydra_cfg.mode.name == "MULTIRUN":
        record_objective(name, value, list(hydra_cfg.overrides.task), Path(hydra_cfg.sweep.dir))
    return value


@hydra.main(version_base="1.3", config_path="conf", config_name="eval.yaml")
@clear_errors
def eval_main(cfg: DictConfig) -> None:
    """Console script ``occaist-eval`` (same as ``python eval.py``)."""
    evaluate(cfg)
