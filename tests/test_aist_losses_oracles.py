"""AIST loss terms against values worked out by hand, and their wiring in ``generator_losses``.

Every tensor handed to ``generator_losses`` is different (x, y, G(x), F(G(x)), F(y), G(F(y))),
every direction has its own weight (lambda_A != lambda_B, lambda_alpha_G != lambda_alpha_F), and
the masks are drawn by hand, so each term's expected value is a number counted from the picture,
not a call to the function under test.

Planted bugs these tests kill: the alpha loss comparing x with F(G(x)) instead of G(x) (or y with
G(F(y))), the G and F weights swapped, the cycle weights swapped, the alpha loss taken as
mean(|d|^2) instead of (mean |d|)^2, the proxy threshold at the wrong side of -1.
"""

from __future__ import annotations

import functools

import pytest
import torch

from occaist.models.aist.losses import (
    PROXY_THRESHOLD,
    PooledFeatures,
    alpha_loss,
    cycle_loss,
    identity_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
)
from occaist.models.aist.module import AISTCycleGAN
from occaist.models.aist.networks import PatchDiscriminator, ResnetGenerator

SIDE = 8  # 8 x 8 images: 64 pixels


def _picture(
    rows: int, cols: int, channels: int = 3, colour: float = 0.3, zoom: int = 1
) -> torch.Tensor:
    """A (1, C, 8 zoom, 8 zoom) image: background -1 (alpha -1), a foreground block of
    (rows x cols) zoom^2 pixels at the top-left with RGB ``colour`` (alpha +1)."""
    side, rows, cols = SIDE * zoom, rows * zoom, cols * zoom
    image = torch.full((1, channels, side, side), -1.0)
    image[:, :3, :rows, :cols] = colour
    if channels == 4:
        image[:, 3, :rows, :cols] = 1.0
    return image


def test_alpha_loss_proxy_hard_by_counting_pixels() -> None:
    x, g = _picture(4, 4), _picture(4, 6)  # 16 vs 24 foreground pixels: 8 differ
    value = alpha_loss(x, g, weight=3.0, mode="proxy_hard", temperature=0.1)
    assert value.item() == pytest.approx(3.0 * (8 / 64) ** 2)  # mean(|d|^2) would be 3 * 8/64


def test_alpha_loss_proxy_hard_counts_any_channel_above_minus_one() -> None:
    x = torch.full((1, 3, SIDE, SIDE), -1.0)
    g = x.clone()
    g[0, 2, 0, :5] = -0.999  # five pixels with only blue above -1: foreground
    g[0, 0, 1, :3] = -1.0  # still background
    value = alpha_loss(x, g, weight=1.0, mode="proxy_hard", temperature=0.1)
    assert value.item() == pytest.approx((5 / 64) ** 2)


def test_alpha_loss_channel_mode_uses_the_alpha_channel_only() -> None:
    x = _picture(2, 8, channels=4)  # 16 pixels alpha 1
    g = x.clone()
    g[:, :3] = torch.linspace(-1, 1, 3 * SIDE * SIDE).view(1, 3, SIDE, SIDE)  # RGB changed
    g[0, 3, 2, :4] = 0.0  # four pixels half transparent: |d| = 1/2 each
    value = alpha_loss(x, g, weight=2.0, mode="channel", temperature=0.1)
    assert value.item() == pytest.approx(2.0 * (4 * 0.5 / 64) ** 2)


def test_proxy_soft_at_the_threshold_is_one_half() -> None:
    at = torch.full((1, 3, SIDE, SIDE), PROXY_THRESHOLD)
    below = torch.full((1, 3, SIDE, SIDE), -1.0)
    # -1 lies below the threshold: |1/2 - sigmoid(-(1/255)/T)| on every pixel
    temperature = 0.01
    d = 0.5 - torch.sigmoid(torch.tensor(-(1 / 255) / temperature)).item()
    value = alpha_loss(at, below, weight=1.0, mode="proxy_soft", temperature=temperature)
    assert value.item() == pytest.approx(d**2, rel=1e-5)
    assert -1.0 < PROXY_THRESHOLD < -1.0 + 2 / 255


def test_cycle_identity_and_lsgan_by_hand() -> None:
    x, r = torch.full((2, 3, 4, 4), 0.5), torch.full((2, 3, 4, 4), 0.25)
    assert cycle_loss(x, r, 7.0).item() == pytest.approx(7.0 * 0.25)
    assert identity_loss(x, r, 7.0, 0.5).item() == pytest.approx(7.0 * 0.5 * 0.25)
    scores = torch.tensor([0.0, 1.0, 3.0, -1.0]).view(4, 1, 1, 1)
    assert lsgan_generator_loss(scores).item() == pytest.approx((1 + 0 + 4 + 4) / 4)
    real, fake = torch.tensor([2.0, 1.0]).view(2, 1, 1, 1), torch.tensor([3.0]).view(1, 1, 1, 1)
    assert lsgan_discriminator_loss(real, fake).item() == pytest.approx(0.5 * (0.5 + 9.0))


