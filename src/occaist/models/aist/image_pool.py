"""The image history buffer of CycleGAN (Shrivastava et al.; thesis 6.1.1; upstream ImagePool).

Discriminators are updated with a mix of current and earlier generated images to reduce model
oscillation. Unlike upstream, the pool draws from its own seeded ``torch.Generator`` and has a
``state_dict`` so that a checkpoint holds it and a resumed run continues the same run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class ImagePool:
    """A pool of up to ``pool_size`` generated images, queried once per discriminator update.

    For each image of a queried batch: while the pool holds fewer than ``pool_size`` images the
    image is stored and returned; afterwards, with probability ``swap_probability`` (0.5) a
    random stored image is returned and replaced by the current one, otherwise the current image
    is returned. ``pool_size = 0`` disables the pool (the batch is returned unchanged).
    """

    def __init__(self, pool_size: int = 50, seed: int = 0, swap_probability: float = 0.5) -> None:
        self.pool_size = pool_size
        self.swap_probability = swap_probability
        self.images: list[Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def query(self, images: Tensor) -> Tensor:
        """Images for the discriminator: (B, C, H, W) -> (B, C, H, W), detached."""
        images = images.detach()
        if self.pool_size == 0:
            return images
        out = []
        for image in images:
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                out.append(image)
                continue
            swap = torch.rand((), generator=self.generator).item() < self.swap_probability
            if swap:
                slot = int(torch.randint(self.pool_size, (), generator=self.generator).item())
                out.append(self.images[slot].to(image.device, image.dtype))
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        """Stored images (on CPU), the generator state and the settings (tensors and numbers)."""
        return {
            "pool_size": self.pool_size,
            "swap_probability": self.swap_probability,
            "images": [image.cpu() for image in self.images],
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        """Restore what :meth:`state_dict` returned; images go to ``device`` when given."""
        self.pool_size = int(state["pool_size"])
        self.swap_probability = float(state["swap_probability"])
        self.images = [image.to(device) if device else image for image in state["images"]]
        self.generator.set_state(state["generator"])
