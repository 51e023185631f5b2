"""Occlusion-Net loss functions against numbers worked out by hand and against projective geometry.

The trifocal terms are checked with cameras that see one 3D point: the residual vanishes at the
true projection in view 1 and not elsewhere, point transfer through ``T`` lands on that
projection, and views 2 and 3 swapped against their cameras give a nonzero loss (the planted bug
of ``OcclusionRoIHeads._trifocal`` at the level of the loss).
"""

from __future__ import annotations

import math

import pytest
import torch

from occaist.geometry.multiview import project
from occaist.models.occlusion_net.losses import (
    edge_loss,
    heatmap_targets,
    masked_l2,
    reprojection_loss,
    trifocal_loss,
    trifocal_transfer,
    weighted_sum,
)


def test_heatmap_targets_visible_drops_occluded_and_all_keeps_them() -> None:
    kp = torch.tensor([[[1.0, 2.0, 2.0], [3.0, 4.0, 1.0], [5.0, 6.0, 0.0]]])
    visible = heatmap_targets(kp, "visible")
    assert visible.tolist() == [[[1.0, 2.0, 2.0], [3.0, 4.0, 0.0], [5.0, 6.0, 0.0]]]
    assert kp[0, 1, 2] == 1.0  # the input is not modified
    assert heatmap_targets(kp, "all") is kp
    with pytest.raises(ValueError, match="heatmap_loss"):
        heatmap_targets(kp, "some")


def test_edge_loss_is_the_cross_entropy_of_both_ends_visible() -> None:
    send, receive = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 0, 2])
    visible = torch.tensor([[True, True, False]])  # labels: edge 0 -> 1 visible, others not
    logits = torch.tensor([[[0.0, 2.0], [1.0, -1.0], [0.5, 0.5], [3.0, 0.0]]])
    labels = [1, 0, 0, 0]
    expected = 0.0
    for (a, b), label in zip(logits[0].tolist(), labels, strict=True):
        log_norm = math.log(math.exp(a) + math.exp(b))
        expected += log_norm - (b if label == 1 else a)
    expected /= 4
    assert edge_loss(logits, visible, send, receive).item() == pytest.approx(expected, rel=1e-6)