WEIGHTS = {
    "lambda_A": 7.0,
    "lambda_B": 11.0,
    "lambda_idt": 0.5,
    "lambda_alpha_G": 3.0,
    "lambda_alpha_F": 5.0,
    "lambda_res_G": 0.0,
    "lambda_res_F": 0.0,
}
TINY = {
    "generator": functools.partial(ResnetGenerator, base_channels=4, num_blocks=1),
    "discriminator": functools.partial(PatchDiscriminator, base_channels=4),
}


@pytest.mark.parametrize("mode", ["proxy_hard", "channel"])
def test_generator_losses_wire_each_term_to_its_own_tensors_and_weight(mode: str) -> None:
    torch.manual_seed(0)
    channels = 4 if mode == "channel" else 3
    model = AISTCycleGAN(alpha_mode=mode, res_weights=None, **TINY, **WEIGHTS)
    model.eval()
    # foreground areas in 64ths: x 16, G(x) 24, F(G(x)) 40, y 20, F(y) 30, G(F(y)) 12; each
    # block contains the smaller ones, so |Alpha(a) - Alpha(b)| is the difference of the areas
    # (32 x 32 images: the PatchGAN needs more than 8 x 8)
    x = _picture(4, 4, channels, colour=0.1, zoom=4)
    fake_y = _picture(4, 6, channels, colour=0.2, zoom=4)
    rec_x = _picture(5, 8, channels, colour=0.3, zoom=4)
    y = _picture(4, 5, channels, colour=0.4, zoom=4)
    fake_x = _picture(5, 6, channels, colour=0.5, zoom=4)
    rec_y = _picture(2, 6, channels, colour=0.6, zoom=4)
    with torch.no_grad():
        terms = model.generator_losses(x, y, fake_y, rec_x, fake_x, rec_y)
        d_y, d_x = model.D_Y(fake_y), model.D_X(fake_x)
        g_of_y, f_of_x = model.G(y), model.F(x)
    assert set(terms) == {"gan_G", "gan_F", "cycle_A", "cycle_B", "alpha_G", "alpha_F"} | {
        "idt_G",
        "idt_F",
    }
    assert terms["alpha_G"].item() == pytest.approx(3.0 * ((24 - 16) / 64) ** 2)
    assert terms["alpha_F"].item() == pytest.approx(5.0 * ((30 - 20) / 64) ** 2)
    assert terms["cycle_A"].item() == pytest.approx(7.0 * _mean_abs(x, rec_x))
    assert terms["cycle_B"].item() == pytest.approx(11.0 * _mean_abs(y, rec_y))
    assert terms["idt_G"].item() == pytest.approx(11.0 * 0.5 * _mean_abs(y, g_of_y), rel=1e-5)
    assert terms["idt_F"].item() == pytest.approx(7.0 * 0.5 * _mean_abs(x, f_of_x), rel=1e-5)
    assert terms["gan_G"].item() == pytest.approx(((d_y - 1) ** 2).mean().item(), rel=1e-5)
    assert terms["gan_F"].item() == pytest.approx(((d_x - 1) ** 2).mean().item(), rel=1e-5)


def _mean_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference, summed pixel by pixel in plain Python."""
    flat_a, flat_b = a.flatten().tolist(), b.flatten().tolist()
    return sum(abs(p - q) for p, q in zip(flat_a, flat_b, strict=True)) / len(flat_a)


def test_lambda_alpha_shorthand_sets_both_directions_and_separate_weights_stay_apart() -> None:
    both = AISTCycleGAN(lambda_alpha=4.0, lambda_res_G=0, lambda_res_F=0, res_weights=None, **TINY)
    assert (both.hparams.lambda_alpha_G, both.hparams.lambda_alpha_F) == (4.0, 4.0)
    apart = AISTCycleGAN(res_weights=None, **TINY, **WEIGHTS)
    assert (apart.hparams.lambda_alpha_G, apart.hparams.lambda_alpha_F) == (3.0, 5.0)


def test_pooled_features_normalise_rgb_only_and_stay_frozen() -> None:
    torch.manual_seed(0)
    # a trunk whose output is known: the identity on 3 channels, so the pooled features are
    # the per-channel means of the ImageNet-normalised [0, 1] image
    trunk = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.Identity())
    pooled = PooledFeatures(trunk)
    pooled.train()
    assert not pooled.trunk.training
    assert not any(p.requires_grad for p in pooled.trunk.parameters())
    image = torch.full((2, 4, 8, 8), -1.0)
    image[0, 0] = 1.0  # red channel of image 0 at 1 -> 1.0 in [0, 1]
    image[1, 2] = 0.0  # blue channel of image 1 at 0 -> 0.5
    image[:, 3] = 0.7  # alpha: ignored
    out = pooled(image)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = torch.tensor(
        [
            [(1.0 - mean[0]) / std[0], (0 - mean[1]) / std[1], (0 - mean[2]) / std[2]],
            [(0 - mean[0]) / std[0], (0 - mean[1]) / std[1], (0.5 - mean[2]) / std[2]],
        ]
    )
    # BatchNorm2d in eval mode with fresh running statistics (mean 0, var 1) is the identity
    torch.testing.assert_close(out, expected / (1 + 1e-5) ** 0.5)
