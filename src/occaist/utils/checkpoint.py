"""Checkpoints that load safely: plain hyperparameters, the model's config kept, clear errors.

PyTorch loads checkpoints with ``weights_only=True``: only tensors and plain Python values may be
in them. A LightningModule built by Hydra receives objects (an optimizer partial, a network), and
``save_hyperparameters`` would pickle those; :func:`plain` turns them back into the config dicts
they came from (``{"_target_": ..., "_partial_": true, ...}``), so every checkpoint of the project
loads with ``weights_only=True``, for resuming as for evaluation.

:class:`~occaist.callbacks.ConfigInCheckpoint` stores, next to the weights, the resolved config
of the model (and of the data) that the run was composed with, under :data:`CONFIG_KEY`; that is
what :func:`model_config` returns, so evaluation and prediction rebuild the model the checkpoint
was trained as, whatever experiment the command names.
"""

from __future__ import annotations

import functools
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Checkpoint entry ``{"model": <config>, "data": <config>, "experiment": name or None}``.
CONFIG_KEY = "occaist_config"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete, unsafe to load or of another model."""


def qualified_name(obj: Any) -> str:
    """``module.QualName`` of a class or function (what a ``_target_`` names)."""
    return f"{obj.__module__}.{obj.__qualname__}"


def plain(value: Any) -> Any:
    """``value`` with every object replaced by plain data a ``weights_only`` load accepts.

    ``functools.partial`` -> ``{"_target_": name, "_partial_": True, **keywords}``; an OmegaConf
    node -> its container; a mapping / list / tuple -> the same of plain values; tensors, numbers,
    strings, booleans and ``None`` are kept; anything else (an ``nn.Module``, an object) ->
    ``{"_target_": class name}``, marking what was there without pickling it.
    """
    import torch
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, functools.partial):
        out = {"_target_": qualified_name(value.func), "_partial_": True}
        out.update({str(k): plain(v) for k, v in value.keywords.items()})
        return out
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return {"_target_": qualified_name(type(value))}


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; clear errors for missing or broken files."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; pass ckpt_path=<run dir>/checkpoints/last.ckpt"
        )
    if path.stat().st_size == 0 or not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"checkpoint {path} is incomplete or not a PyTorch checkpoint ({path.stat().st_size} "
            "bytes; truncated by a full disk or a killed copy?). Use another checkpoint of the "
            "run (checkpoints/*.ckpt) or retrain."
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded safely (weights_only=True): "
            f"{type(err).__name__}: {str(err).splitlines()[0]}. Checkpoints written by occaist "
            "before plain hyperparameters need re-saving: load them once with "
            "torch.load(path, weights_only=False) only if you trust the file."
        ) from err


def model_config(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The model config stored by :class:`~occaist.callbacks.ConfigInCheckpoint`, if any."""
    stored = checkpoint.get(CONFIG_KEY) or {}
    return stored.get("model")


def config_differences(
    expected: Mapping[str, Any], found: Mapping[str, Any], prefix: str = ""
) -> list[str]:
    """``key: expected -> found`` lines for every leaf where two nested configs differ."""
    lines = []
    for key in sorted(set(expected) | set(found)):
        name = f"{prefix}{key}"
        a, b = expected.get(key, "<absent>"), found.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            lines += config_differences(a, b, prefix=f"{name}.")
        elif a != b:
            lines.append(f"{name}: {a!r} -> {b!r}")
    return lines