def test_masked_l2_mean_over_the_mask_and_zero_with_gradient_when_empty() -> None:
    pred = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]], requires_grad=True)
    target = torch.tensor([[[3.0, 4.0], [1.0, 2.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    assert masked_l2(pred, target, mask).item() == pytest.approx((25 + 1) / 2)
    empty = masked_l2(pred, target, torch.zeros(1, 3, dtype=torch.bool))
    assert empty.item() == 0.0
    empty.backward()
    assert pred.grad is not None and pred.grad.abs().sum() == 0


def _graph_out(k: int = 14) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "keypoints_3d": torch.rand(2, k, 2, generator=g).requires_grad_(True),
        "refined": torch.rand(2, k, 3, generator=g).requires_grad_(True),
        "keypoints_2d": torch.rand(2, k, 2, generator=g).requires_grad_(True),
    }


def _mean_sq(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    total, count = 0.0, 0
    for n in range(a.shape[0]):
        for k in range(a.shape[1]):
            if mask[n][k]:
                total += sum((float(a[n, k, i]) - float(b[n, k, i])) ** 2 for i in range(2))
                count += 1
    return total / max(count, 1)


@pytest.mark.parametrize("target", ["refined", "kgnn2d", "ground_truth"])
def test_reprojection_loss_targets_and_excluded_keypoints(target: str) -> None:
    out = _graph_out()
    gt = torch.rand(2, 14, 2, generator=torch.Generator().manual_seed(1))
    labelled = torch.ones(2, 14, dtype=torch.bool)
    labelled[0, :5] = False
    keep = torch.ones(2, 14, dtype=torch.bool)
    keep[:, [8, 13]] = False
    goal = {"refined": out["refined"][..., :2], "kgnn2d": out["keypoints_2d"], "ground_truth": gt}
    mask = keep & labelled if target == "ground_truth" else keep
    expected = _mean_sq(out["keypoints_3d"], goal[target], mask)
    value = reprojection_loss(out, gt, labelled, target)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    other = reprojection_loss(out, gt, labelled, target, exclude=(0,))
    keep_other = torch.ones(2, 14, dtype=torch.bool)
    keep_other[:, 0] = False
    mask_other = keep_other & labelled if target == "ground_truth" else keep_other
    assert other.item() == pytest.approx(
        _mean_sq(out["keypoints_3d"], goal[target], mask_other), rel=1e-5
    )
    with pytest.raises(ValueError, match="reprojection_target"):
        reprojection_loss(out, gt, labelled, "heatmap")


def test_reprojection_loss_detach_stops_the_gradient_into_the_2d_target() -> None:
    for detach, expect_grad in ((False, True), (True, False)):
        out = _graph_out()
        labelled = torch.ones(2, 14, dtype=torch.bool)
        reprojection_loss(
            out, torch.zeros(2, 14, 2), labelled, "refined", detach=detach
        ).backward()
        grad = out["refined"].grad
        assert (grad is not None and bool(grad.abs().sum() > 0)) is expect_grad
        assert out["keypoints_3d"].grad.abs().sum() > 0


def _camera(yaw: float, shift: float) -> torch.Tensor:
    """A 3x4 pinhole camera (f = 1) turned by ``yaw`` about y and moved along x."""
    c, s = math.cos(yaw), math.sin(yaw)
    R = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=torch.float64)
    t = torch.tensor([[shift], [0.1], [4.0]], dtype=torch.float64)
    return torch.cat([R, t], dim=1)


CAMERAS = (_camera(0.0, 0.0), _camera(0.3, -0.5), _camera(-0.25, 0.7))
POINTS = torch.tensor([[0.2, -0.1, 0.3], [-0.3, 0.25, -0.2]], dtype=torch.float64)


def _views() -> tuple[torch.Tensor, ...]:
    """Shapes of trifocal_loss for N = 1 instance and K = 2 keypoints."""
    P1, P2, P3 = CAMERAS
    x1, x2, x3 = (project(P, POINTS) for P in CAMERAS)  # (2, 2) each
    return (
        x1[None],
        P1[None],
        P2.expand(1, 2, 3, 4),
        P3.expand(1, 2, 3, 4),
        x2[None],
        x3[None],
    )


def test_trifocal_transfer_lands_on_the_projection_in_view_one() -> None:
    from occaist.geometry.multiview import normalize_trifocal, trifocal_tensor

    x1, P1, P2, P3, x2, x3 = _views()
    T = normalize_trifocal(trifocal_tensor(P1[0], P2[0, 0], P3[0, 0]))
    moved = trifocal_transfer(T, x2[0], x3[0])
    torch.testing.assert_close(moved, x1[0], atol=1e-8, rtol=0)


@pytest.mark.parametrize("error", ["algebraic", "transfer"])
def test_trifocal_loss_zero_at_the_truth_positive_off_it_and_with_swapped_views(
    error: str,
) -> None:
    x1, P1, P2, P3, x2, x3 = _views()
    mask = torch.tensor([[True, True]])
    at_truth = trifocal_loss(x1, P1, P2, P3, x2, x3, mask, error=error)
    assert at_truth.item() == pytest.approx(0.0, abs=1e-12)
    off = trifocal_loss(x1 + 0.05, P1, P2, P3, x2, x3, mask, error=error)
    assert off.item() > 1e-6
    swapped = trifocal_loss(x1, P1, P2, P3, x3, x2, mask, error=error)  # points vs cameras
    assert swapped.item() > 1e-6
    with pytest.raises(ValueError, match="trifocal error"):
        trifocal_loss(x1, P1, P2, P3, x2, x3, mask, error="geometric")


def test_trifocal_transfer_loss_is_the_squared_offset_in_roi_units() -> None:
    x1, P1, P2, P3, x2, x3 = _views()
    mask = torch.tensor([[True, False]])  # only keypoint 0 counts
    offset = torch.tensor([[[0.01, -0.02], [9.0, 9.0]]], dtype=torch.float64)
    plain = trifocal_loss(x1 + offset, P1, P2, P3, x2, x3, mask, error="transfer")
    assert plain.item() == pytest.approx(0.01**2 + 0.02**2, rel=1e-6)
    scale = torch.tensor([[2.0, 3.0]], dtype=torch.float64)
    scaled = trifocal_loss(x1 + offset, P1, P2, P3, x2, x3, mask, "transfer", roi_scale=scale)
    assert scaled.item() == pytest.approx(0.02**2 + 0.06**2, rel=1e-6)


def test_trifocal_loss_with_an_empty_mask_is_zero_with_gradient() -> None:
    x1, P1, P2, P3, x2, x3 = _views()
    pred = x1.clone().requires_grad_(True)
    value = trifocal_loss(pred, P1, P2, P3, x2, x3, torch.zeros(1, 2, dtype=torch.bool))
    assert value.item() == 0.0
    value.backward()
    assert pred.grad is not None


def test_weighted_sum_uses_each_weight_and_refuses_an_unweighted_loss() -> None:
    losses = {"a": torch.tensor(2.0), "b": torch.tensor(5.0)}
    assert weighted_sum(losses, {"a": 3.0, "b": 0.5, "c": 9.0}).item() == pytest.approx(8.5)
    with pytest.raises(KeyError, match="'b'"):
        weighted_sum(losses, {"a": 1.0})
