"""AIST loss helpers at their edges, found by `make mutation`: the RGB proxies ignore an alpha
channel; the pooled-feature wrapper keeps its normalisation out of checkpoints and its trunk
frozen in eval mode."""

from __future__ import annotations

import torch
from torch import nn

from occaist.models.aist.losses import PooledFeatures, alpha_mask


def test_proxy_alpha_reads_the_rgb_channels_only() -> None:
    x = torch.full((1, 4, 2, 2), -1.0)
    x[:, 3] = 1.0  # opaque alpha over black RGB: the proxies see background
    assert alpha_mask(x, "proxy_hard", 0.1).sum().item() == 0.0
    soft = alpha_mask(x, "proxy_soft", 0.1)
    assert soft.shape == (1, 1, 2, 2) and soft.max().item() < 0.5  # black sits at the threshold
    assert alpha_mask(x, "channel", 0.1).tolist() == [[[[1.0, 1.0], [1.0, 1.0]]]]


def test_pooled_features_buffers_stay_out_of_the_state_dict_and_trunk_stays_frozen() -> None:
    trunk = nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2))
    pooled = PooledFeatures(trunk)
    assert set(pooled.state_dict()) == {f"trunk.{k}" for k in trunk.state_dict()}
    assert pooled.train() is pooled
    assert pooled.training and not pooled.trunk.training
    pooled.train(False)
    assert not pooled.training
    assert not any(p.requires_grad for p in pooled.parameters())
    x = torch.rand(2, 4, 3, 3) * 2 - 1
    out = pooled(x)
    assert out.shape == (2, 2)
    rgb = (x[:, :3] + 1) / 2
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(out, trunk((rgb - mean) / std).mean((2, 3)))


def test_feature_distance_keeps_its_normalisation_out_of_checkpoints() -> None:
    from occaist.models.aist.losses import FeatureDistance

    phi = FeatureDistance(weights_path=None)
    assert not {"mean", "std"} & set(phi.state_dict())
    assert all(key.startswith("phi.") for key in phi.state_dict())
    assert phi.train() is phi and phi.training and not phi.phi.training
