"""Global alignment: torch ICP, Markley averaging, upstream's selection, applying q_ref."""

from __future__ import annotations

import pytest
import torch

from occaist.geometry.quaternion import (
    quaternion_from_axis_angle,
    quaternion_normalize,
    quaternion_rotate,
)
from occaist.metrics.pose import quaternion_angle_deg
from occaist.models.dpc.alignment import (
    AlignmentCollector,
    apply_alignment,
    icp_rotation,
    markley_average,
    select_alignment_rotations,
)


def _box_cloud(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pts = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([0.8, 0.3, 0.4])
    return pts


def test_icp_recovers_a_rotation_from_a_nearby_start() -> None:
    target = _box_cloud(600, 0)
    truth = quaternion_from_axis_angle(torch.tensor([0.2, 1.0, 0.1]), torch.tensor(0.5))
    source = quaternion_rotate(target, truth, inverse=True)  # so that R(truth)·source = target
    init = quaternion_from_axis_angle(torch.tensor([0.2, 1.0, 0.1]), torch.tensor(0.35))
    rot, rmse = icp_rotation(source, target, init, max_correspondence=0.2, iterations=50)
    assert float(quaternion_angle_deg(rot, truth)) < 1.0
    assert float(rmse) < 5e-3


def test_markley_average_is_sign_invariant_and_accurate() -> None:
    truth = quaternion_from_axis_angle(torch.tensor([1.0, -2.0, 0.5]), torch.tensor(1.1))
    g = torch.Generator().manual_seed(3)
    noisy = quaternion_normalize(truth + 0.02 * torch.randn(30, 4, generator=g))
    signs = torch.where(torch.rand(30, 1, generator=g) < 0.5, -1.0, 1.0)
    mean = markley_average(noisy * signs)
    assert mean[0] >= 0
    assert float(quaternion_angle_deg(mean, truth)) < 1.5


def test_selection_keeps_best_views_of_best_models() -> None:
    rmse = torch.tensor([[0.5, 0.1, 0.2], [0.9, 0.8, 0.7], [0.01, float("nan"), 0.02]])
    rots = torch.arange(3 * 3 * 4, dtype=torch.float32).view(3, 3, 4)
    chosen = select_alignment_rotations(rmse, rots, top_views=2, top_models=2)
    expected = torch.stack([rots[2, 0], rots[2, 2], rots[0, 1], rots[0, 2]])
    torch.testing.assert_close(chosen, expected)


def test_apply_alignment_keeps_the_camera_view_unchanged() -> None:
    points = _box_cloud(50, 1)[None]
    pose = quaternion_normalize(torch.randn(1, 4, generator=torch.Generator().manual_seed(4)))
    ref = quaternion_from_axis_angle(torch.tensor([0.0, 1.0, 0.0]), torch.tensor(0.7))
    aligned_points, aligned_pose = apply_alignment(points, pose, ref)
    # the aligned cloud seen from the aligned pose is what the camera saw before
    torch.testing.assert_close(
        quaternion_rotate(aligned_points, aligned_pose), quaternion_rotate(points, pose)
    )


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_collector_identity_when_empty_and_average_otherwise() -> None:
    collector = AlignmentCollector(top_views=1, top_models=2)
    assert collector.compute().tolist() == [1.0, 0.0, 0.0, 0.0]
    collector.reset()
    truth = quaternion_from_axis_angle(torch.tensor([0.0, 0.0, 1.0]), torch.tensor(0.3))
    for i in range(3):
        collector.update(torch.tensor([i]), torch.tensor([[0.1, 0.2]]), truth.expand(1, 2, 4))
    assert float(quaternion_angle_deg(collector.compute(), truth)) < 1e-2


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_pose_vote_picks_the_rotation_that_makes_most_validation_poses_right() -> None:
    """Six of ten models' best ICP views are flipped (their rotations sit 180° about the up axis
    from the true alignment, 2-4° apart), so the consensus takes the flipped group; with the
    validation poses (70 % right under the true alignment) the vote takes the true one."""
    from occaist.geometry.quaternion import quaternion_multiply

    up = torch.tensor([0.0, 1.0, 0.0])
    truth = quaternion_from_axis_angle(torch.tensor([1.0, 0.0, 0.0]), torch.tensor(0.4))
    flipped = quaternion_multiply(quaternion_from_axis_angle(up, torch.tensor(3.1)), truth)
    g = torch.Generator().manual_seed(0)
    gt = quaternion_normalize(torch.randn(10, 4, 4, generator=g))  # 10 models x 4 views
    # raw poses q with q ⊗ q̄_ref = gt under the truth, for 7 of every 10 views; the rest flipped
    raw = quaternion_multiply(gt, truth.expand(10, 4, 4))
    wrong = torch.rand(10, 4, generator=g) < 0.3
    raw[wrong] = quaternion_multiply(gt[wrong], flipped.expand(int(wrong.sum()), 4))
    plain = AlignmentCollector(top_views=1, top_models=10, consensus_deg=30.0)
    voting = AlignmentCollector(top_views=1, top_models=10, consensus_deg=30.0,
                                vote_threshold_deg=30.0)  # fmt: skip
    for i in range(10):
        tilt = quaternion_from_axis_angle(torch.tensor([0.0, 0.0, 1.0]), torch.tensor(0.01 * i))
        rotation = quaternion_multiply(tilt, flipped if i < 6 else truth)
        rmse = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
        for collector in (plain, voting):
            collector.update(torch.tensor([i]), rmse, rotation.expand(1, 4, 4),
                             raw[i : i + 1], gt[i : i + 1])  # fmt: skip
    assert float(quaternion_angle_deg(plain.compute(), flipped)) < 5.0  # the largest group
    assert float(quaternion_angle_deg(voting.compute(), truth)) < 5.0
