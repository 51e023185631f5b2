"""Mask XOR ratio against brute-force numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occaist.metrics import MaskXOR
from occaist.metrics.functional import mask_xor


def test_mask_xor_matches_numpy_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    pred, ref = rng.random((6, 9, 11)), rng.random((6, 9, 11)) > 0.4
    got = mask_xor(torch.from_numpy(pred), torch.from_numpy(ref))
    expected = np.logical_xor(pred > 0.5, ref).sum((1, 2)) / ref.sum((1, 2))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


def test_mask_xor_exact_cases() -> None:
    ref = torch.zeros(8, 8, dtype=torch.bool)
    ref[2:6, 2:6] = True  # 16 pixels
    shifted = torch.roll(ref, 1, dims=1)  # 4 pixels leave, 4 enter
    assert float(mask_xor(ref, ref)) == 0.0
    assert float(mask_xor(shifted, ref)) == pytest.approx(8 / 16)
    assert float(mask_xor(torch.zeros_like(ref), ref)) == pytest.approx(1.0)


def test_metric_mean_over_images() -> None:
    rng = np.random.default_rng(1)
    pred, ref = rng.random((5, 7, 7)) > 0.5, rng.random((5, 7, 7)) > 0.3
    metric = MaskXOR()
    metric.update(torch.from_numpy(pred[:2]), torch.from_numpy(ref[:2]))
    metric.update(torch.from_numpy(pred[2:]), torch.from_numpy(ref[2:]))
    expected = (np.logical_xor(pred, ref).sum((1, 2)) / ref.sum((1, 2))).mean()
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-6)
    assert metric.values().shape == (5,)
