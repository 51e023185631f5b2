"""ADD / ADD-S against brute force; their accuracies; the symmetric object's flip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.utilities import dim_zero_cat

from occaist.metrics import ADD, ADDS
from occaist.metrics.functional import add_error, adds_error


def _random_rotations(n: int, gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen, dtype=torch.float64))
    return q * torch.linalg.det(q)[:, None, None]  # det +1


def _poses(b: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    Rp, Rg = _random_rotations(b, gen), _random_rotations(b, gen)
    tp, tg = (
        torch.randn(b, 3, generator=gen, dtype=torch.float64),
        torch.randn(b, 3, dtype=torch.float64, generator=gen),
    )
    return Rp, tp, Rg, tg, gen


def _brute(Rp, tp, Rg, tg, pts):
    add, adds = [], []
    for i in range(len(Rp)):
        P = [Rp[i] @ x + tp[i] for x in pts]
        G = [Rg[i] @ x + tg[i] for x in pts]
        add.append(np.mean([np.linalg.norm(p - g) for p, g in zip(P, G)]))
        adds.append(np.mean([min(np.linalg.norm(g - p) for p in P) for g in G]))
    return np.array(add), np.array(adds)


@pytest.mark.parametrize("per_sample_points", [False, True])
def test_add_and_adds_match_brute_force(per_sample_points: bool) -> None:
    Rp, tp, Rg, tg, gen = _poses(4, 0)
    pts = torch.randn(60, 3, generator=gen, dtype=torch.float64)
    add_ref, adds_ref = _brute(Rp.numpy(), tp.numpy(), Rg.numpy(), tg.numpy(), pts.numpy())
    arg = pts.expand(4, 60, 3) if per_sample_points else pts
    assert add_error(Rp, tp, Rg, tg, arg).numpy() == pytest.approx(add_ref, rel=1e-12)
    assert adds_error(Rp, tp, Rg, tg, arg).numpy() == pytest.approx(adds_ref, rel=1e-12)


def test_adds_never_exceeds_add_and_both_vanish_at_the_true_pose() -> None:
    Rp, tp, Rg, tg, gen = _poses(64, 1)
    pts = torch.randn(200, 3, generator=gen, dtype=torch.float64)
    assert torch.all(adds_error(Rp, tp, Rg, tg, pts) <= add_error(Rp, tp, Rg, tg, pts) + 1e-12)
    assert torch.all(add_error(Rg, tg, Rg, tg, pts) == 0)
    assert torch.all(adds_error(Rg, tg, Rg, tg, pts) == 0)


def test_adds_blocks_agree_with_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    import occaist.metrics.add as add_module

    Rp, tp, Rg, tg, gen = _poses(3, 2)
    pts = torch.randn(300, 3, generator=gen, dtype=torch.float64)
    whole = adds_error(Rp, tp, Rg, tg, pts)
    for chunk in (7, 2):  # 2: fewer than the batch (3) and the coordinates (3)
        monkeypatch.setattr(add_module, "_CHUNK", chunk)
        assert torch.allclose(adds_error(Rp, tp, Rg, tg, pts), whole, rtol=0, atol=0)


def test_symmetric_flip_has_zero_adds_and_large_add() -> None:
    from occaist.synth.writers.bop import object_meshes

    cone = torch.from_numpy(
        object_meshes()[3].vertices
    )  # 32-sided: a half turn maps it onto itself
    flip = torch.tensor([[-1.0, 0, 0], [0, 1, 0], [0, 0, -1]], dtype=torch.float64)[
        None
    ]  # 180° about y
    eye, t = (
        torch.eye(3, dtype=torch.float64)[None],
        torch.tensor([[0.0, 0.0, 500.0]], dtype=torch.float64),
    )
    assert adds_error(eye @ flip, t, eye, t, cone).item() == pytest.approx(0.0, abs=1e-9)
    radius = cone[:, [0, 2]].norm(dim=-1).mean()
    assert add_error(eye @ flip, t, eye, t, cone).item() == pytest.approx(
        2 * radius.item(), rel=1e-9
    )


def test_accuracy_metrics_threshold_at_a_tenth_of_the_diameter() -> None:
    pts = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0]])  # diameter 2
    eye = torch.eye(3).expand(4, 3, 3)
    shift = torch.tensor([[0.0, 0, 0.1], [0.0, 0, 0.19], [0.0, 0, 0.21], [0.0, 0, 1.0]])
    labels = torch.tensor([1, 1, 2, 2])
    metric = ADD()
    metric.update(eye, shift, eye, torch.zeros(4, 3), pts, torch.full((4,), 2.0), labels)
    out = metric.compute()
    assert out["accuracy"].item() == pytest.approx(0.5)
    assert out["obj_000001"].item() == 1.0 and out["obj_000002"].item() == 0.0
    assert out["mean_error"].item() == pytest.approx((0.1 + 0.19 + 0.21 + 1.0) / 4 / 2)


def test_metric_states_merge_like_one_process() -> None:
    """Two "ranks" merged (the "cat" reduction DDP applies) equal one process seeing everything."""
    Rp, tp, Rg, tg, gen = _poses(10, 3)
    pts = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    d = torch.full((10,), 3.0)
    labels = torch.arange(10) % 3
    whole, a, b = ADDS(0.5), ADDS(0.5), ADDS(0.5)
    whole.update(Rp, tp, Rg, tg, pts, d, labels)
    a.update(Rp[:6], tp[:6], Rg[:6], tg[:6], pts, d[:6], labels[:6])
    b.update(Rp[6:], tp[6:], Rg[6:], tg[6:], pts, d[6:], labels[6:])
    a.merge_state(b)
    for key, value in whole.compute().items():
        assert a.compute()[key].item() == pytest.approx(value.item()), key
    assert all(fx is dim_zero_cat for fx in ADD()._reductions.values())  # gathered, not averaged


def test_rotation_about_any_axis_gives_brute_force_add() -> None:
    angle = math.pi / 3
    c, s = math.cos(angle), math.sin(angle)
    R = torch.tensor([[[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    pts = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    zero = torch.zeros(1, 3, dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)[None]
    assert add_error(R, zero, eye, zero, pts).item() == pytest.approx(2 * math.sin(angle / 2))
