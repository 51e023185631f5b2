"""Edges of the metrics found by `make mutation`: thresholds hit exactly, defaults, empty inputs,
the chunk bound on Chamfer's distance matrices and metrics updated without labels."""

from __future__ import annotations

import pytest
import torch

from occaist.metrics import ADD, ChamferDistance, MaskXOR
from occaist.metrics.mask import mask_xor
from occaist.metrics.pck import pck
from occaist.metrics.point_cloud import chamfer_distance, nearest_distances


def test_mask_xor_cuts_soft_masks_strictly_above_the_threshold_and_keeps_bool_masks() -> None:
    reference = torch.tensor([[1.0, 1.0, 0.0, 0.0]]).reshape(1, 2, 2)
    soft = torch.tensor([[0.5, 0.9, 0.5, 0.2]]).reshape(1, 2, 2)  # 0.5 is not above 0.5
    # pred cut: [0, 1, 0, 0] against [1, 1, 0, 0]: one pixel of two
    assert mask_xor(soft, reference).tolist() == [0.5]
    # a soft reference is cut too: [0, 1, 0, 0] against [0, 1, 0, 0]
    assert mask_xor(soft, soft).tolist() == [0.0]
    assert mask_xor(reference.bool(), soft).tolist() == [1.0]
    # bool masks are taken as they are, whatever the threshold
    ref_bool, pred_bool = reference.bool(), torch.tensor([[True, False], [False, False]])[None]
    for threshold in (0.5, 1.0, -1.0):
        assert mask_xor(pred_bool, ref_bool, threshold).tolist() == [0.5]


def test_mask_metric_threshold_default_and_given() -> None:
    reference = torch.ones(1, 2, 2)
    pred = torch.full((1, 2, 2), 0.7)
    default = MaskXOR()
    default.update(pred, reference)
    assert default.compute().item() == 0.0  # 0.7 > 0.5
    strict = MaskXOR(threshold=0.8)
    strict.update(pred, reference)
    assert strict.compute().item() == 1.0  # nothing above 0.8: every reference pixel missed
    assert MaskXOR().values().shape == (0,)


def test_nearest_distances_keep_each_distance_block_under_max_elements(monkeypatch) -> None:
    g = torch.Generator().manual_seed(0)
    source, target = torch.rand(10, 3, generator=g), torch.rand(4, 3, generator=g)
    blocks: list[tuple[int, int]] = []
    cdist = torch.cdist

    def recording(a, b, *args, **kwargs):
        blocks.append((a.shape[0], b.shape[0]))
        return cdist(a, b, *args, **kwargs)

    monkeypatch.setattr(torch, "cdist", recording)
    expected = torch.stack([(target - x).norm(dim=-1).min() for x in source])
    assert torch.allclose(nearest_distances(source, target, max_elements=9), expected)
    assert blocks == [(2, 4)] * 5  # 9 // 4 = 2 source points per block
    blocks.clear()
    nearest_distances(source, target[:1], max_elements=3)  # 3 // 1 = 3 per block
    assert blocks == [(3, 1), (3, 1), (3, 1), (1, 1)]
    blocks.clear()
    chamfer_distance(source, target, max_elements=8)  # both directions
    assert blocks == [(2, 4)] * 5 + [(1, 10)] * 4
    blocks.clear()
    chamfer_distance(source[None].expand(2, 10, 3), target, max_elements=8)
    assert blocks == ([(2, 4)] * 5 + [(1, 10)] * 4) * 2
    blocks.clear()
    metric = ChamferDistance(max_elements=8)
    metric.update(source, target)
    assert blocks == [(2, 4)] * 5 + [(1, 10)] * 4


def test_nearest_distances_of_an_empty_source_and_unequal_batches() -> None:
    assert nearest_distances(torch.zeros(0, 3), torch.rand(4, 3)).shape == (0,)
    with pytest.raises(ValueError):
        chamfer_distance(torch.rand(2, 5, 3), torch.rand(3, 4, 3))


def test_chamfer_metric_default_scale_and_single_view_input() -> None:
    pred = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    gt = torch.tensor([[0.0, 0.0, 0.5]])
    metric = ChamferDistance()
    metric.update(pred, gt)  # (N, 3): one view
    # precision: mean(0.5, sqrt(1.25)); coverage: 0.5; times 100
    out = metric.compute()
    assert out["precision"].item() == pytest.approx(100 * (0.5 + 1.25**0.5) / 2, rel=1e-6)
    assert out["coverage"].item() == pytest.approx(50.0, rel=1e-6)
    views = ChamferDistance(scale=1.0)
    views.update(torch.stack([pred, pred + 1.0]), gt)  # (V, N, 3): averaged over views
    second = ((1.0 + 1.0 + 0.25) ** 0.5 + (4.0 + 1.0 + 0.25) ** 0.5) / 2
    assert views.compute()["precision"].item() == pytest.approx(
        ((0.5 + 1.25**0.5) / 2 + second) / 2, rel=1e-6
    )


def test_add_without_labels_counts_as_object_0_and_the_threshold_is_strict() -> None:
    eye = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    points = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    t_gt = torch.zeros(2, 3, dtype=torch.float64)
    t_pred = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.5]], dtype=torch.float64)
    metric = ADD(fraction=0.5)
    assert metric.values()[1].shape == (0,)
    metric.update(eye, t_pred, eye, t_gt, points, diameter=2.0)  # errors 0.5 and 0.25 diameters
    out = metric.compute()
    assert out["accuracy"].item() == 0.5  # exactly 0.5 is not below 0.5
    assert out["obj_000000"].item() == 0.5
    relative, labels = metric.values()
    assert relative.tolist() == [0.5, 0.25]
    assert labels.tolist() == [0, 0] and labels.dtype == torch.long


def test_pck_default_alpha_is_a_tenth_of_the_box_side() -> None:
    gt = torch.zeros(1, 2, 2)
    pred = torch.tensor([[[9.0, 0.0], [11.0, 0.0]]])  # 9 and 11 pixels off
    bbox = torch.tensor([[0.0, 0.0, 100.0, 50.0]])  # L = 100
    assert pck(pred, gt, torch.full((1, 2), 2), bbox).tolist() == [[1.0, 0.0]]
