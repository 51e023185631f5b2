"""DPCNet: the published parameter count, output shapes and ranges, TF SAME padding."""

from __future__ import annotations

import pytest
import torch

from occaist.models.dpc.networks import DPCNet, SameConv2d

#: Upstream's parameter count at N = 8000, K = 4 (about 33.3 M, of which
#: 24.6 M in the 1024 -> 24000 point layer), recomputed layer by layer below.
UPSTREAM_PARAMS = 33_292_309


def _upstream_count(n_points: int = 8000, k: int = 4) -> int:
    convs = [(3, 16, 5), (16, 32, 3), (32, 32, 3), (32, 64, 3), (64, 64, 3), (64, 128, 3),
             (128, 128, 3), (128, 256, 3), (256, 256, 3)]  # fmt: skip
    total = sum(c_in * c_out * s * s + c_out for c_in, c_out, s in convs)
    fc = lambda i, o: i * o + o  # noqa: E731
    total += fc(4 * 4 * 256, 1024) + fc(1024, 1024)  # shared FC1, FC2
    total += fc(1024, 1024) + fc(1024, n_points * 3) + fc(1024, 1)  # ids, points, scale
    total += fc(1024, 1024)  # pose FC (ReLU)
    total += (k + 1) * (fc(1024, 32) + fc(32, 32) + fc(32, 4))  # candidates + student
    return total


def test_parameter_count_matches_upstream_within_one_percent() -> None:
    assert _upstream_count() == UPSTREAM_PARAMS
    with torch.device("meta"):  # count without allocating or initialising 33 M weights
        net = DPCNet()
    count = sum(p.numel() for p in net.parameters())
    assert abs(count - UPSTREAM_PARAMS) / UPSTREAM_PARAMS < 0.01
    assert net.point_layer.weight.numel() + net.point_layer.bias.numel() == 24_600_000


def test_small_net_shapes_and_ranges() -> None:
    net = DPCNet(image_size=32, num_points=50, num_candidates=3,
                 encoder_channels=[8, 8, 16], fc_dim=32, predict_rgb=True)  # fmt: skip
    out = net(torch.rand(5, 3, 32, 32))
    assert out["points"].shape == (5, 50, 3) and out["points"].abs().max() < 0.5
    assert out["scale"].shape == (5,) and ((out["scale"] > 0) & (out["scale"] < 1)).all()
    assert out["rgb"].shape == (5, 50, 3)
    assert out["candidates"].shape == (5, 3, 4) and out["student"].shape == (5, 4)


def test_camera_supervised_net_has_no_pose_branch() -> None:
    net = DPCNet(image_size=16, num_points=10, encoder_channels=[4, 4], fc_dim=8,
                 predict_pose=False)  # fmt: skip
    assert "candidates" not in net(torch.rand(2, 3, 16, 16))
    with pytest.raises(RuntimeError, match="predict_pose"):
        net.decode_pose(torch.rand(2, 8))


def test_image_size_must_match_the_encoder_depth() -> None:
    with pytest.raises(ValueError, match="divisible"):
        DPCNet(image_size=100)


def test_tf_same_padding_pads_bottom_right_for_stride_two() -> None:
    conv = SameConv2d(1, 1, 3, 2, tf_same=True)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 1.0  # picks the top-left input of each window
        conv.bias.zero_()
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # TF SAME with even input and stride 2: total pad 1, all at the bottom/right, so window
    # (i, j) starts at input (2i, 2j)
    assert conv(x)[0, 0].tolist() == [[0.0, 2.0], [8.0, 10.0]]


def test_selecting_student_returns_the_candidate_it_names_and_reads_a_detached_feature() -> None:
    torch.manual_seed(0)
    net = DPCNet(image_size=32, num_points=20, num_candidates=4, encoder_channels=[8, 8],
                 fc_dim=16, student_form="select", pose_init="yaw_spread")  # fmt: skip
    out = net(torch.rand(6, 3, 32, 32))
    assert out["student_logits"].shape == (6, 4)
    named = out["student_logits"].argmax(1)
    assert torch.equal(out["student"], out["candidates"][torch.arange(6), named])
    net.zero_grad()
    out["student_logits"].sum().backward()  # the selector's loss must not reach the encoder
    assert net.fc_pose.weight.grad is None and net.convs[0].weight.grad is None
    assert net.student[0].weight.grad.abs().sum() > 0


def test_unknown_student_form_is_refused() -> None:
    with pytest.raises(ValueError, match="student_form"):
        DPCNet(image_size=32, encoder_channels=[8, 8], student_form="vote")
