"""AIST loss terms against their formulas (thesis 4.0-4.1) and the alpha-gradient finding."""

from __future__ import annotations

import pytest
import torch

from occaist.models.aist import losses
from occaist.models.aist.losses import (
    FeatureDistance,
    alpha_loss,
    alpha_mask,
    cycle_loss,
    identity_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_lsgan_terms_by_brute_force(gen):
    real = torch.randn(2, 1, 3, 3, generator=gen)
    fake = torch.randn(3, 1, 3, 3, generator=gen)
    g = sum((1 - v) ** 2 for v in fake.flatten().tolist()) / fake.numel()
    d = (
        0.5 * sum((v - 1) ** 2 for v in real.flatten().tolist()) / real.numel()
        + 0.5 * sum(v**2 for v in fake.flatten().tolist()) / fake.numel()
    )
    assert lsgan_generator_loss(fake).item() == pytest.approx(g, rel=1e-6)
    assert lsgan_discriminator_loss(real, fake).item() == pytest.approx(d, rel=1e-6)
    # a perfect discriminator scores 0, the halved objective of a constant 0.5 guess is 0.25
    assert lsgan_discriminator_loss(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)) == 0
    half = torch.full((1, 1, 2, 2), 0.5)
    assert lsgan_discriminator_loss(half, half).item() == pytest.approx(0.25)


def test_cycle_and_identity_l1(gen):
    x = torch.rand(2, 3, 4, 4, generator=gen) * 2 - 1
    rec = torch.rand(2, 3, 4, 4, generator=gen) * 2 - 1
    l1 = sum(abs(a - b) for a, b in zip(x.flatten().tolist(), rec.flatten().tolist())) / x.numel()
    assert cycle_loss(x, rec, 10.0).item() == pytest.approx(10 * l1, rel=1e-6)
    assert identity_loss(x, rec, 10.0, 0.1).item() == pytest.approx(10 * 0.1 * l1, rel=1e-6)


def test_alpha_proxy_hard_is_the_thesis_definition():
    x = torch.full((1, 3, 2, 2), -1.0)
    x[0, 1, 0, 1] = -1.0 + 2 / 255  # darkest colour-corrected foreground in one channel
    x[0, :, 1, 1] = 0.3
    mask = alpha_mask(x, "proxy_hard", 0.1)
    assert mask.shape == (1, 1, 2, 2)
    assert mask.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]


def test_alpha_loss_is_weight_times_squared_mean_l1(gen):
    x = torch.rand(2, 3, 5, 5, generator=gen) * 2 - 1
    y = torch.rand(2, 3, 5, 5, generator=gen) * 2 - 1
    for mode in ("proxy_hard", "proxy_soft"):
        diff = (alpha_mask(x, mode, 0.1) - alpha_mask(y, mode, 0.1)).abs().mean()
        assert alpha_loss(x, y, 2.0, mode, 0.1).item() == pytest.approx(2 * diff.item() ** 2)
    # soft proxy: sigmoid((max_c x_c - tau) / T) by hand for one pixel
    pixel = x[0, :, 2, 3]
    expected = torch.sigmoid((pixel.max() - losses.PROXY_THRESHOLD) / 0.1)
    assert alpha_mask(x, "proxy_soft", 0.1)[0, 0, 2, 3].item() == pytest.approx(expected.item())


def test_channel_mode_uses_the_alpha_channel():
    x = torch.zeros(1, 4, 2, 2)
    x[0, 3] = torch.tensor([[-1.0, 1.0], [0.0, 1.0]])
    y = x.clone()
    y[0, 3, 0, 0] = 1.0  # one pixel gains full alpha: |0 - 1| = 1 over 4 pixels
    assert alpha_mask(x, "channel", 0.1).flatten().tolist() == [0.0, 1.0, 0.5, 1.0]
    assert alpha_loss(x, y, 2.0, "channel", 0.1).item() == pytest.approx(2 * (1 / 4) ** 2)
    with pytest.raises(ValueError, match="RGBA"):
        alpha_mask(torch.zeros(1, 3, 2, 2), "channel", 0.1)
    with pytest.raises(ValueError, match="alpha_mode"):
        alpha_mask(x, "nope", 0.1)


def test_proxy_soft_has_gradient_where_proxy_hard_has_none(gen):
    x = torch.full((1, 3, 4, 4), -1.0)
    x[..., 1:3, 1:3] = 0.5  # a square "car" on the background
    out = (torch.rand(1, 3, 4, 4, generator=gen) * 0.2 - 0.9).requires_grad_(True)
    grads = {}
    for mode in ("proxy_hard", "proxy_soft"):
        out.grad = None
        loss = alpha_loss(x, torch.tanh(out), 2.0, mode, 0.1)
        assert loss.item() > 0
        if loss.requires_grad:
            loss.backward()
        grads[mode] = out.grad
    assert grads["proxy_hard"] is None or torch.count_nonzero(grads["proxy_hard"]) == 0
    assert torch.count_nonzero(grads["proxy_soft"]) > 0
    # gradient descent on the soft loss moves the background towards -1
    assert grads["proxy_soft"][..., 0, 0].max() > 0


def test_feature_distance_formula_and_frozen_phi(gen):
    torch.manual_seed(0)
    distance = FeatureDistance(weights_path=None)
    x = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    g = (torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1).requires_grad_(True)
    feats = lambda t: distance.phi((((t + 1) / 2) - distance.mean) / distance.std)  # noqa: E731
    expected = 1.75 * (feats(x) - feats(g)).abs().mean() ** 2
    value = distance(x, g, 1.75)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert feats(x).shape == (2, 512, 1, 1)  # ResNet-18 minus avgpool and fc: stride 32
    value.backward()
    assert g.grad is not None and torch.count_nonzero(g.grad) > 0
    assert all(p.grad is None and not p.requires_grad for p in distance.parameters())
    distance.train()
    assert not distance.phi.training  # batch-norm statistics stay frozen
    assert distance(x, x, 1.75).item() == 0
    # RGBA input: Phi sees RGB only
    rgba = torch.cat([x, torch.ones(2, 1, 32, 32)], 1)
    assert distance(rgba, x, 1.0).item() == 0


def test_feature_distance_missing_weights_names_the_file(tmp_path):
    from occaist.utils.weights import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="resnet18"):
        FeatureDistance(weights_path=str(tmp_path / "resnet18.pth"))
