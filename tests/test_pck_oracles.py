"""PCK against oracles that do not restate the code: exact boundary cases and a plain-Python count.

Planted bugs these tests kill: ``<`` turned into ``<=`` (a keypoint exactly at ``alpha * L`` is
wrong), the occlusion count taken over all keypoints instead of the evaluated ones, the box side
taken as ``min`` or over one axis, visible and occluded buckets swapped, unlabelled keypoints
counted.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from occaist.metrics import PCK
from occaist.metrics.functional import pck

# A box 20 px wide and 8 px tall: L = max(w, h) = 20; alpha = 0.25 gives a threshold of exactly 5.
BOX = torch.tensor([[10.0, 30.0, 30.0, 38.0]])
ALPHA = 0.25


def _one_instance(offsets: list[tuple[float, float]], codes: list[int]):
    gt = torch.tensor([[[50.0 + 7 * k, 60.0 - 3 * k] for k in range(len(offsets))]])
    pred = gt + torch.tensor([offsets])
    return pred, gt, torch.tensor([codes]), BOX


def test_functional_pck_is_strict_at_the_threshold() -> None:
    # distances 5 (3-4-5 triangle, exactly at the threshold), 4.999, 0, 5.001 and 5 along y
    pred, gt, vis, box = _one_instance(
        [(3.0, 4.0), (4.999, 0.0), (0.0, 0.0), (0.0, 5.001), (0.0, -5.0)], [2, 2, 1, 1, 2]
    )
    out = pck(pred, gt, vis, box, alpha=ALPHA)
    assert out.tolist() == [[0.0, 1.0, 1.0, 0.0, 0.0]]


def test_functional_pck_uses_the_larger_box_side_and_leaves_unlabelled_out() -> None:
    # 6 px off: correct under L = 20 * 0.5 = 10, wrong if L were the height 8 * 0.5 = 4
    pred, gt, vis, box = _one_instance([(6.0, 0.0), (0.0, 6.0), (1.0, 1.0)], [2, 1, 0])
    out = pck(pred, gt, vis, box, alpha=0.5)
    assert out[0, :2].tolist() == [1.0, 1.0]
    assert math.isnan(out[0, 2].item())
    tall = torch.tensor([[0.0, 0.0, 8.0, 20.0]])  # the larger side is now the height
    assert pck(pred, gt, vis, tall, alpha=0.5)[0, :2].tolist() == [1.0, 1.0]


def test_metric_is_strict_at_the_threshold() -> None:
    pred, gt, vis, box = _one_instance(
        [(3.0, 4.0), (4.999, 0.0), (0.0, 5.0), (0.0, 0.5)], [2, 2, 1, 1]
    )
    metric = PCK(alpha=ALPHA, alphas=(ALPHA,), keypoints=None, num_keypoints=4)
    metric.update(pred, gt, vis, box)
    out = metric.compute()
    assert out["visible"].item() == pytest.approx(0.5)  # 5.0 wrong, 4.999 right
    assert out["occluded"].item() == pytest.approx(0.5)  # 5.0 wrong, 0.5 right
    assert out["all"].item() == pytest.approx(0.5)


def _brute_force(instances, keypoints, alpha):
    """Plain-Python PCK: per group, and per (group, number of occluded evaluated keypoints)."""
    hits: dict[tuple[str, int | None], int] = {}
    totals: dict[tuple[str, int | None], int] = {}
    for pred, gt, vis, box in instances:
        size = max(box[2] - box[0], box[3] - box[1])
        n_occ = sum(1 for k in keypoints if vis[k] == 1)
        for k in keypoints:
            if vis[k] == 0:
                continue
            group = "visible" if vis[k] == 2 else "occluded"
            ok = math.hypot(pred[k][0] - gt[k][0], pred[k][1] - gt[k][1]) < alpha * size
            for key in ((group, None), (group, n_occ), ("all", None), ("all", n_occ)):
                totals[key] = totals.get(key, 0) + 1
                hits[key] = hits.get(key, 0) + int(ok)
    return {key: hits[key] / totals[key] for key in totals}


def _random_instances(n: int, num_kp: int, seed: int):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x0, y0 = rng.uniform(0, 50), rng.uniform(0, 50)
        box = [x0, y0, x0 + rng.uniform(20, 80), y0 + rng.uniform(20, 80)]
        gt = [[rng.uniform(0, 100), rng.uniform(0, 100)] for _ in range(num_kp)]
        pred = [[x + rng.gauss(0, 6), y + rng.gauss(0, 6)] for x, y in gt]
        vis = [rng.choice((0, 1, 1, 2, 2, 2)) for _ in range(num_kp)]
        out.append((pred, gt, vis, box))
    return out


def _tensors(instances):
    pred = torch.tensor([i[0] for i in instances], dtype=torch.float64)
    gt = torch.tensor([i[1] for i in instances], dtype=torch.float64)
    vis = torch.tensor([i[2] for i in instances])
    box = torch.tensor([i[3] for i in instances], dtype=torch.float64)
    return pred, gt, vis, box


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_metric_matches_plain_python_on_a_keypoint_subset_in_two_updates(alpha: float) -> None:
    # 14 keypoints, 9 evaluated: the occlusion count must come from the evaluated ones only
    keypoints = [0, 2, 3, 5, 6, 8, 10, 11, 13]
    instances = _random_instances(40, 14, seed=3)
    # make sure some instances have occluded keypoints only outside the evaluated subset
    for _pred, _gt, vis, _box in instances[:10]:
        for k in range(14):
            vis[k] = 1 if k not in keypoints else 2
    expected = _brute_force(instances, keypoints, alpha)
    metric = PCK(alpha=alpha, keypoints=keypoints)
    for part in (instances[:17], instances[17:]):
        metric.update(*_tensors(part))
    out = metric.compute()
    for group in ("visible", "occluded", "all"):
        assert out[group].item() == pytest.approx(expected[(group, None)], abs=1e-6), group
    for n in range(1, len(keypoints) + 1):
        for group in ("occluded", "all"):
            key = f"{group}_{n}"
            if (group, n) in expected:
                assert out[key].item() == pytest.approx(expected[(group, n)], abs=1e-6), key
            else:
                assert math.isnan(out[key].item()), key


def test_metric_curves_match_plain_python_at_every_alpha() -> None:
    instances = _random_instances(25, 14, seed=11)
    alphas = (0.05, 0.1, 0.3)
    metric = PCK(alpha=0.1, alphas=alphas)
    metric.update(*_tensors(instances))
    curves = metric.curves()
    assert metric.alphas == sorted(alphas)
    for i, alpha in enumerate(metric.alphas):
        expected = _brute_force(instances, list(range(14)), alpha)
        for group in ("visible", "occluded", "all"):
            assert curves[group][i].item() == pytest.approx(expected[(group, None)], abs=1e-6)


def test_metric_buckets_by_occluded_count_with_known_answers() -> None:
    # instance A: 1 occluded (right) + 2 visible (1 right); instance B: 2 occluded (both wrong)
    gt = torch.zeros(2, 3, 2)
    pred = torch.tensor(
        [[[0.0, 1.0], [0.0, 1.0], [9.0, 0.0]], [[9.0, 0.0], [0.0, 9.0], [0.0, 0.0]]]
    )
    vis = torch.tensor([[1, 2, 2], [1, 1, 2]])
    box = torch.tensor([[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 20.0, 20.0]])  # threshold 2 at 0.1
    metric = PCK(alpha=0.1, alphas=(0.1,), num_keypoints=3)
    metric.update(pred, gt, vis, box)
    out = metric.compute()
    assert out["visible"].item() == pytest.approx(2 / 3)
    assert out["occluded"].item() == pytest.approx(1 / 3)
    assert out["all"].item() == pytest.approx(3 / 6)
    assert out["occluded_1"].item() == pytest.approx(1.0)
    assert out["all_1"].item() == pytest.approx(2 / 3)
    assert out["occluded_2"].item() == pytest.approx(0.0)
    assert out["all_2"].item() == pytest.approx(1 / 3)
    assert math.isnan(out["occluded_3"].item())


def test_functional_pck_on_extra_leading_dimensions() -> None:
    # (2 images, 3 instances, K = 2): each instance's own box side sets its threshold
    gt = torch.zeros(2, 3, 2, 2)
    pred = gt.clone()
    pred[..., 0, 0] = 3.0  # keypoint 0 is 3 px off everywhere
    box = torch.zeros(2, 3, 4)
    box[..., 2] = torch.tensor([[20.0, 40.0, 10.0], [40.0, 20.0, 50.0]])  # width
    box[..., 3] = 25.0  # height: L = max(width, 25)
    vis = torch.full((2, 3, 2), 2)
    out = pck(pred, gt, vis, box, alpha=0.1)  # thresholds 2.5 / 4 / 2.5 and 4 / 2.5 / 5
    assert out[..., 0].tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]
    assert out[..., 1].tolist() == [[1.0] * 3] * 2


def test_metric_defaults_keys_and_state() -> None:
    metric = PCK()
    assert metric.alpha == 0.1  # the paper's PCK@0.1
    assert 0.1 in metric.alphas
    metric.update(*_tensors(_random_instances(3, 14, seed=5)))
    out = metric.compute()
    expected = {"visible", "occluded", "all"} | {
        f"{g}_{n}" for g in ("occluded", "all") for n in range(1, 15)
    }
    assert set(out) == expected
    subset = PCK(keypoints=[1, 4, 6])
    subset.update(*_tensors(_random_instances(3, 14, seed=5)))
    assert {k for k in subset.compute() if k.startswith("all_")} == {"all_1", "all_2", "all_3"}
    # the buffers are not part of a checkpoint (the configuration rebuilds them)
    assert not any(k.endswith(("_alphas", "_keypoints")) for k in metric.state_dict())


def test_metric_states_merge_as_sums_like_ddp() -> None:
    instances = _random_instances(30, 14, seed=9)
    whole, left, right = (
        PCK(keypoints=[0, 1, 2, 5]),
        PCK(keypoints=[0, 1, 2, 5]),
        PCK(keypoints=[0, 1, 2, 5]),
    )
    whole.update(*_tensors(instances))
    left.update(*_tensors(instances[:12]))
    right.update(*_tensors(instances[12:]))
    left.merge_state(right)
    merged, single = left.compute(), whole.compute()
    assert set(merged) == set(single)
    for key, value in single.items():
        torch.testing.assert_close(merged[key], value, equal_nan=True)


def test_curves_figure_plots_percentages_per_predictor(tmp_path) -> None:
    from occaist.metrics.pck import pck_curves_figure, plot_pck_curves

    curves = {"heatmap": ([0.05, 0.1], [0.25, 0.5]), "2D-KGNN": ([0.05, 0.1], [0.5, 0.75])}
    fig = pck_curves_figure(curves, title="3/12 occluded")
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"heatmap", "2D-KGNN"}
    assert list(lines["heatmap"].get_xdata()) == [0.05, 0.1]
    assert list(lines["heatmap"].get_ydata()) == [25.0, 50.0]
    assert list(lines["2D-KGNN"].get_ydata()) == [50.0, 75.0]
    assert ax.get_title() == "3/12 occluded"
    assert ax.get_xlabel() == "alpha" and ax.get_ylabel() == "PCK (%)"
    assert ax.get_ylim() == (0.0, 100.0)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["heatmap", "2D-KGNN"]
    assert pck_curves_figure(curves).axes[0].get_title() == "PCK vs alpha"
    path = plot_pck_curves(curves, tmp_path / "sub" / "pck.png", title="t")
    assert path == tmp_path / "sub" / "pck.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((tmp_path / "sub").iterdir()) == [path]  # no temporary file left behind
