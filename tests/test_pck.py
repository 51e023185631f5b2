"""PCK against a brute-force loop; unlabelled keypoints excluded; bucketed counts; curves."""

from __future__ import annotations

import math

import torch

from occaist.data.keypoints import EVALUATED_KEYPOINTS
from occaist.metrics import PCK
from occaist.metrics.functional import pck
from occaist.metrics.pck import plot_pck_curves


def _random_batch(n: int, k: int = 14, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(n, k, 2, generator=g) * 100
    pred = gt + torch.randn(n, k, 2, generator=g) * 8
    vis = torch.randint(0, 3, (n, k), generator=g)
    x0y0 = torch.rand(n, 2, generator=g) * 20
    wh = torch.rand(n, 2, generator=g) * 80 + 20
    return pred, gt, vis, torch.cat([x0y0, x0y0 + wh], 1)


def _brute(pred, gt, vis, bbox, alpha, code, n_occ=None):
    hits = total = 0
    for i in range(pred.shape[0]):
        kps = EVALUATED_KEYPOINTS
        occ = sum(int(vis[i, k]) == 1 for k in kps)
        if n_occ is not None and occ != n_occ:
            continue
        size = max(float(bbox[i, 2] - bbox[i, 0]), float(bbox[i, 3] - bbox[i, 1]))
        for k in kps:
            v = int(vis[i, k])
            if v == 0 or (code is not None and v != code):
                continue
            d = math.dist(pred[i, k].tolist(), gt[i, k].tolist())
            hits += d < alpha * size
            total += 1
    return hits / total if total else float("nan")


def test_functional_pck_excludes_unlabelled() -> None:
    pred, gt, vis, bbox = _random_batch(6)
    out = pck(pred, gt, vis, bbox, alpha=0.1)
    assert out.shape == vis.shape
    assert torch.isnan(out[vis == 0]).all()
    size = (bbox[:, 2:] - bbox[:, :2]).amax(1)
    expected = ((pred - gt).norm(dim=-1) < 0.1 * size[:, None]).float()
    assert torch.equal(out[vis > 0], expected[vis > 0])


def test_metric_matches_brute_force_in_two_updates() -> None:
    pred, gt, vis, bbox = _random_batch(40)
    metric = PCK(alpha=0.1, alphas=[0.05, 0.2], keypoints=EVALUATED_KEYPOINTS)
    metric.update(pred[:15], gt[:15], vis[:15], bbox[:15])
    metric.update(pred[15:], gt[15:], vis[15:], bbox[15:])
    res = metric.compute()
    for key, code in (("visible", 2), ("occluded", 1), ("all", None)):
        assert math.isclose(float(res[key]), _brute(pred, gt, vis, bbox, 0.1, code), rel_tol=1e-6)
    for n in range(1, 13):
        want = _brute(pred, gt, vis, bbox, 0.1, 1, n_occ=n)
        got = float(res[f"occluded_{n}"])
        assert (math.isnan(want) and math.isnan(got)) or math.isclose(got, want, rel_tol=1e-6)
        want_all = _brute(pred, gt, vis, bbox, 0.1, None, n_occ=n)
        got_all = float(res[f"all_{n}"])
        assert (math.isnan(want_all) and math.isnan(got_all)) or math.isclose(
            got_all, want_all, rel_tol=1e-6
        )
    curves = metric.curves()
    assert metric.alphas == [0.05, 0.1, 0.2]
    assert math.isclose(
        float(curves["all"][2]), _brute(pred, gt, vis, bbox, 0.2, None), rel_tol=1e-6
    )
    assert (curves["all"].diff() >= 0).all()  # monotone in alpha


def test_unlabelled_are_not_counted_as_occluded() -> None:
    gt = torch.zeros(1, 14, 2)
    pred = gt.clone()
    vis = torch.full((1, 14), 2)
    vis[0, :4] = 0  # unlabelled and far off: upstream's helper would count these as occluded
    pred[0, :4] = 1000.0
    metric = PCK()
    metric.update(pred, gt, vis, torch.tensor([[0.0, 0.0, 50.0, 40.0]]))
    res = metric.compute()
    assert float(res["all"]) == 1.0 and math.isnan(float(res["occluded"]))


def test_plot_curves(tmp_path) -> None:
    path = plot_pck_curves({"heatmap": ([0.05, 0.1], [0.2, 0.5])}, tmp_path / "pck.png")
    assert path.is_file() and path.stat().st_size > 0
