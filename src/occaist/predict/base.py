"""What every model's predictor shares: the contract, checkpoint loading, square framing.

A :class:`Predictor` wraps one trained LightningModule. The runner (:mod:`occaist.predict.run`)
lists and decodes the images, then for every batch calls

1. ``prepare(rgba) -> (tensor, meta)`` on each decoded image (in the data-loader workers),
2. :meth:`Predictor.predict` -> the module's own ``predict_step`` on the collated batch,
3. :meth:`Predictor.write` with each image's result (result files, overlays),

and :meth:`Predictor.finish` once at the end (files that gather every image: COCO results, BOP
CSV). Modules compute; only predictors open files.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from occaist.predict.inputs import DecodedInput

Prepare = Callable[[np.ndarray], tuple[Any, dict[str, Any]]]


@dataclass(frozen=True)
class SquareFrame:
    """Where an ``height x width`` image sits in the square of side ``max(height, width)`` it was
    padded to (centred: ``top``/``left`` pixels before it)."""

    height: int
    width: int

    @property
    def side(self) -> int:
        return max(self.height, self.width)

    @property
    def top(self) -> int:
        return (self.side - self.height) // 2

    @property
    def left(self) -> int:
        return (self.side - self.width) // 2

    def pad(self, array: np.ndarray, fill: float | tuple = 0) -> np.ndarray:
        """``(H, W, C)`` -> ``(S, S, C)`` with the image centred and ``fill`` around it."""
        out = np.empty((self.side, self.side, array.shape[2]), dtype=array.dtype)
        out[...] = fill
        out[self.top : self.top + self.height, self.left : self.left + self.width] = array
        return out

    def crop(self, square: np.ndarray) -> np.ndarray:
        """The image's region of an ``(S, S, ...)`` array given at side ``S`` (resize first)."""
        return square[self.top : self.top + self.height, self.left : self.left + self.width]

    def to_dict(self) -> dict[str, int]:
        return {"height": self.height, "width": self.width}


def resize_float(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of an ``(H, W)`` or ``(H, W, C)`` float array to ``size`` = (H', W')."""
    channels = [array] if array.ndim == 2 else [array[..., c] for c in range(array.shape[2])]
    out = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(c, dtype=np.float32), mode="F").resize(
                (size[1], size[0]), Image.Resampling.BICUBIC
            )
        )
        for c in channels
    ]
    return out[0] if array.ndim == 2 else np.stack(out, axis=-1)


class Predictor:
    """One model's predictions on decoded images (module docstring).

    Subclasses set :attr:`module_class` (the ``_target_`` class they serve, by import path) and
    implement :meth:`load`, :meth:`prepare_fn`, :meth:`collate`, :meth:`write`, and, when they
    gather results, :meth:`finish`.

    Args:
        model: the module (or network) in eval mode on ``device``.
        cfg: the composed predict config (``model``, ``data``, the predict options).
        output: the output folder.
        device: where the model runs.
    """

    module_class: ClassVar[str] = ""
    #: Short name used in logs and the summary.
    name: ClassVar[str] = ""

    def __init__(self, model: Any, cfg: DictConfig, output: Path, device: torch.device) -> None:
        self.model = model
        self.cfg = cfg
        self.output = output
        self.device = device
        self.save_overlays = bool(cfg.save_overlays)

    @classmethod
    def load(cls, cfg: DictConfig, device: torch.device) -> Any:
        """The module ``cfg.ckpt_path`` was trained as, with its weights, in eval mode.

        The checkpoint is read with ``weights_only=True``; the model is rebuilt from the config
        stored in it (:func:`occaist.tasks.model_from_checkpoint`, as ``eval.py`` does), or from
        ``cfg.model`` for a checkpoint without one.
        """
        from occaist.tasks import model_from_checkpoint
        from occaist.utils.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(cfg.ckpt_path)
        model = model_from_checkpoint(cfg, checkpoint)
        model.load_state_dict(checkpoint["state_dict"])
        return model.to(device).eval()

    def prepare_fn(self) -> Prepare:
        """A picklable ``rgba -> (tensor, meta)`` run in the data-loader workers."""
        raise NotImplementedError

    def collate(self, items: list[DecodedInput]) -> Any:
        """The ``predict_step`` batch of the decoded good ``items``."""
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, items: list[DecodedInput], batch_idx: int) -> list[Any]:
        """The module's ``predict_step`` on ``items``: one result per item."""
        return self.model.predict_step(self.collate(items), batch_idx)

    def write(self, item: DecodedInput, result: Any) -> None:
        """Write the result files (and, with ``save_overlays``, the pictures) of one image."""
        raise NotImplementedError

    def finish(self) -> dict[str, str]:
        """Write files gathering every image; returns ``{what: path}`` for the summary."""
        return {}


def import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@functools.cache
def _predictor_classes() -> tuple[type[Predictor], ...]:
    from occaist.predict.aist import AISTPredictor
    from occaist.predict.dpc import PointCloudPredictor
    from occaist.predict.occlusion_net import OcclusionNetPredictor
    from occaist.predict.pose_regression import PosePredictor

    return (PointCloudPredictor, OcclusionNetPredictor, AISTPredictor, PosePredictor)


def predictor_for(target: str) -> type[Predictor]:
    """The predictor of the module class ``target`` (a ``_target_`` import path).

    Raises:
        ValueError: no predictor serves that class (the message lists those that exist).
    """
    module_cls = import_class(target)
    for predictor in _predictor_classes():
        if issubclass(module_cls, import_class(predictor.module_class)):
            return predictor
    served = ", ".join(p.module_class.rpartition(".")[2] for p in _predictor_classes())
    raise ValueError(f"no predictor for {target}; predict serves {served}")
