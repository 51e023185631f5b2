"""The shape-consistency term of DPC (ours, ``model.shape_consistency_weight``)."""

from __future__ import annotations

import pytest
import torch

from occaist.models.dpc.losses import shape_consistency_loss


def test_shape_consistency_is_zero_for_one_cloud_and_sees_a_turned_view() -> None:
    """Views of one model with the same cloud cost nothing (in any point order); a view whose
    cloud is turned 180° about the up axis costs the brute-force Chamfer distance to its turned
    copy; the cost flows back into that view's cloud."""
    g = torch.Generator().manual_seed(0)
    car = torch.rand(40, 3, generator=g) * torch.tensor([1.0, 0.3, 0.5]) - 0.5
    car[:10, 0] += 0.4  # a longer nose: front and back differ
    shuffled = car[torch.randperm(40, generator=g)]
    same = torch.stack((car, shuffled, car))[None]  # (1, 3, 40, 3)
    assert float(shape_consistency_loss(same, None)) == pytest.approx(0.0, abs=1e-6)
    turned = car * torch.tensor([-1.0, 1.0, -1.0])
    views = torch.stack((car, car, turned))[None].requires_grad_()
    d = torch.linalg.norm(car[:, None] - turned[None], dim=-1)
    pair = float(d.min(1).values.mean() + d.min(0).values.mean())
    loss = shape_consistency_loss(views, None)
    assert float(loss) == pytest.approx(pair / 2, rel=1e-5)  # pairs (0, 1): 0 and (0, 2)
    loss.backward()
    assert float(views.grad[0, 2].abs().sum()) > 0
    assert float(shape_consistency_loss(views[:, :1], None)) == 0.0  # one view: nothing to compare


def test_shape_consistency_compares_views_of_the_same_model_only() -> None:
    """Two models, each consistent across its views but different from each other: zero."""
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(30, 3, generator=g), torch.rand(30, 3, generator=g) + 2.0
    points = torch.stack((torch.stack((a, a)), torch.stack((b, b))))  # (2, 2, 30, 3)
    assert float(shape_consistency_loss(points, None)) == pytest.approx(0.0, abs=1e-6)
    assert float(shape_consistency_loss(points, 10)) == pytest.approx(0.0, abs=0.5)  # subsets
