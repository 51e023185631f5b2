"""Chamfer precision / coverage against brute-force numpy; the metric class over models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occaist.metrics import ChamferDistance
from occaist.metrics.functional import chamfer_distance


def _brute(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    d = np.sqrt(((pred[:, None, :] - gt[None, :, :]) ** 2).sum(-1))  # (N, M), Euclidean
    return float(d.min(1).mean()), float(d.min(0).mean())


@pytest.mark.parametrize("max_elements", [7, 1000, 2**24])  # tiny chunks exercise the loop
def test_chamfer_matches_brute_force(max_elements: int) -> None:
    rng = np.random.default_rng(0)
    pred, gt = rng.normal(size=(123, 3)), rng.normal(size=(77, 3)) * 0.5
    precision, coverage = chamfer_distance(
        torch.from_numpy(pred), torch.from_numpy(gt), max_elements=max_elements
    )
    expected = _brute(pred, gt)
    assert float(precision) == pytest.approx(expected[0], abs=1e-5)
    assert float(coverage) == pytest.approx(expected[1], abs=1e-5)


def test_chamfer_of_a_cloud_with_itself_is_zero_and_it_is_not_squared() -> None:
    x = torch.rand(200, 3, generator=torch.Generator().manual_seed(1))
    assert chamfer_distance(x, x) == (0.0, 0.0)
    single = torch.tensor([[0.0, 0.0, 0.0]])
    far = torch.tensor([[3.0, 4.0, 0.0]])
    precision, coverage = chamfer_distance(single, far)
    assert float(precision) == pytest.approx(5.0) and float(coverage) == pytest.approx(5.0)


def test_batched_form_equals_per_item() -> None:
    g = torch.Generator().manual_seed(2)
    pred, gt = torch.rand(3, 40, 3, generator=g), torch.rand(3, 25, 3, generator=g)
    precision, coverage = chamfer_distance(pred, gt)
    for i in range(3):
        p, c = chamfer_distance(pred[i], gt[i])
        assert float(precision[i]) == pytest.approx(float(p)) and float(coverage[i]) == (
            pytest.approx(float(c))
        )


def test_metric_averages_views_then_models_and_scales() -> None:
    rng = np.random.default_rng(3)
    metric = ChamferDistance(scale=100.0)
    per_model = []
    for n_gt in (30, 55):  # GT clouds of different sizes
        views, gt = rng.random((5, 20, 3)), rng.random((n_gt, 3))
        metric.update(torch.from_numpy(views), torch.from_numpy(gt))
        per_view = [_brute(v, gt) for v in views]
        per_model.append(np.mean(per_view, axis=0))
    out = metric.compute()
    expected = np.mean(per_model, axis=0) * 100
    assert float(out["precision"]) == pytest.approx(expected[0], abs=1e-4)
    assert float(out["coverage"]) == pytest.approx(expected[1], abs=1e-4)
    assert float(out["chamfer"]) == pytest.approx(expected.sum(), abs=1e-4)
