"""DPC losses and schedules against their formulas."""

from __future__ import annotations

import math

import pytest
import torch

from occaist.geometry.quaternion import quaternion_from_axis_angle
from occaist.models.dpc.losses import (
    linear_schedule,
    min_projection_loss,
    student_loss,
    student_term,
    subsample_points,
    weight_l2,
)


def test_min_projection_loss_formula_and_winner_only_gradient() -> None:
    g = torch.Generator().manual_seed(0)
    sil = torch.rand(6, 4, 5, 5, generator=g, requires_grad=True)
    masks = torch.rand(6, 5, 5, generator=g)
    loss, winner, errors = min_projection_loss(sil, masks)
    brute = torch.stack([((sil[n] - masks[n]) ** 2).sum((1, 2)) for n in range(6)])  # (6, 4)
    assert torch.equal(winner, brute.argmin(1))
    expected = 0.5 * brute.detach().min(1).values.mean()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    torch.testing.assert_close(errors, brute.detach())
    loss.backward()
    grad_norm = sil.grad.flatten(2).abs().sum(-1)  # (6, 4)
    for n in range(6):
        for k in range(4):
            assert (grad_norm[n, k] > 0) == (k == int(winner[n]))


def test_student_loss_code_form_is_sin_squared_half_angle_and_sign_invariant() -> None:
    axis = torch.tensor([0.3, -0.5, 0.8])
    angles = torch.tensor([0.0, 0.4, 1.3, 2.9])
    teacher = quaternion_from_axis_angle(axis.expand(4, 3), angles)
    student = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(4, 4)
    code = student_loss(teacher, student, "code")
    torch.testing.assert_close(code, torch.sin(angles / 2) ** 2)
    torch.testing.assert_close(student_loss(-teacher, student * 3.0, "code"), code)
    thesis = student_loss(teacher, student, "thesis")
    torch.testing.assert_close(thesis, 1 - torch.cos(angles / 2))
    assert float(student_loss(-teacher[:1], student[:1], "thesis")) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        student_loss(teacher, student, "other")


def test_student_loss_does_not_train_the_teacher() -> None:
    teacher = torch.randn(3, 4, requires_grad=True)
    student = torch.randn(3, 4, requires_grad=True)
    student_loss(teacher, student).sum().backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0


def test_weight_l2_covers_weights_not_biases() -> None:
    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.fill_(2.0)
        layer.bias.fill_(100.0)
    assert float(weight_l2(layer)) == pytest.approx(0.5 * 6 * 4.0)


def test_linear_schedules_match_upstream_endpoints() -> None:
    total = 600_000
    assert linear_schedule(3.0, 0.2, 0, total) == 3.0
    assert linear_schedule(3.0, 0.2, total // 2, total) == pytest.approx(1.6)
    assert linear_schedule(3.0, 0.2, 2 * total, total) == pytest.approx(0.2)
    assert linear_schedule(0.07, 1.0, total // 4, total) == pytest.approx(0.07 + 0.93 / 4)


def test_subsample_keeps_floor_n_keep_distinct_points_per_cloud() -> None:
    points = torch.arange(2 * 100 * 3, dtype=torch.float32).view(2, 100, 3)
    kept = subsample_points(points, 0.07, torch.Generator().manual_seed(1))
    assert kept.shape == (2, math.floor(100 * 0.07), 3)
    for b in range(2):
        rows = {tuple(r) for r in kept[b].tolist()}
        assert len(rows) == kept.shape[1] and rows <= {tuple(r) for r in points[b].tolist()}
    assert subsample_points(points, 1.0) is points


def test_subsample_keeps_features_with_their_points() -> None:
    points = torch.rand(3, 50, 3, generator=torch.Generator().manual_seed(2))
    kept = subsample_points(torch.cat((points, 2 * points), -1), 0.3)
    assert kept.shape == (3, 15, 6)
    torch.testing.assert_close(kept[..., 3:], 2 * kept[..., :3])


def test_loser_share_adds_the_mean_of_the_other_candidates_and_their_gradient() -> None:
    masks = torch.zeros(1, 2, 2)
    sil = torch.tensor([[[[1.0, 0, 0, 0]], [[1.0, 1, 0, 0]], [[1.0, 1, 1, 0]]]]).view(1, 3, 2, 2)
    sil.requires_grad_()
    # squared errors per candidate: 1, 2, 3 -> winner 0; others' mean (2 + 3) / 2 = 2.5
    loss, winner, _ = min_projection_loss(sil, masks, others_weight=0.2)
    assert int(winner) == 0
    assert float(loss) == pytest.approx(0.5 * 1 + 0.2 * 0.5 * 2.5)
    loss.backward()
    assert (sil.grad[0, 1:].abs().sum(dim=(-1, -2)) > 0).all()  # the losers learn a little


def test_student_term_regresses_the_winner_or_names_it() -> None:
    candidates = torch.nn.functional.normalize(torch.randn(3, 4, 4), dim=-1)
    winner = torch.tensor([2, 0, 3])
    regress = {"candidates": candidates, "student": candidates[torch.arange(3), winner]}
    assert student_term(regress, winner).abs().max() < 1e-6  # the student is the winner
    wrong = {"candidates": candidates, "student": candidates[torch.arange(3), (winner + 1) % 4]}
    assert student_term(wrong, winner) > 0.01
    logits = torch.full((3, 4), -20.0)
    logits[torch.arange(3), winner] = 20.0  # names every winner with certainty
    select = {"candidates": candidates, "student": candidates[:, 0], "student_logits": logits}
    assert student_term(select, winner) < 1e-6
    assert student_term(select, (winner + 1) % 4) > 10.0
