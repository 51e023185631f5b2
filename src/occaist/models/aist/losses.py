"""AIST loss terms (thesis chapter 4, section 6.1), each a small function of tensors.

Notation as in the thesis: X synthetic renders, Y real segments, G: X -> Y, F: Y -> X,
discriminators D_Y (real) and D_X (synthetic). Images are (B, C, H, W) in [-1, 1]; C is 3 (RGB)
or 4 (RGBA, ``alpha_mode="channel"``). Every mean is over all elements of the batch (upstream's
``nn.L1Loss`` / ``nn.MSELoss`` reduction).

The alpha-loss finding
----------------------
The thesis defines ``Alpha(x)_ij = 1 if any RGB channel of x_ij > -1 else 0`` (section 4.1.1),
a hard threshold. Its derivative is zero everywhere it exists, so
``lambda_Alpha * (mean |Alpha(x) - Alpha(G(x))|)^2`` sends **no gradient** to G: as written the
alpha loss can change nothing during training (its value is only a monitor). Worse, tanh never
reaches -1 exactly, so ``Alpha(G(x))`` is 1 almost everywhere. Three modes are provided:

* ``proxy_soft`` (default): ``Alpha_T(x) = sigmoid((max_c x_c - tau) / T)`` with ``tau``
  halfway between the background value -1 and the darkest colour-corrected foreground value
  ``-1 + 2/255``, and temperature ``T`` from the config. It tends to the thesis's proxy as
  T -> 0 and has a nonzero gradient everywhere.
* ``proxy_hard``: the thesis as written (for comparison; zero gradient).
* ``channel``: true RGBA. The generators have 4 channels and Alpha is the alpha channel
  mapped to [0, 1]; the loss then has the ordinary L1 gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from occaist.utils.weights import load_pretrained

#: The alpha modes (see the module docstring).
ALPHA_MODES = ("proxy_soft", "proxy_hard", "channel")

#: The proxy threshold tau: halfway between background RGB 0 (-> -1) and the darkest
#: colour-corrected foreground RGB 1 (-> -1 + 2/255) in the [-1, 1] scale (thesis 4.1.1.1).
PROXY_THRESHOLD = -1.0 + 1.0 / 255.0

#: ImageNet statistics expected by torchvision's ResNet-18 weights (inputs in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def lsgan_generator_loss(pred_fake: Tensor) -> Tensor:
    """V_LSGAN_G = E[(1 - D_Y(G(x)))^2], mean over the PatchGAN map (thesis 4.3).

    Args:
        pred_fake: discriminator scores of generated images, (B, 1, h, w).
    """
    return torch.mean((pred_fake - 1.0) ** 2)


def lsgan_discriminator_loss(pred_real: Tensor, pred_fake: Tensor) -> Tensor:
    """V_LSGAN_D = 1/2 E[(D(y) - 1)^2] + 1/2 E[D(G(x))^2] (halved, thesis 6.1.1 / upstream).

    Args:
        pred_real: scores of real images of the discriminator's domain, (B, 1, h, w).
        pred_fake: scores of (pooled, detached) generated images, (B', 1, h, w).
    """
    return 0.5 * (torch.mean((pred_real - 1.0) ** 2) + torch.mean(pred_fake**2))


def cycle_loss(x: Tensor, reconstruction: Tensor, weight: float) -> Tensor:
    """V_CYCLE = lambda * E|x - F(G(x))|_1 (lambda_A forward, lambda_B backward; thesis 4.0.2)."""
    return weight * torch.mean(torch.abs(x - reconstruction))


def identity_loss(y: Tensor, same: Tensor, weight: float, lambda_idt: float) -> Tensor:
    """V_Idt_G = lambda_B lambda_idt E|y - G(y)|_1 (and V_Idt_F with lambda_A; thesis 4.0.3)."""
    return weight * lambda_idt * torch.mean(torch.abs(y - same))


def alpha_mask(x: Tensor, mode: str, temperature: float) -> Tensor:
    """Alpha(x) (thesis 4.1.1) in the chosen ``mode``; (B, C, H, W) -> (B, 1, H, W) in [0, 1].

    ``proxy_hard``: 1 where any RGB channel > -1 (zero gradient); ``proxy_soft``:
    ``sigmoid((max_c x_c - tau) / temperature)``; ``channel``: ``(x[:, 3] + 1) / 2``.
    """
    if mode == "channel":
        if x.shape[1] != 4:
            raise ValueError(f"alpha_mode='channel' needs RGBA (4-channel) images, got {x.shape}")
        return (x[:, 3:4] + 1.0) / 2.0
    rgb_max = x[:, :3].amax(dim=1, keepdim=True)  # (B, 1, H, W)
    if mode == "proxy_hard":
        return (rgb_max > -1.0).to(x.dtype)
    if mode == "proxy_soft":
        return torch.sigmoid((rgb_max - PROXY_THRESHOLD) / temperature)
    raise ValueError(f"alpha_mode must be one of {ALPHA_MODES}, got {mode!r}")


def alpha_loss(
    x: Tensor, generated: Tensor, weight: float, mode: str, temperature: float
) -> Tensor:
    """V_Alpha = lambda_Alpha (mean |Alpha(x) - Alpha(G(x))|)^2 (thesis 4.1.1, L1 squared).

    Args:
        x: input images (B, C, H, W); generated: G(x) or F(y), same shape.
        weight: lambda_Alpha_G or lambda_Alpha_F.
        mode, temperature: see :func:`alpha_mask`.
    """
    diff = alpha_mask(x, mode, temperature) - alpha_mask(generated, mode, temperature)
    return weight * torch.mean(torch.abs(diff)) ** 2


def resnet18_trunk(weights_path: str | None) -> nn.Sequential:
    """Phi: torchvision ResNet-18 without its last two layers (avgpool, fc), thesis 4.1.2.

    ``weights_path``: ``"default"`` (torchvision's cache), a file, or ``None`` (random, tests).
    Output: (B, 512, H/32, W/32).
    """
    from torchvision.models import resnet18

    net = load_pretrained(resnet18(weights=None), "resnet18", weights_path)
    return nn.Sequential(*list(net.children())[:-2])


class FeatureDistance(nn.Module):
    """V_ResDist = lambda_Res (mean |Phi(x) - Phi(G(x))|)^2 with a frozen ResNet-18 trunk Phi.

    Inputs in [-1, 1] are mapped to [0, 1] and normalised with the ImageNet statistics; only
    the RGB channels are used. Phi stays in eval mode (batch-norm running statistics frozen)
    whatever the parent module's mode, and its parameters never receive gradients; the
    gradient flows through Phi into the generator.
    """

    def __init__(self, weights_path: str | None = "default") -> None:
        super().__init__()
        self.phi = resnet18_trunk(weights_path)
        self.phi.requires_grad_(False)
        self.phi.eval()
        self.register_buffer(
            "mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> FeatureDistance:
        super().train(mode)
        self.phi.eval()
        return self

    def features(self, x: Tensor) -> Tensor:
        """Phi(x): (B, C, H, W) in [-1, 1] -> (B, 512, H/32, W/32)."""
        rgb = (x[:, :3] + 1.0) / 2.0
        return self.phi((rgb - self.mean) / self.std)

    def forward(self, x: Tensor, generated: Tensor, weight: float) -> Tensor:
        with torch.no_grad():
            target = self.features(x)
        return weight * torch.mean(torch.abs(target - self.features(generated))) ** 2


class PooledFeatures(nn.Module):
    """Global-average-pooled Phi features (B, 512) for torchmetrics FID/KID.

    These are ResNet-18 features, not Inception-v3 ones: FID/KID computed with them are
    comparable only with each other, never with published (Inception) FID values.
    """

    num_features = 512

    def __init__(self, trunk: nn.Sequential) -> None:
        super().__init__()
        self.trunk = trunk
        self.trunk.requires_grad_(False)
        self.trunk.eval()
        self.register_buffer(
            "mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PooledFeatures:
        super().train(mode)
        self.trunk.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        rgb = (x[:, :3].float() + 1.0) / 2.0
        feats = self.trunk((rgb - self.mean) / self.std)
        return F.adaptive_avg_pool2d(feats, 1).flatten(1)
