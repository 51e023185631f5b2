"""AIST: the stylised image G(x) of any image, its alpha channel kept.

The generator is loaded by :func:`occaist.stylize.load_generator` (weights only, G alone: no
discriminators, no feature network). Every image is prepared as the CycleGAN's training data
(``occaist.data.unpaired``): centred in a transparent square, resized to the training size,
transparent pixels' RGB cleared, colour corrected. G's output is resized back to the square,
cropped to the image, and the input's alpha is put back unchanged (an RGB photo keeps its
opaque alpha). This is :meth:`AISTCycleGAN.predict_step` (G in eval mode) on any image size.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from occaist.data.rgba import clear_background, color_correct, resize_rgba
from occaist.data.unpaired import to_tensor
from occaist.predict.base import Predictor, SquareFrame
from occaist.predict.inputs import DecodedInput
from occaist.predict.overlays import side_by_side
from occaist.predict.writers import output_path, write_png


def prepare_like_training(
    rgba: np.ndarray, size: int, channels: int
) -> tuple[torch.Tensor, dict[str, Any]]:
    """``(channels, size, size)`` in [-1, 1] from any ``rgba`` (module docstring)."""
    frame = SquareFrame(*rgba.shape[:2])
    square = resize_rgba(frame.pad(rgba, fill=0), size)
    return to_tensor(color_correct(clear_background(square)), channels), {"frame": frame}


class AISTPredictor(Predictor):
    """Predictions of :class:`~occaist.models.AISTCycleGAN` (module docstring)."""

    module_class: ClassVar[str] = "occaist.models.aist.module.AISTCycleGAN"
    name: ClassVar[str] = "aist"

    @classmethod
    def load(cls, cfg: DictConfig, device: torch.device) -> Any:
        from occaist.stylize import load_generator

        generator, settings = load_generator(cfg.ckpt_path)
        size = settings["data"].get("image_size") or cfg.data.get("image_size")
        generator.image_size = int(size)  # the side G was trained at
        return generator.to(device)

    def prepare_fn(self):
        return functools.partial(
            prepare_like_training,
            size=self.model.image_size,
            channels=self.model.in_channels,
        )

    def collate(self, items: list[DecodedInput]) -> torch.Tensor:
        return torch.stack([item.tensor for item in items]).to(self.device)

    @torch.no_grad()
    def predict(self, items: list[DecodedInput], batch_idx: int) -> list[torch.Tensor]:
        return list(self.model(self.collate(items)).float())  # (C, s, s) each, in [-1, 1]

    def write(self, item: DecodedInput, result: torch.Tensor) -> None:
        frame: SquareFrame = item.meta["frame"]
        side = (frame.side, frame.side)
        square = F.interpolate(result[None, :3], size=side, mode="bicubic", antialias=True)[0]
        rgb = ((square + 1.0) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0)
        stylized = np.dstack([frame.crop(rgb.cpu().numpy()), item.rgba[..., 3]])
        write_png(output_path(self.output, "stylized", item.file.key, ".png"), stylized)
        if self.save_overlays:
            panel = side_by_side([item.rgba, stylized])
            write_png(output_path(self.output, "overlays", item.file.key, ".png"), panel)
