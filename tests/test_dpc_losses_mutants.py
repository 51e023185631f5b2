"""DPC losses at their edges, found by `make mutation`: one-step schedules, the non-winners'
share only with several candidates, a network without weight matrices, point subsampling's
floor of one point and its generator."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from occaist.models.dpc.losses import (
    linear_schedule,
    min_projection_loss,
    subsample_points,
    weight_l2,
)


def test_schedule_of_one_step_and_of_none() -> None:
    assert linear_schedule(2.0, 4.0, 1, 1) == 4.0
    assert linear_schedule(2.0, 4.0, 0, 1) == 2.0
    assert linear_schedule(2.0, 4.0, 5, 0) == 4.0  # no steps: at the end at once


def test_non_winners_share_per_image_and_only_with_several_candidates() -> None:
    masks = torch.zeros(2, 1, 2)
    # image 0: candidates with errors 1, 2, 4; image 1: 0, 2, 2 (pixel sums of squares)
    sil = torch.tensor(
        [
            [[[1.0, 0.0]], [[1.0, 1.0]], [[2.0, 0.0]]],
            [[[0.0, 0.0]], [[1.0, 1.0]], [[0.0, 2.0**0.5]]],
        ]
    )
    loss, winner, errors = min_projection_loss(sil, masks, others_weight=0.5)
    assert winner.tolist() == [0, 0]
    torch.testing.assert_close(errors, torch.tensor([[1.0, 2.0, 4.0], [0.0, 2.0, 2.0]]))
    others = ((2.0 + 4.0) / 2 + (2.0 + 2.0) / 2) / 2
    assert loss.item() == pytest.approx(0.5 * (1.0 + 0.0) / 2 + 0.5 * 0.5 * others)
    assert min_projection_loss(sil, masks, others_weight=0.0)[0].item() == pytest.approx(0.25)
    two = min_projection_loss(sil[:, :2], masks, others_weight=0.5)[0]  # others: 2 and 2
    assert two.item() == pytest.approx(0.25 + 0.5 * 0.5 * 2.0)
    # a single candidate has no others: the weight changes nothing
    single = min_projection_loss(sil[:, :1], masks, others_weight=0.5)[0]
    assert single.item() == pytest.approx(0.25)


def test_weight_l2_of_a_network_without_weight_matrices_is_zero() -> None:
    out = weight_l2(nn.Sequential(nn.BatchNorm1d(3)))  # only 1-D scales and biases
    assert out.shape == () and out.item() == 0.0


def test_subsample_keeps_at_least_one_point_per_cloud_and_follows_the_generator() -> None:
    points = torch.arange(2 * 5 * 1, dtype=torch.float32).reshape(2, 5, 1)
    one = subsample_points(points, 0.1)  # 5 · 0.1 = 0.5 → at least 1
    assert one.shape == (2, 1, 1)
    assert [int(one[i, 0, 0]) // 5 for i in range(2)] == [0, 1]  # each from its own cloud
    a = subsample_points(points, 0.6, torch.Generator().manual_seed(3))
    b = subsample_points(points, 0.6, torch.Generator().manual_seed(3))
    assert a.shape == (2, 3, 1) and torch.equal(a, b)
    draws = {
        tuple(subsample_points(points, 0.6, torch.Generator().manual_seed(s))[0, :, 0].tolist())
        for s in range(8)
    }
    assert len(draws) > 1  # the generator decides the draw
    for cloud in range(2):  # without replacement, from the cloud's own points
        kept = a[cloud, :, 0].tolist()
        assert len(set(kept)) == 3 and all(cloud * 5 <= v < cloud * 5 + 5 for v in kept)
