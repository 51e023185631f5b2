"""On-the-fly domain randomisation of a training batch (seed 004, "Domain Randomization").

The seed randomises the background, the object and the lights of every rendered training image.
The world's ``train_dr`` split bakes one randomisation into each of its images, so a network
trained on it sees each randomised image about 80 times in a CPU budget and learns to recognise
them (docs/pose_regression.md, "Diagnosis"). :class:`DomainRandomizer` draws a fresh
randomisation at every training step from the image and its visible object mask, in torch, on
the batch's device (batched: one call per batch, no Python loop over images):

- **background** (pixels outside the mask): a random procedural texture (flat colour, linear
  gradient, stripes, checkers, smooth colour noise) with random rectangles of clutter;
- **object** (pixels inside the mask): a random hue rotation, saturation and brightness, random
  per-channel gains (a coloured light) and a random linear shading ramp across the object (a
  light from a random side). The colours of the object's parts change together, so the contrast
  between its parts (the printed box's differently coloured faces, the car's dark windows) stays:
  it is what tells a box from its half-turned copy. (The baked ``train_dr`` split gives every
  material an independent random colour instead; see docs/pose_regression.md.)

Geometry is unchanged, so the pose labels stay exact. Deviation from the seed: lights are
approximated in image space (gains and a ramp) instead of re-rendered, because the renderer's
normals are not part of a BOP image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DomainRandomizer", "random_backgrounds"]

_KINDS = 5  # flat, gradient, stripes, checkers, smooth noise


def _uniform(shape: tuple[int, ...], low: float, high: float, like: Tensor) -> Tensor:
    return torch.rand(shape, device=like.device, dtype=like.dtype) * (high - low) + low


def random_backgrounds(
    batch: int, height: int, width: int, like: Tensor, max_rectangles: int = 5
) -> Tensor:
    """Random procedural textures ``(B, 3, H, W)`` in [0, 1] (sRGB), one kind per image.

    ``like`` gives the device and dtype.
    """
    ys = torch.linspace(0, 1, height, device=like.device, dtype=like.dtype)[:, None]
    xs = torch.linspace(0, 1, width, device=like.device, dtype=like.dtype)[None, :]
    kind = torch.randint(_KINDS, (batch,), device=like.device)
    a = _uniform((batch, 3, 1, 1), 0, 1, like)
    b = _uniform((batch, 3, 1, 1), 0, 1, like)
    out = a.expand(batch, 3, height, width).clone()  # kind 0: flat
    # every other kind is computed only for the images that drew it
    for k in range(1, _KINDS):
        idx = (kind == k).nonzero().flatten()
        n = len(idx)
        if n == 0:
            continue
        shape4 = (n, 1, 1, 1)
        angle = _uniform(shape4, 0, 2 * math.pi, like)
        along = torch.cos(angle) * (xs - 0.5) + torch.sin(angle) * (ys - 0.5)  # (n, 1, H, W)
        if k == 1:  # linear gradient
            t = (0.5 + along).clamp(0, 1)
        elif k == 2:  # stripes
            t = 0.5 + 0.5 * torch.sin(2 * math.pi * _uniform(shape4, 2, 20, like) * along)
        elif k == 3:  # checkers
            cells = _uniform(shape4, 2, 12, like)
            t = (torch.floor(xs * cells) + torch.floor(ys * cells)) % 2
        if k < 4:
            out[idx] = a[idx] + (b[idx] - a[idx]) * t
            continue
        # smooth colour noise: a coarse and a fine random field, mixed
        mix = _uniform(shape4, 0, 1, like)
        coarse = torch.rand(n, 3, 3, 3, device=like.device, dtype=like.dtype)
        fine = torch.rand(n, 3, 12, 12, device=like.device, dtype=like.dtype)
        out[idx] = mix * F.interpolate(
            coarse, (height, width), mode="bilinear", align_corners=True
        ) + (1 - mix) * F.interpolate(fine, (height, width), mode="bilinear", align_corners=True)
    shape4 = (batch, 1, 1, 1)
    for _ in range(max_rectangles):  # clutter; each rectangle drawn with probability 1/2
        x0, y0 = _uniform(shape4, 0, 1, like), _uniform(shape4, 0, 1, like)
        w, h = _uniform(shape4, 0.1, 0.5, like), _uniform(shape4, 0.1, 0.5, like)
        on = (torch.rand(shape4, device=like.device) < 0.5).to(like.dtype)
        inside = ((xs >= x0) & (xs < x0 + w) & (ys >= y0) & (ys < y0 + h)).to(like.dtype) * on
        out = out + inside * (_uniform((batch, 3, 1, 1), 0, 1, like) - out)
    return out.clamp(0, 1)


def _rotate_hue(rgb: Tensor, angle: Tensor) -> Tensor:
    """Rotate ``rgb`` (B, 3, H, W) about the grey axis by ``angle`` (B,) radians (a hue shift
    that keeps brightness and saturation; Rodrigues' formula in RGB space)."""
    k = torch.full((3,), 1 / math.sqrt(3), device=rgb.device, dtype=rgb.dtype)
    cos, sin = torch.cos(angle)[:, None, None, None], torch.sin(angle)[:, None, None, None]
    dot = (rgb * k[:, None, None]).sum(1, keepdim=True)
    cross = torch.stack(
        (
            k[1] * rgb[:, 2] - k[2] * rgb[:, 1],
            k[2] * rgb[:, 0] - k[0] * rgb[:, 2],
            k[0] * rgb[:, 1] - k[1] * rgb[:, 0],
        ),
        dim=1,
    )
    return rgb * cos + cross * sin + k[:, None, None] * dot * (1 - cos)


class DomainRandomizer(nn.Module):
    """Fresh background, object colour and light randomisation per image and step.

    Args:
        p_background: probability of replacing an image's background.
        p_object: probability of recolouring an image's object.
        hue: largest hue rotation (fraction of a full turn; 0.5 = any hue).
        saturation: range of the saturation factor.
        brightness: range of the object's brightness factor.
        channel_gain: largest relative change of one colour channel (coloured light).
        shading: largest brightness change of the shading ramp from the object's centre to its
            edge (a light from one side).
        max_rectangles: clutter rectangles drawn on a background (each with probability 1/2).
    """

    def __init__(
        self,
        p_background: float = 1.0,
        p_object: float = 0.8,
        hue: float = 0.5,
        saturation: tuple[float, float] = (0.4, 1.3),
        brightness: tuple[float, float] = (0.5, 1.4),
        channel_gain: float = 0.25,
        shading: float = 0.4,
        max_rectangles: int = 5,
    ) -> None:
        super().__init__()
        self.p_background = p_background
        self.p_object = p_object
        self.hue = hue
        self.saturation = tuple(saturation)
        self.brightness = tuple(brightness)
        self.channel_gain = channel_gain
        self.shading = shading
        self.max_rectangles = max_rectangles

    def recolour(self, image: Tensor, mask: Tensor) -> Tensor:
        """The objects of ``image`` (B, 3, H, W) recoloured (only where ``mask`` (B, 1, H, W))."""
        B, _, H, W = image.shape
        angle = _uniform((B,), -1, 1, image) * (2 * math.pi * self.hue)
        out = _rotate_hue(image, angle)
        grey = out.mean(1, keepdim=True)
        out = grey + (out - grey) * _uniform((B, 1, 1, 1), *self.saturation, image)
        gain = _uniform((B, 1, 1, 1), *self.brightness, image) * _uniform(
            (B, 3, 1, 1), 1 - self.channel_gain, 1 + self.channel_gain, image
        )
        # a shading ramp across the object: 1 at its centre, 1 ± shading at its edge
        ys = torch.arange(H, device=image.device, dtype=image.dtype)[:, None]
        xs = torch.arange(W, device=image.device, dtype=image.dtype)[None, :]
        area = mask.sum((2, 3), keepdim=True).clamp_min(1)
        cy, cx = (
            (mask * ys).sum((2, 3), keepdim=True) / area,
            (mask * xs).sum((2, 3), keepdim=True) / area,
        )
        radius = area.sqrt()
        direction = _uniform((B, 1, 1, 1), 0, 2 * math.pi, image)
        ramp = (torch.cos(direction) * (xs - cx) + torch.sin(direction) * (ys - cy)) / radius
        ramp = 1 + self.shading * _uniform((B, 1, 1, 1), 0, 1, image) * ramp.clamp(-1, 1)
        out = (out * gain * ramp).clamp(0, 1)
        on = (torch.rand(B, 1, 1, 1, device=image.device) < self.p_object).to(image.dtype)
        return image + on * mask * (out - image)

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        """``image`` (B, 3, H, W) in [0, 1] and the object's visible ``mask`` (B, 1, H, W) ->
        the randomised image (B, 3, H, W)."""
        B, _, H, W = image.shape
        mask = mask.to(image.dtype)
        out = self.recolour(image, mask)
        background = random_backgrounds(B, H, W, image, self.max_rectangles)
        # a soft edge (3x3 mean of the mask) so that no hard cut-out outline marks the object
        alpha = F.avg_pool2d(mask, 3, stride=1, padding=1, count_include_pad=False)
        alpha = torch.maximum(alpha, mask)
        on = (torch.rand(B, 1, 1, 1, device=image.device) < self.p_background).to(image.dtype)
        return out + on * (1 - alpha) * (background - out)
