"""AIST networks: published parameter counts, output shapes, activations, initialisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from occaist.models.aist.networks import (
    PatchDiscriminator,
    ResnetGenerator,
    count_parameters,
    init_weights,
)


def test_parameter_counts_match_upstream():
    assert count_parameters(ResnetGenerator()) == 11_378_179
    assert count_parameters(PatchDiscriminator()) == 2_764_737
    # RGBA: only the first and last convolutions grow (7*7*64 + 64*7*7 + 1 more parameters)
    assert count_parameters(ResnetGenerator(4, 4)) == 11_378_179 + 7 * 7 * 64 * 2 + 1
    assert count_parameters(PatchDiscriminator(4)) == 2_764_737 + 4 * 4 * 64


@pytest.mark.parametrize("size", [128, 256])
def test_output_shapes(size):
    gen, disc = ResnetGenerator(), PatchDiscriminator()
    x = torch.rand(1, 3, size, size) * 2 - 1
    with torch.no_grad():
        y = gen(x)
        d = disc(x)
    assert y.shape == x.shape
    assert y.abs().max() < 1
    side = size // 8 - 2  # 30 at 256 (thesis 4.3), 14 at 128
    assert d.shape == (1, 1, side, side)


def test_rgba_generator_shape():
    gen = ResnetGenerator(4, 4, base_channels=8, num_blocks=1)
    assert gen(torch.zeros(2, 4, 32, 32)).shape == (2, 4, 32, 32)


def test_sizes_must_be_multiples_of_four():
    with pytest.raises(ValueError, match="multiples of 4"):
        ResnetGenerator(base_channels=4, num_blocks=1)(torch.zeros(1, 3, 30, 30))


def test_activation_switch():
    thesis = ResnetGenerator(base_channels=4, num_blocks=1)
    upstream = ResnetGenerator(base_channels=4, num_blocks=1, activation="relu")
    slopes = {m.negative_slope for m in thesis.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.01}
    assert not any(isinstance(m, nn.LeakyReLU) for m in upstream.modules())
    assert sum(isinstance(m, nn.ReLU) for m in upstream.modules()) == 6  # 5 outer + 1 block
    with pytest.raises(ValueError, match="activation"):
        ResnetGenerator(activation="gelu")


def test_init_is_normal_002_with_zero_bias():
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 64, 3)
    init_weights(conv)
    assert abs(conv.weight.std().item() - 0.02) < 1e-3
    assert abs(conv.weight.mean().item()) < 1e-3
    assert torch.count_nonzero(conv.bias) == 0


def test_instance_norm_is_not_affine():
    norms = [m for m in ResnetGenerator().modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(not m.affine and not m.track_running_stats for m in norms)


def test_short_budget_switches_and_partial_from_config():
    """``residual`` starts as the identity, ``keep_background`` copies the background exactly,
    ``resize_conv`` keeps shapes, and a stored config dict rebuilds the same network."""
    from occaist.models.aist.networks import build_partial

    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    x[:, :, :4] = -1.0  # background rows
    spec = {
        "_target_": "occaist.models.aist.networks.ResnetGenerator",
        "_partial_": True,
        "base_channels": 4,
        "num_blocks": 1,
        "output": "residual",
        "upsampling": "resize_conv",
        "keep_background": True,
    }
    gen = build_partial(spec, ResnetGenerator)(in_channels=3, out_channels=3)
    assert (gen(x) - x).abs().max() < 2e-3
    with torch.no_grad():  # move away from the identity: the background still stays exactly
        for p in gen.parameters():
            p.add_(0.3 * torch.randn_like(p))
    out = gen(x)
    assert torch.equal(out[:, :, :4], x[:, :, :4])
    assert (out[:, :, 4:] - x[:, :, 4:]).abs().max() > 0.05
    with pytest.raises(ValueError, match="unknown network"):
        build_partial({"_target_": "os.system"}, ResnetGenerator)
    assert build_partial(None, PatchDiscriminator) is PatchDiscriminator


def _car(paint: tuple[float, float, float]) -> torch.Tensor:
    """A uniformly painted box on the black background, (1, 3, 32, 32) in [-1, 1]."""
    x = torch.full((1, 3, 32, 32), -1.0)
    x[:, :, 10:22, 6:26] = torch.tensor(paint).view(3, 1, 1)
    return x


def test_instance_norm_hides_the_paint_brightness_unless_input_skip():
    """Why ``input_skip`` exists: the trunk's features of a bright and a dark car of one hue are
    the same (instance norm divides out the scale), so without the skip G changes both alike;
    with it, the last convolution sees the colour and can treat them differently."""
    bright, dark = _car((0.6, -0.5, 0.6)), _car((-0.2, -0.75, -0.2))
    torch.manual_seed(0)
    plain = ResnetGenerator(3, 3, 8, 2, output="residual")
    torch.manual_seed(0)
    skip = ResnetGenerator(3, 3, 8, 2, output="residual", input_skip=True)
    assert (skip(bright) - bright).abs().max() < 2e-3  # still the identity at initialisation
    assert count_parameters(skip) == count_parameters(plain) + 3 * 3 * 7 * 7
    assert "head.1.weight" in skip.state_dict() and "head.1.weight" not in plain.state_dict()
    trunk = plain.model[:-2]  # everything before the last ReflPad + conv
    a, b = trunk(bright), trunk(dark)
    assert ((a - b).norm() / a.norm()) < 0.01
    changes = {}
    for name, gen in (("plain", plain), ("skip", skip)):
        last = gen.head[1] if name == "skip" else gen.model[-1]
        with torch.no_grad():
            torch.manual_seed(1)
            last.weight.normal_(0.0, 0.05)
            residual = {
                k: torch.atanh(gen(v).clamp(-0.999, 0.999)) - torch.atanh(v.clamp(-0.999, 0.999))
                for k, v in (("bright", bright), ("dark", dark))
            }
        inside = (slice(None), slice(None), slice(12, 20), slice(8, 24))
        changes[name] = (residual["bright"][inside] - residual["dark"][inside]).abs().max()
    assert changes["plain"] < 0.01
    assert changes["skip"] > 0.05


def test_discriminator_without_instance_norm_keeps_upstream_layers():
    """``norm="none"``: upstream's layers and parameter count, no instance norm, same shape."""
    torch.manual_seed(0)
    upstream = PatchDiscriminator(3, 8, 3)
    plain = PatchDiscriminator(3, 8, 3, norm="none")
    assert count_parameters(plain) == count_parameters(upstream)
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in plain.modules())
    assert list(plain.state_dict()) == list(upstream.state_dict())
    x = _car((0.6, -0.5, 0.6))
    assert plain(x).shape == upstream(x).shape
    with pytest.raises(ValueError, match="norm must be one of"):
        PatchDiscriminator(norm="batch")
