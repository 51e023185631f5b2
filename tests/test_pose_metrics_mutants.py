"""Pose metrics at their edges, found by `make mutation`: default thresholds, the strict ``<`` of
the accuracy, the oracle's candidate sampling and sign convention, and the no-pair case. Expected
values come from rotations built about one axis or from a brute-force search written here."""

from __future__ import annotations

import math

import pytest
import torch

from occaist.metrics.pose import (
    PoseAccuracy,
    PoseDiagnostics,
    oracle_alignment,
)
from tests.test_pose_metrics_oracles import _mul  # the Hamilton product, written out


def _about(axis: tuple[float, float, float], degrees: float) -> torch.Tensor:
    half = math.radians(degrees) / 2
    n = math.sqrt(sum(a * a for a in axis))
    return torch.tensor([math.cos(half), *(math.sin(half) * a / n for a in axis)]).double()


def _conj(q: torch.Tensor) -> torch.Tensor:
    return q * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q.dtype)


def _angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle in degrees between the rotations of unit-or-not quaternions, via atan2 (no acos)."""
    d = _mul(_conj(a), b)
    return torch.rad2deg(2 * torch.atan2(d[..., 1:].norm(dim=-1), d[..., 0].abs()))


def _brute_force_oracle(pred: torch.Tensor, gt: torch.Tensor, candidate_views: list[int]):
    """Best ``q_ref = ḡ_i ⊗ q_i`` over ``candidate_views``: most views under 30°, then the
    smallest upper median, then the first."""
    best = None
    for order, i in enumerate(candidate_views):
        ref = _mul(_conj(gt[i]), pred[i])
        errors = _angle(_mul(pred, _conj(ref).expand_as(pred)), gt)
        key = (
            -(errors < 30.0).double().mean().item(),
            errors.sort().values[len(errors) // 2],
            order,
        )
        if best is None or key < best[0]:
            best = (key, ref / ref.norm())
    return best[1]


def _same_rotation(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.double() / a.norm(), b.double() / b.norm()
    return min((a - b).abs().max(), (a + b).abs().max()).item() < 1e-5


def _views(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(
        torch.randn(n, 4, generator=g, dtype=torch.float64), dim=-1
    )


def test_default_threshold_is_30_degrees() -> None:
    gt = torch.stack([_about((0, 0, 1), 0.0)] * 2)
    pred = torch.stack([_about((0, 0, 1), 29.5), _about((0, 0, 1), 30.5)])
    accuracy = PoseAccuracy()
    accuracy.update(pred, gt)
    assert accuracy.compute()["accuracy"].item() == 0.5
    # whichever view the oracle aligns, the other one is 30.5 degrees off
    apart = torch.stack([_about((0, 0, 1), 0.0), _about((0, 0, 1), 30.5)])
    assert oracle_alignment(apart, gt)["accuracy"] == 0.5
    diagnostics = PoseDiagnostics()
    diagnostics.update(pred[None], gt[None])  # one pair, 1 degree apart: relative error 1
    out = diagnostics.compute(reference=gt[0])
    assert out["accuracy"].item() == 0.5
    assert out["relative_accuracy"].item() == 1.0


def test_accuracy_counts_errors_strictly_below_the_threshold() -> None:
    """Identical identity quaternions have an error of exactly 0, which is not below 0."""
    identity = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 3)
    accuracy = PoseAccuracy(threshold_deg=0.0)
    accuracy.update(identity, identity)
    assert accuracy.compute()["accuracy"].item() == 0.0
    assert accuracy.compute()["median_deg"].item() == 0.0
    assert oracle_alignment(identity, identity, threshold_deg=0.0)["accuracy"] == 0.0
    diagnostics = PoseDiagnostics(threshold_deg=0.0)
    diagnostics.update(identity[None], identity[None])
    out = diagnostics.compute(reference=identity[0])
    assert out["accuracy"].item() == 0.0
    assert out["relative_accuracy"].item() == 0.0
    assert out["oracle_accuracy"].item() == 0.0


def test_oracle_tries_evenly_spaced_views_when_capped() -> None:
    """7 views, at most 3 candidates: views 0, 3 and 6 (step ceil(7 / 3) = 3); uncapped, every
    view. Views 1, 2, 4 and 5 share one offset, the candidate views have their own."""
    gt = _views(7, seed=1)
    offsets = _views(7, seed=2)
    offsets[[1, 2, 4, 5]] = _about((1.0, -2.0, 0.5), 75.0)
    pred = _mul(gt, offsets).float()
    capped = oracle_alignment(pred, gt, max_candidates=3)
    assert _same_rotation(capped["reference_rotation"], _brute_force_oracle(pred, gt, [0, 3, 6]))
    assert capped["accuracy"] < 4 / 7
    full = oracle_alignment(pred, gt)
    assert _same_rotation(full["reference_rotation"], _about((1.0, -2.0, 0.5), 75.0))
    assert full["accuracy"] == pytest.approx(4 / 7)


def test_oracle_reaches_the_last_view_and_takes_several_extra_candidates() -> None:
    """View 5's offset r is the unique best candidate: views 0-2 are 10 degrees off r about
    three different axes, views 3 and 4 far off."""
    gt = _views(6, seed=3)
    r = _about((0, 1, 0), 40.0)
    offsets = torch.stack(
        [_mul(r, _about(axis, 10.0)) for axis in ((1, 0, 0), (-1, 0, 0), (0, 0, 1))]
        + [_about((1, 0, 0), 150.0), _about((0, 0, 1), -150.0), r]
    )
    pred = _mul(gt, offsets)
    oracle = oracle_alignment(pred, gt)
    assert _same_rotation(oracle["reference_rotation"], _brute_force_oracle(pred, gt, range(6)))
    assert _same_rotation(oracle["reference_rotation"], r)
    assert oracle["accuracy"] == pytest.approx(4 / 6)
    assert oracle["median_deg"] == pytest.approx(10.0, abs=1e-3)
    extra = torch.stack([_about((0, 0, 1), 90.0), r])  # (c, 4) extra candidates
    with_extra = oracle_alignment(pred, gt, extra_candidates=extra)
    assert _same_rotation(with_extra["reference_rotation"], r)


def test_oracle_reference_is_a_unit_quaternion_with_nonnegative_w() -> None:
    gt = _views(4, seed=5)
    for r in (_about((1, 2, 3), 60.0), _about((1, 2, 3), 300.0)):  # w > 0, then w < 0
        assert r[0].item() != 0.0
        for scale in (3.0, -3.0):  # raw poses need not be unit, nor in the w > 0 half
            pred = scale * _mul(gt, r.expand_as(gt))
            oracle = oracle_alignment(pred, gt)
            ref = oracle["reference_rotation"].double()
            assert ref.norm().item() == pytest.approx(1.0, abs=1e-6)
            assert ref[0].item() > 0
            assert _same_rotation(ref, r)
            errors = oracle["errors_deg"]
            assert oracle["mean_deg"] == pytest.approx(errors.double().mean().item())
            assert oracle["mean_deg"] < 1e-3


def test_pose_diagnostics_oracle_uses_the_reference_and_the_threshold() -> None:
    """Every view 20 degrees off a common rotation r, each about its own axis: r itself puts all
    views within 30 degrees; a view's own candidate is up to 40 degrees from the others."""
    gt = _views(4, seed=6)
    r = _about((0, 0, 1), 120.0)
    axes = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0))
    pred = torch.stack([_mul(gt[i], _mul(_about(axes[i], 20.0), r)) for i in range(4)])
    without = oracle_alignment(pred, gt)
    assert without["accuracy"] < 1.0
    diagnostics = PoseDiagnostics(threshold_deg=30.0)
    diagnostics.update(pred[None].float(), gt[None].float())
    out = diagnostics.compute(reference=r.float())
    assert out["accuracy"].item() == 1.0
    assert out["oracle_accuracy"].item() == 1.0
    assert out["oracle_median_deg"].item() == pytest.approx(20.0, abs=1e-3)
    assert out["median_deg"].dtype == torch.float32
    strict = PoseDiagnostics(threshold_deg=10.0)
    strict.update(pred[None].float(), gt[None].float())
    # at 10 degrees no candidate does better than its own view
    assert strict.compute(reference=r.float())["oracle_accuracy"].item() == 0.25


def test_pose_diagnostics_relative_terms_need_a_pair() -> None:
    gt = _views(2, seed=7)
    pred = _mul(gt, _about((0, 0, 1), 30.0).expand_as(gt))
    pred[1] = _mul(pred[1], _about((0, 1, 0), 50.0))
    one_view = PoseDiagnostics()
    one_view.update(pred[None, :1].float(), gt[None, :1].float())
    out = one_view.compute()
    assert math.isnan(out["relative_accuracy"].item())
    assert math.isnan(out["relative_median_deg"].item())
    one_pair = PoseDiagnostics()
    one_pair.update(pred[None].float(), gt[None].float())
    out = one_pair.compute()
    assert out["relative_accuracy"].item() == 0.0
    assert out["relative_median_deg"].item() == pytest.approx(50.0, abs=1e-3)


def test_pose_diagnostics_rejects_unequal_batches() -> None:
    with pytest.raises(ValueError):
        PoseDiagnostics().update(_views(6, seed=8).view(2, 3, 4), _views(9, seed=9).view(3, 3, 4))
