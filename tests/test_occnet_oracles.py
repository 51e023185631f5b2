"""Occlusion-Net module code against stubs whose answers are known.

* ``OcclusionRoIHeads._trifocal`` on cameras that see known 3D points: the loss vanishes when the
  prediction is the true projection in view 1, whatever the other views' order in the targets
  says about which camera is which (a view-2/view-3 swap of points against cameras does not).
* The evaluation path (``test_step`` -> records -> ``KeypointEvaluator``) with the graph stage
  stubbed: heatmap, 2D-KGNN and 3D-KGNN outputs that are wrong / right / half right give the
  table rows 0 / 100 / 50, so each column shows its own predictor.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from occaist.models.occlusion_net.heads import OcclusionRoIHeads
from occaist.models.occlusion_net.kgnn import image_to_roi

H, W = 120, 160  # image shape; its larger side normalises the multi-view coordinates


def _pixel_camera(yaw: float, shift: float) -> torch.Tensor:
    c, s = math.cos(yaw), math.sin(yaw)
    K = torch.tensor([[200.0, 0.0, 80.0], [0.0, 200.0, 60.0], [0.0, 0.0, 1.0]])
    R = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    t = torch.tensor([[shift], [0.1], [5.0]])
    return K @ torch.cat([R, t], dim=1)


def _project(P: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    x = (P @ torch.cat([X, torch.ones(len(X), 1)], dim=1).T).T
    return x[:, :2] / x[:, 2:]


def _trifocal_inputs():
    X = torch.tensor([[0.3, -0.2, 0.4], [-0.4, 0.3, -0.3], [0.1, 0.35, 0.2]])  # K = 3
    P1, P2, P3 = _pixel_camera(0.0, 0.0), _pixel_camera(0.35, -0.8), _pixel_camera(-0.3, 0.9)
    x1, x2, x3 = (_project(P, X) for P in (P1, P2, P3))  # (K, 2) pixels
    s = float(max(H, W))
    norm = torch.diag(torch.tensor([1.0 / s, 1.0 / s, 1.0]))
    k = len(X)
    target = {
        "camera": P1,  # this view, in pixels
        "mv_cameras": torch.stack([norm @ P2, norm @ P3])[None, None].expand(1, k, 2, 3, 4),
        "mv_points": torch.stack([x2 / s, x3 / s], dim=1)[None],  # (1, K, 2 views, 2)
        "mv_mask": torch.ones(1, k, dtype=torch.bool),
    }
    boxes = torch.tensor([[20.0, 10.0, 140.0, 110.0]])
    return x1, target, boxes


@pytest.mark.parametrize("error", ["algebraic", "transfer"])
def test_trifocal_term_of_the_roi_heads_vanishes_at_the_true_projection(error: str) -> None:
    x1, target, boxes = _trifocal_inputs()
    heads = SimpleNamespace(trifocal_error=error)
    occluded = torch.ones(1, len(x1), dtype=torch.bool)

    def loss(pixels: torch.Tensor) -> float:
        pred_roi = image_to_roi(pixels[None], boxes)
        args = (pred_roi, boxes, [torch.tensor([0])], [target], [(H, W)], occluded)
        return float(OcclusionRoIHeads._trifocal(heads, *args))

    assert loss(x1) == pytest.approx(0.0, abs=1e-6)
    assert loss(x1 + torch.tensor([4.0, -3.0])) > 1e-4
    # a keypoint not occluded here does not count
    occluded[0, 0] = False
    moved = x1.clone()
    moved[0] += 20.0
    assert loss(moved) == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------- evaluation columns
SMALL = [
    "experiment=occnet_synthetic",
    "model.net.min_size=128",
    "model.net.max_size=160",
    "model.net.graph_head.encoder_hidden=16",
    "model.net.graph_head.decoder_hidden=16",
    "model.net.graph_head.hidden_3d=16",
    "model.noise_sigmas=[]",
    "model.eval_box_jitter=[0.0,0.0]",
]


@pytest.fixture(scope="module")
def occnet(tiny_world_path: Path):
    from hydra.utils import instantiate

    from occaist.utils.compose import composed

    shape_basis = tiny_world_path / "shapenet_renders" / "synthetic" / "shape_basis.npz"
    overrides = [*SMALL, f"data.root={tiny_world_path / 'carfusion'}"]
    overrides.append(f"model.net.graph_head.shape_basis={shape_basis}")
    with composed(overrides) as cfg:
        return instantiate(cfg.model)


@pytest.fixture(scope="module")
def tiny_world_path(tiny_world: Path) -> Path:
    return tiny_world


def test_each_evaluation_column_shows_its_own_predictor(occnet, monkeypatch) -> None:
    import occaist.models.occlusion_net.module as module

    k = 14
    gt_xy = torch.stack([torch.linspace(30, 120, k), torch.linspace(20, 90, k)], -1)  # (K, 2)
    vis = torch.tensor([2, 1] * 7)
    box = torch.tensor([[20.0, 10.0, 130.0, 100.0]])  # L = 110: PCK@0.1 threshold 11 px
    keypoints = torch.cat([gt_xy, vis[:, None].float()], -1)[None]  # (1, K, 3)
    targets = [{"boxes": box, "keypoints": keypoints, "image_id": torch.tensor(7)}]
    images = [torch.zeros(3, 120, 160)]

    def stub_graph(net, imgs, rois):
        roi = torch.cat(rois)
        half = gt_xy.clone()
        half[1::2] += 40.0  # every other keypoint far off
        outs = {
            "keypoints_heatmap": image_to_roi((gt_xy + 40.0)[None], roi),  # all wrong
            "keypoints_2d": image_to_roi(gt_xy[None], roi),  # all right
            "keypoints_3d": image_to_roi(half[None], roi),  # half right
            "refined": torch.cat([image_to_roi(gt_xy[None], roi), torch.ones(1, k, 1)], -1),
            "nodes": torch.cat([image_to_roi(gt_xy[None], roi), torch.ones(1, k, 1)], -1),
            "visibility": (vis == 2).float()[None],
        }
        return outs, None

    monkeypatch.setattr(module, "graph_on_boxes", stub_graph)
    occnet.eval()
    out = occnet.test_step((images, targets), 0)
    (record,) = out["records"]
    evaluator = occnet.build_evaluator()
    evaluator.shape_basis = None  # no least-squares row: only the three predictors
    report = evaluator.evaluate(out["records"], {"split": "test"})
    rows = {row["method"]: row for row in report.tables["occnet_eval"]}
    labels = evaluator.labels
    assert rows[labels["heatmap"]]["all"] == 0.0
    assert rows[labels["kgnn2d"]]["all"] == 100.0
    assert rows[labels["kgnn2d"]]["occluded"] == 100.0
    if "kgnn3d" in record:
        assert rows[labels["kgnn3d"]]["all"] == pytest.approx(50.0, abs=100 / 12)
    torch.testing.assert_close(torch.tensor(record["kgnn2d"]), gt_xy)
    torch.testing.assert_close(torch.tensor(record["heatmap"]), gt_xy + 40.0)
    # the module's own PCK metrics (logged as test/pck_*) agree
    assert float(occnet.pck["kgnn2d"].compute()["all"]) == 1.0
    assert float(occnet.pck["heatmap"].compute()["all"]) == 0.0
