"""Pose metrics on rotations whose angles are known by construction (about one axis, or a known
global rotation applied to every view), plus the ADD metric's per-sample values."""

from __future__ import annotations

import math

import pytest
import torch

from occaist.metrics import ADD, PoseAccuracy
from occaist.metrics.pose import (
    PoseDiagnostics,
    median_upper,
    oracle_alignment,
    quaternion_angle_deg,
    relative_pose_errors,
)


def _about(axis: tuple[float, float, float], degrees: float) -> torch.Tensor:
    half = math.radians(degrees) / 2
    n = math.sqrt(sum(a * a for a in axis))
    return torch.tensor([math.cos(half), *(math.sin(half) * a / n for a in axis)])


def _mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product, written out (w, x, y, z)."""
    w1, x1, y1, z1 = a.unbind(-1)
    w2, x2, y2, z2 = b.unbind(-1)
    return torch.stack(
        (
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ),
        -1,
    )


def test_angle_between_rotations_about_one_axis_is_the_angle_difference() -> None:
    for a, b in ((10.0, 50.0), (0.0, 170.0), (-100.0, 100.0)):
        expected = abs(b - a) if abs(b - a) <= 180 else 360 - abs(b - a)
        got = quaternion_angle_deg(_about((0, 0, 1), a), _about((0, 0, 1), b))
        assert got.item() == pytest.approx(expected, abs=1e-4)
    q = _about((1, 2, 3), 40.0)
    assert quaternion_angle_deg(q * 3.0, -q).item() == pytest.approx(0.0, abs=1e-3)


def test_pose_accuracy_threshold_median_and_mean() -> None:
    angles = [0.0, 20.0, 29.0, 31.0, 90.0]
    gt = torch.stack([_about((0, 1, 0), 0.0)] * 5)
    pred = torch.stack([_about((0, 1, 0), a) for a in angles])
    metric = PoseAccuracy(threshold_deg=30.0)
    metric.update(pred[:2], gt[:2])
    metric.update(pred[2:], gt[2:])
    out = metric.compute()
    assert out["accuracy"].item() == pytest.approx(3 / 5)
    assert out["median_deg"].item() == pytest.approx(29.0, abs=1e-3)
    assert out["mean_deg"].item() == pytest.approx(sum(angles) / 5, abs=1e-3)
    assert median_upper(torch.tensor([4.0, 1.0, 3.0, 2.0])).item() == 3.0  # upper median


def test_relative_pose_errors_of_every_pair() -> None:
    gt_angles, pred_angles = [0.0, 40.0, 100.0], [5.0, 40.0, 130.0]
    gt = torch.stack([_about((0, 0, 1), a) for a in gt_angles])
    pred = torch.stack([_about((0, 0, 1), a) for a in pred_angles])
    expected = [
        abs((pred_angles[i] - pred_angles[j]) - (gt_angles[i] - gt_angles[j]))
        for i, j in ((0, 1), (0, 2), (1, 2))
    ]
    assert relative_pose_errors(pred, gt).tolist() == pytest.approx(expected, abs=1e-3)
    assert relative_pose_errors(pred[:1], gt[:1]).numel() == 0


def test_relative_errors_ignore_a_global_rotation_and_the_oracle_finds_it() -> None:
    g = torch.Generator().manual_seed(0)
    gt = torch.nn.functional.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=-1)
    r = _about((1.0, -2.0, 0.5), 75.0).double()
    pred = _mul(gt, r.expand_as(gt))  # every view off by the same rotation r
    assert relative_pose_errors(pred, gt).abs().max().item() < 1e-3
    oracle = oracle_alignment(pred, gt)
    ref = oracle["reference_rotation"].double()
    assert min((ref - r).abs().max(), (ref + r).abs().max()).item() < 1e-4
    assert oracle["accuracy"] == 1.0
    assert oracle["median_deg"] < 1e-3
    assert oracle["errors_deg"].shape == (6,)
    # one view off by another 50 degrees: 5 of 6 within 30
    pred[0] = _mul(_mul(gt[0], _about((0, 0, 1), 50.0).double()), r)
    oracle = oracle_alignment(pred, gt)
    assert oracle["accuracy"] == pytest.approx(5 / 6)
    assert max(oracle["errors_deg"].tolist()) == pytest.approx(50.0, abs=1e-3)


def test_pose_diagnostics_relative_and_oracle_over_models() -> None:
    r = _about((0, 1, 0), 120.0)
    gt = torch.stack(
        [torch.stack([_about((0, 0, 1), a) for a in (0.0, 60.0, 170.0)]) for _ in range(2)]
    )
    pred = _mul(gt, r.expand_as(gt)).clone()
    pred[1, 2] = _mul(_mul(gt[1, 2], _about((1, 0, 0), 45.0)), r)  # one view 45 degrees off

    def computed(reference=None):
        metric = PoseDiagnostics(threshold_deg=30.0)
        metric.update(pred, gt)
        return metric.compute() if reference is None else metric.compute(reference=reference)

    out = computed()
    # pairs: model 0 has 3 exact pairs; model 1 has 1 exact and 2 at 45 degrees
    assert out["relative_accuracy"].item() == pytest.approx(4 / 6)
    assert out["relative_median_deg"].item() == pytest.approx(0.0, abs=1e-2)
    assert out["oracle_accuracy"].item() == pytest.approx(5 / 6)
    with_ref = computed(r)
    assert with_ref["accuracy"].item() == pytest.approx(5 / 6)
    assert with_ref["median_deg"].item() == pytest.approx(0.0, abs=1e-2)
    wrong_ref = computed(_about((0, 1, 0), 0.0))
    assert wrong_ref["accuracy"].item() == 0.0


def test_pose_diagnostics_second_compute_uses_its_own_reference() -> None:
    """One metric, several compute() calls: each reflects its own reference (torchmetrics would
    otherwise return the first call's cached dict until reset())."""
    r = _about((0, 1, 0), 120.0)
    gt = torch.stack([_about((0, 0, 1), a) for a in (0.0, 60.0, 170.0)]).unsqueeze(0)
    metric = PoseDiagnostics(threshold_deg=30.0)
    metric.update(_mul(gt, r.expand_as(gt)), gt)
    assert metric.compute(reference=r)["accuracy"].item() == 1.0
    wrong = metric.compute(reference=_about((0, 1, 0), 0.0))
    assert wrong["accuracy"].item() == 0.0
    assert wrong["median_deg"].item() == pytest.approx(120.0, abs=1e-3)
    assert "accuracy" not in metric.compute()


def test_add_values_are_errors_in_diameters_with_labels() -> None:
    points = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]).expand(3, -1, -1)
    eye = torch.eye(3).expand(3, -1, -1)
    t_gt = torch.zeros(3, 3)
    t_pred = torch.tensor([[0.0, 0.0, 0.1], [0.0, 0.0, 0.3], [0.0, 0.0, 2.0]])
    metric = ADD(fraction=0.1)
    assert metric.values()[0].numel() == 0
    metric.update(eye, t_pred, eye, t_gt, points, diameter=2.0, labels=torch.tensor([1, 1, 7]))
    relative, labels = metric.values()
    assert relative.tolist() == pytest.approx([0.05, 0.15, 1.0])
    assert labels.tolist() == [1, 1, 7]
    out = metric.compute()
    assert out["accuracy"].item() == pytest.approx(1 / 3)
    assert out["obj_000001"].item() == pytest.approx(0.5)
    assert out["obj_000007"].item() == 0.0
    assert out["mean_error"].item() == pytest.approx(1.2 / 3)
