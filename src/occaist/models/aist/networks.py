"""CycleGAN networks of AIST (thesis sections 4.2 and 4.3): ResNet generator, 70x70 PatchGAN.

Both follow junyanz/pytorch-CycleGAN-and-pix2pix (``resnet_9blocks``, ``basic`` with
``n_layers=3``, ``--norm instance``) layer for layer, so the parameter counts match upstream
(3-channel generator 11,378,179; discriminator 2,764,737). Differences are config switches:

* ``activation``: the thesis describes LeakyReLU with slope 0.01 after every generator
  convolution (``"leaky_relu"``, the default); upstream uses ReLU (``"relu"``).
* ``in_channels`` / ``out_channels``: 3 (RGB, the thesis) or 4 (RGBA, ``alpha_mode=channel``).
* ``base_channels`` / ``num_blocks``: 64 / 9 as published; tests shrink them for speed.
* ``output``: ``"tanh"`` (upstream) maps the last convolution through tanh, so a freshly
  initialised generator outputs a near-constant grey image and must learn the identity before it
  can keep anything of the render; at CPU budgets (a few hundred batches) it never does, and the
  colours and shading are lost. ``"residual"`` starts as the identity:
  ``G(x) = tanh(atanh(x) + r(x))`` with the last convolution of ``r`` initialised to zero, so
  the network learns only the change of style (the background value -1 stays below the
  thesis's Alpha threshold unless ``r`` moves it by more than 0.7 in the atanh domain).
* ``keep_background``: copy the input's background pixels (every RGB channel, or alpha, at
  most 1/255 above -1: transparent after colour correction) to the output, and give a
  foreground pixel that turned black the darkest colour-corrected value (8-bit 1 in each
  channel, as the data's colour correction does), so G(x) has exactly the silhouette of x.
  Off upstream;
  the thesis's alpha loss asks for the same thing softly.
* ``input_skip``: the last 7x7 convolution takes the input image beside the features
  (``ngf + c_in`` input channels). Instance normalisation divides every feature map by its
  per-image spread, so the rest of the network sees where a colour changes but hardly what the
  colour is: on a uniformly painted car on black, the first layer's normalised features are
  the same for a dark and a bright car of one hue. Without the skip, a residual generator can
  add shapes (a sheen along the edges) but not map one paint to another; with it, the change
  can depend on the pixel's own colour. Off upstream.
* discriminator ``norm``: ``"instance"`` (upstream) or ``"none"`` (no normalisation after
  the discriminator's convolutions). Off upstream; docs/aist.md has what it changed.
* ``upsampling``: ``"transposed"`` (upstream, stride-2 transposed convolutions) or
  ``"resize_conv"`` (nearest-neighbour x2 then a 3x3 convolution), which avoids the
  checkerboard pattern of uneven transposed-convolution overlap (Odena et al., Distill 2016).

Pure torch: no Lightning, no Hydra.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

#: Activations the generator can use (thesis: leaky ReLU 0.01; upstream: ReLU).
GENERATOR_ACTIVATIONS = ("leaky_relu", "relu")
#: Generator outputs: upstream's tanh, or the identity-start residual (module docstring).
GENERATOR_OUTPUTS = ("tanh", "residual")
#: Generator upsampling layers: upstream's transposed convolutions, or resize + convolution.
GENERATOR_UPSAMPLINGS = ("transposed", "resize_conv")
#: Discriminator normalisations: upstream's instance norm, or none (module docstring).
DISCRIMINATOR_NORMS = ("instance", "none")
#: |x| is clamped to 1 - RESIDUAL_EPS before atanh in the ``residual`` output (atanh(±1) = ±inf).
RESIDUAL_EPS = 1e-3
#: Values at most this are background (transparent, RGB 0 after colour correction) in [-1, 1].
BACKGROUND_MAX = -1.0 + 1.0 / 255.0
#: The darkest foreground value after colour correction (8-bit 1) in [-1, 1]; ``keep_background``
#: keeps the foreground at least this bright.
FOREGROUND_MIN = -1.0 + 2.0 / 255.0


def make_activation(name: str, negative_slope: float) -> nn.Module:
    """``nn.LeakyReLU(negative_slope)`` for ``"leaky_relu"``, ``nn.ReLU()`` for ``"relu"``."""
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope, inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"activation must be one of {GENERATOR_ACTIVATIONS}, got {name!r}")


def instance_norm(channels: int) -> nn.InstanceNorm2d:
    """Non-affine instance normalisation without running statistics (upstream ``instance``)."""
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


def init_weights(net: nn.Module, std: float = 0.02) -> nn.Module:
    """Conv / ConvTranspose / Linear weights ~ N(0, std), biases 0 (upstream ``init_type normal``).

    The thesis (6.1.1) and upstream both use std 0.02 ("variance 0.02" in the thesis is the
    upstream ``init_gain``, which is a standard deviation).
    """
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return net


class ResnetBlock(nn.Module):
    """``x + [ReflPad1, Conv3x3, IN, act, ReflPad1, Conv3x3, IN](x)`` (thesis Figure 4.1).

    No activation after the addition, as upstream. Shape preserved: (B, C, H, W).
    """

    def __init__(self, channels: int, activation: str, negative_slope: float) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3),
            instance_norm(channels),
            make_activation(activation, negative_slope),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3),
            instance_norm(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """The generator G (synthetic -> real) or F (real -> synthetic), thesis section 4.2.

    ``ReflPad3, Conv7x7(c_in->ngf), IN, act``; two ``Conv3x3 s2`` (ngf -> 2ngf -> 4ngf) with IN,
    act; ``num_blocks`` residual blocks at 4ngf; two ``ConvT3x3 s2`` back to ngf with IN, act;
    ``ReflPad3, Conv7x7(ngf->c_out), tanh``. Every conv has a bias (instance norm is non-affine).

    Args:
        in_channels: 3 (RGB) or 4 (RGBA).
        out_channels: 3 or 4, normally equal to ``in_channels``.
        base_channels: ngf, 64 published.
        num_blocks: residual blocks, 9 published.
        activation: ``"leaky_relu"`` (thesis) or ``"relu"`` (upstream).
        negative_slope: leaky ReLU slope, 0.01 in the thesis.
        output: ``"tanh"`` (upstream) or ``"residual"`` (identity at initialisation; needs
            ``in_channels == out_channels``).
        upsampling: ``"transposed"`` (upstream) or ``"resize_conv"``.
        keep_background: copy the input's background to the output (module docstring).
        input_skip: the last convolution also takes the input image (module docstring).

    Input (B, c_in, H, W) in [-1, 1] with H, W multiples of 4; output (B, c_out, H, W) in (-1, 1).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        base_channels: int = 64,
        num_blocks: int = 9,
        activation: str = "leaky_relu",
        negative_slope: float = 0.01,
        output: str = "tanh",
        upsampling: str = "transposed",
        keep_background: bool = False,
        input_skip: bool = False,
    ) -> None:
        super().__init__()
        if output not in GENERATOR_OUTPUTS:
            raise ValueError(f"output must be one of {GENERATOR_OUTPUTS}, got {output!r}")
        if upsampling not in GENERATOR_UPSAMPLINGS:
            raise ValueError(
                f"upsampling must be one of {GENERATOR_UPSAMPLINGS}, got {upsampling!r}"
            )
        if output == "residual" and in_channels != out_channels:
            raise ValueError("output='residual' needs in_channels == out_channels")
        ngf = base_channels
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, kernel_size=7),
            instance_norm(ngf),
            make_activation(activation, negative_slope),
        ]
        for mult in (1, 2):  # two stride-2 downsamplings: ngf -> 2 ngf -> 4 ngf
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1),
                instance_norm(ngf * mult * 2),
                make_activation(activation, negative_slope),
            ]
        layers += [ResnetBlock(ngf * 4, activation, negative_slope) for _ in range(num_blocks)]
        for mult in (4, 2):  # two x2 upsamplings back: 4 ngf -> 2 ngf -> ngf
            layers += [
                *_upsample(ngf * mult, ngf * mult // 2, upsampling),
                instance_norm(ngf * mult // 2),
                make_activation(activation, negative_slope),
            ]
        last = nn.Conv2d(ngf + (in_channels if input_skip else 0), out_channels, kernel_size=7)
        head: list[nn.Module] = [nn.ReflectionPad2d(3), last]
        if output == "tanh":
            head.append(nn.Tanh())
        if input_skip:  # the head is applied to [features, x] in forward
            self.model = nn.Sequential(*layers)
            self.head = nn.Sequential(*head)
        else:  # upstream's single Sequential (its state-dict keys)
            self.model = nn.Sequential(*layers, *head)
        self.input_skip = input_skip
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.output = output
        self.keep_background = keep_background
        init_weights(self)
        if output == "residual":  # r(x) = 0 at initialisation: G starts as the identity
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"height and width must be multiples of 4, got {tuple(x.shape[-2:])}")
        if self.output == "residual":
            base = torch.atanh(x.float().clamp(-1.0 + RESIDUAL_EPS, 1.0 - RESIDUAL_EPS))
            out = torch.tanh(base + self._body(x).float()).to(x.dtype)
        else:
            out = self._body(x)
        if self.keep_background:
            mask = slice(3, 4) if x.shape[1] == 4 else slice(0, 3)  # alpha, or the RGB proxy
            background = x[:, mask].amax(dim=1, keepdim=True) <= BACKGROUND_MAX  # (B, 1, H, W)
            # a foreground pixel that turned black (or transparent) gets the colour-corrected
            # minimum in its mask channels, as the data's colour correction does: (1, 1, 1)
            dark = out[:, mask].amax(dim=1, keepdim=True) < FOREGROUND_MIN
            lifted = out.clone()
            lifted[:, mask] = out[:, mask].clamp_min(FOREGROUND_MIN)
            out = torch.where(background, x.to(out.dtype), torch.where(dark, lifted, out))
        return out

    def _body(self, x: Tensor) -> Tensor:
        """The convolutional network (with its tanh in ``tanh`` output)."""
        if self.input_skip:
            features = self.model(x)
            return self.head(torch.cat([features, x.to(features.dtype)], dim=1))
        return self.model(x)


def _upsample(in_channels: int, out_channels: int, mode: str) -> list[nn.Module]:
    """A x2 upsampling layer: upstream's ``ConvT3x3 s2`` or nearest x2 + ``ReflPad1, Conv3x3``."""
    if mode == "transposed":
        return [
            nn.ConvTranspose2d(
                in_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1
            )
        ]
    return [
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.ReflectionPad2d(1),
        nn.Conv2d(in_channels, out_channels, kernel_size=3),
    ]


class PatchDiscriminator(nn.Module):
    """The 70x70 PatchGAN D_X / D_Y, thesis section 4.3 (upstream ``NLayerDiscriminator``).

    ``Conv4x4 s2 (c_in->ndf), LReLU 0.2``; ``num_layers - 1`` more ``Conv4x4 s2`` doubling the
    channels (capped at 8 ndf) with IN, LReLU; ``Conv4x4 s1`` (-> min(2^L, 8) ndf), IN, LReLU;
    ``Conv4x4 s1 (->1)``. Zero padding 1 everywhere, no sigmoid (LSGAN works on raw scores).

    Input (B, c_in, H, W); output (B, 1, H/8 - 2, W/8 - 2): 30x30 at 256x256, 14x14 at 128x128.
    ``norm="none"`` drops the instance norms (an ``nn.Identity`` in their place, so the layer
    indices stay upstream's; module docstring).
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 64,
        num_layers: int = 3,
        negative_slope: float = 0.2,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        if norm not in DISCRIMINATOR_NORMS:
            raise ValueError(f"norm must be one of {DISCRIMINATOR_NORMS}, got {norm!r}")
        ndf = base_channels
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(negative_slope, inplace=True),
        ]
        mult = 1
        for n in range(1, num_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < num_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=stride, padding=1),
                instance_norm(ndf * mult) if norm == "instance" else nn.Identity(),
                nn.LeakyReLU(negative_slope, inplace=True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def build_partial(spec: Any, default: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """A network builder from a partial (Hydra ``_partial_: true``), its config dict (as a
    checkpoint stores it: ``{"_target_": ..., "_partial_": True, **keywords}``) or ``None``
    (``default`` with its defaults). Only classes of this module are accepted by name."""
    if spec is None:
        return default
    if callable(spec):
        return spec
    keywords = {k: v for k, v in dict(spec).items() if k not in ("_target_", "_partial_")}
    target = str(spec.get("_target_", ""))
    classes = {f"{__name__}.{c.__name__}": c for c in (ResnetGenerator, PatchDiscriminator)}
    if target not in classes:
        raise ValueError(f"unknown network {target!r}; expected one of {sorted(classes)}")
    return functools.partial(classes[target], **keywords)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
