"""Chamfer precision / coverage against hand-computed distances and a plain-Python brute force,
with models of different view counts (1 and 5), so "views, then models" is told apart from
"all views pooled".

Planted bugs these tests kill: views pooled across models, precision and coverage swapped,
squared distances, the scale applied twice or not at all, the mean over the wrong axis.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from occaist.metrics import ChamferDistance
from occaist.metrics.functional import chamfer_distance
from occaist.metrics.point_cloud import nearest_distances


def _nearest(source, target):
    return [min(math.dist(p, q) for q in target) for p in source]


def _brute(pred, gt):
    """(precision, coverage) of one view by plain Python: mean nearest distance each way."""
    precision = sum(_nearest(pred, gt)) / len(pred)
    coverage = sum(_nearest(gt, pred)) / len(gt)
    return precision, coverage


def test_one_view_and_five_views_are_averaged_per_model_first() -> None:
    metric = ChamferDistance(scale=1.0)
    # model A, one view: a single point 5 away (3-4-5) from its single ground-truth point
    metric.update(torch.tensor([[[0.0, 0.0, 0.0]]]), torch.tensor([[3.0, 4.0, 0.0]]))
    # model B, five views: view v is a single point v + 1 away from the ground truth
    views = torch.tensor([[[0.0, 0.0, float(v + 1)]] for v in range(5)])
    metric.update(views, torch.tensor([[0.0, 0.0, 0.0]]))
    out = metric.compute()
    # per model: A = 5, B = mean(1..5) = 3; over models (5 + 3) / 2 = 4 (pooled views: 20/6)
    assert out["precision"].item() == pytest.approx(4.0)
    assert out["coverage"].item() == pytest.approx(4.0)
    assert out["chamfer"].item() == pytest.approx(8.0)


def test_precision_and_coverage_are_not_swapped_and_not_squared() -> None:
    # pred: two points, one on the ground truth and one 2 away; gt: one point
    pred = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    gt = torch.tensor([[0.0, 0.0, 0.0]])
    precision, coverage = chamfer_distance(pred, gt)
    assert precision.item() == pytest.approx(1.0)  # (0 + 2) / 2; squared would give 2
    assert coverage.item() == pytest.approx(0.0)
    metric = ChamferDistance(scale=100.0)
    metric.update(pred, gt)  # a single (N, 3) view
    out = metric.compute()
    assert out["precision"].item() == pytest.approx(100.0)
    assert out["coverage"].item() == pytest.approx(0.0)
    assert out["chamfer"].item() == pytest.approx(100.0)


@pytest.mark.parametrize("max_elements", [5, 2**24])
def test_metric_matches_plain_python_with_uneven_view_counts(max_elements: int) -> None:
    rng = random.Random(7)
    metric = ChamferDistance(scale=100.0, max_elements=max_elements)
    per_model = []
    for n_views, n_points, n_gt in ((1, 9, 13), (5, 6, 8), (2, 11, 4)):
        gt = [[rng.uniform(-1, 1) for _ in range(3)] for _ in range(n_gt)]
        views = [
            [[rng.uniform(-1, 1) for _ in range(3)] for _ in range(n_points)]
            for _ in range(n_views)
        ]
        metric.update(torch.tensor(views, dtype=torch.float64), torch.tensor(gt))
        pairs = [_brute(view, gt) for view in views]
        per_model.append((sum(p for p, _ in pairs) / n_views, sum(c for _, c in pairs) / n_views))
    out = metric.compute()
    precision = 100 * sum(p for p, _ in per_model) / len(per_model)
    coverage = 100 * sum(c for _, c in per_model) / len(per_model)
    assert out["precision"].item() == pytest.approx(precision, rel=1e-6)
    assert out["coverage"].item() == pytest.approx(coverage, rel=1e-6)
    assert out["chamfer"].item() == pytest.approx(precision + coverage, rel=1e-6)


@pytest.mark.parametrize("max_elements", [1, 3, 2**24])
def test_nearest_distances_brute_force_in_chunks(max_elements: int) -> None:
    rng = random.Random(1)
    source = [[rng.gauss(0, 1) for _ in range(3)] for _ in range(10)]
    target = [[rng.gauss(0, 1) for _ in range(3)] for _ in range(4)]
    got = nearest_distances(torch.tensor(source), torch.tensor(target), max_elements)
    assert got.tolist() == pytest.approx(_nearest(source, target), rel=1e-5)
    with pytest.raises(ValueError, match="empty"):
        nearest_distances(torch.tensor(source), torch.zeros(0, 3))


def test_batched_pairs_each_item_with_its_own_ground_truth() -> None:
    pred = torch.tensor([[[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]])
    gts = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 3.0, 0.0]]])
    precision, coverage = chamfer_distance(pred, gts)
    assert precision.tolist() == pytest.approx([1.0, 3.0])
    assert coverage.tolist() == pytest.approx([1.0, 3.0])
    shared = chamfer_distance(pred, torch.tensor([[0.0, 2.0, 0.0]]))  # one gt for the batch
    assert shared[0].tolist() == pytest.approx([2.0, 2.0])
    with pytest.raises(ValueError):
        chamfer_distance(pred[0], gts)
