"""The stand-in input graph does not leak the answer; the keypoint evaluator's rows and files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occaist.data.keypoints import EVALUATED_KEYPOINTS, FLIP_PERMUTATION
from occaist.models.occlusion_net.kgnn import KeypointGraphNet, roi_to_image
from occaist.models.occlusion_net.stand_in import detector_like_graph, jitter_boxes


def _instances(n: int = 4000, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    boxes = torch.tensor([[100.0, 50.0, 500.0, 150.0]]).expand(n, 4)  # 400 x 100 px
    xy = boxes[:, None, :2] + torch.rand(n, 14, 2, generator=g) * torch.tensor([400.0, 100.0])
    v = torch.where(torch.rand(n, 14, generator=g) < 0.5, 1.0, 2.0)
    return torch.cat([xy, v[..., None]], -1), boxes


def test_stand_in_noise_is_isotropic_in_pixels_and_confidence_ignores_visibility() -> None:
    kps, boxes = _instances()
    head = KeypointGraphNet(use_3d=False, encoder_hidden=8, decoder_hidden=8)
    g = torch.Generator().manual_seed(1)
    nodes = detector_like_graph(head, kps, boxes, 0.05, 0.05, 0.0, 0.05, 0.05, g)
    err = roi_to_image(nodes[..., :2], boxes) - kps[..., :2]
    std = err.reshape(-1, 2).std(0)
    assert std.tolist() == pytest.approx([20.0, 20.0], rel=0.03)  # 0.05 x 400 px on both axes
    conf, occluded = nodes[..., 2], kps[..., 2] == 1
    assert float(conf.max()) <= 0.05  # never above the peak given
    # same noise -> same confidence distribution whatever the label: no visibility leak
    assert float(conf[occluded].mean()) == pytest.approx(float(conf[~occluded].mean()), rel=0.03)
    # confidence follows the localisation error
    d = err.norm(dim=-1)
    assert float(conf[d < 10].mean()) > 2 * float(conf[d > 40].mean())


def test_stand_in_swaps_left_and_right() -> None:
    kps, boxes = _instances(2000)
    kps[..., 2] = 2.0
    head = KeypointGraphNet(use_3d=False, encoder_hidden=8, decoder_hidden=8)
    g = torch.Generator().manual_seed(2)
    nodes = detector_like_graph(head, kps, boxes, 0.0, 0.0, 0.2, generator=g)
    xy = roi_to_image(nodes[..., :2], boxes)
    perm = list(FLIP_PERMUTATION)
    swapped = (xy - kps[:, perm, :2]).norm(dim=-1) < 1e-3
    assert float(swapped[:, 0].float().mean()) == pytest.approx(0.2, abs=0.03)
    assert torch.equal(swapped[:, 0], swapped[:, 1])  # a pair swaps together
    assert not swapped[:, 8].any() or torch.equal(xy[:, 8], kps[:, 8, :2])  # exhaust stays


def _gross_errors_only(
    kps: torch.Tensor, boxes: torch.Tensor, seed: int, **stand_in: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stand-in nodes with no Gaussian noise and peak confidence 1 (only the gross errors of
    ``stand_in`` move a node) -> ``(nodes (N, K, D), their pixel positions (N, K, 2))``."""
    head = KeypointGraphNet(use_3d=False, encoder_hidden=8, decoder_hidden=8)
    g = torch.Generator().manual_seed(seed)
    nodes = detector_like_graph(
        head, kps, boxes, 0.0, 0.0, confidence_peak=1.0, generator=g, **stand_in
    )
    return nodes, roi_to_image(nodes[..., :2], boxes)


def test_stand_in_gross_errors_land_in_the_roi_and_the_floor_blurs_confidence() -> None:
    """``outlier_prob``: that share of the nodes lands anywhere in the ROI (the rest keep the
    Gaussian noise); ``confidence_floor``: confidence no longer falls to 0 with the error."""
    kps, boxes = _instances(3000)
    nodes, xy = _gross_errors_only(kps, boxes, 3, outlier_prob=0.3, confidence_floor=0.4)
    moved = (xy - kps[..., :2]).norm(dim=-1) > 1e-3
    assert float(moved.float().mean()) == pytest.approx(0.3, abs=0.02)
    inside = (xy >= boxes[:, None, :2] - 1e-3) & (xy <= boxes[:, None, 2:] + 1e-3)
    assert bool(inside.all())
    assert float(xy[moved][:, 0].std()) == pytest.approx(400 / 12**0.5, rel=0.05)  # uniform
    conf = nodes[..., 2]
    assert float(conf[moved].min()) >= 0.4 * 0.5 - 1e-6  # floor times the smallest factor
    assert float(conf[~moved].mean()) > float(conf[moved].mean())


def test_stand_in_part_confusions_land_on_a_keypoint_of_the_same_part() -> None:
    """``outlier_part_share``: that share of the gross errors sits on another labelled keypoint
    of the same part (never on itself, never for the partless exhaust), with the confidence of
    a clean peak."""
    from occaist.data.keypoints import KEYPOINT_PARTS

    kps, boxes = _instances(3000)
    kps[..., 2] = 2.0
    kps[:, 3, 2] = 0.0  # an unlabelled wheel is never a landing place
    nodes, xy = _gross_errors_only(kps, boxes, 4, outlier_prob=1.0, outlier_part_share=0.5)
    dist = (xy[:, :, None] - kps[:, None, :, :2]).norm(dim=-1)  # (N, K, K)
    on_kp = dist < 1e-3
    landed = on_kp.any(-1)
    assert float(landed[:, 0].float().mean()) == pytest.approx(0.5, abs=0.04)
    target = dist.argmin(-1)
    parts = torch.tensor(KEYPOINT_PARTS)
    assert bool((parts[target[:, 0][landed[:, 0]]] == parts[0]).all())
    assert set(target[:, 0][landed[:, 0]].tolist()) == {1, 2}  # not itself, not unlabelled 3
    assert not bool(landed[:, 8].any()) and not bool(landed[:, 13].any())
    conf = nodes[..., 2]
    assert float(conf[:, 0][landed[:, 0]].mean()) > 0.7  # a clean peak, about 0.75
    assert float(conf[:, 0][~landed[:, 0]].mean()) < 0.1


def test_jittered_boxes_move_every_edge() -> None:
    boxes = torch.tensor([[100.0, 50.0, 500.0, 150.0]]).expand(1000, 4)
    out = jitter_boxes(boxes, 0.05, 0.1, torch.Generator().manual_seed(0))
    moved = (out - boxes).abs()
    assert (moved > 0.5).float().mean() > 0.95  # no edge stays pinned to the hull
    assert moved[:, 0].std() > 10 and moved[:, 1].std() > 3


def test_evaluator_rows_baselines_and_coco_ap() -> None:
    from occaist.evaluation.keypoints import KeypointEvaluator

    rng = np.random.default_rng(0)
    k = 14
    mean, basis, sigma = rng.normal(size=(k, 3)), rng.normal(size=(2, k, 3)) * 0.1, np.ones(2)
    records = []
    for i in range(12):
        gt = np.concatenate([rng.uniform(0, 100, (k, 2)), np.full((k, 1), 2.0)], 1)
        gt[: i % 6, 2] = 1.0
        perfect, off = gt[:, :2].tolist(), (gt[:, :2] + 30.0).tolist()
        records.append({
            "sample": str(i), "keypoints": gt.tolist(), "box": [0, 0, 100, 100],
            "heatmap": off, "kgnn2d": perfect, "kgnn3d": off, "kgnn3d_fit": perfect,
            "confidence": [1.0] * k,
            "visibility": (gt[:, 2] == 2).astype(float).tolist(),
            "noise": {"0": {"heatmap": off, "kgnn2d": perfect}},
        })  # fmt: skip
    ev = KeypointEvaluator(EVALUATED_KEYPOINTS, 0.1, shape_basis=(mean, basis, sigma))
    report = ev.evaluate(records, {"split": "test"})
    rows = {r["method"]: r for r in report.tables["occnet_eval"]}
    assert list(rows) == [
        "heatmap (Keypoint R-CNN)",
        "least-squares shape fit",
        "2D-KGNN",
        "3D-KGNN",
        "3D-KGNN, learned weights off",
    ]
    assert rows["2D-KGNN"]["all"] == rows["2D-KGNN"]["occluded"] == 100.0
    assert rows["3D-KGNN, learned weights off"]["all"] == 100.0
    assert rows["2D-KGNN"]["coco_AP"] == pytest.approx(100.0)
    assert rows["3D-KGNN"]["all"] == 0.0 and rows["3D-KGNN"]["coco_AP"] < 10
    assert set(rows["2D-KGNN"]) >= {"occ=1", "occ=5"}
    assert report.summary["visibility_accuracy"] == 100.0
    assert report.tables["occnet_noise"][0]["2D-KGNN"] == 100.0
    assert {"pck_curves", "pck_curves_occ1"} <= set(report.figures)
    assert len(report.samples["occnet_samples"]) == 12


def test_heatmap_script_targets_and_shapes(repo_root) -> None:
    """scripts/occnet_heatmaps.py: a keypoint's target is the cell holding it in the ROI (the
    inverse of heatmaps_to_graph's cell centre), outside or unlabelled ones are ignored."""
    import importlib.util

    from occaist.models.occlusion_net.kgnn import heatmaps_to_graph

    spec = importlib.util.spec_from_file_location(
        "occnet_heatmaps", repo_root / "scripts" / "occnet_heatmaps.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rois = torch.tensor([[10.0, 20.0, 42.0, 36.0]])  # 32 x 16 px, 8 x 8 cells
    kps = torch.zeros(1, 14, 3)
    kps[0, 0] = torch.tensor([10.5, 20.5, 2.0])  # first cell
    kps[0, 1] = torch.tensor([41.9, 35.9, 1.0])  # last cell, occluded: still a target ("all")
    kps[0, 2] = torch.tensor([50.0, 30.0, 2.0])  # outside the ROI
    kps[0, 3] = torch.tensor([20.0, 30.0, 0.0])  # unlabelled
    target = script._targets(kps, rois, 8)
    assert target[0, :4].tolist() == [0, 63, -1, -1]
    logits = torch.full((1, 14, 8, 8), -9.0)
    logits.view(1, 14, -1)[0, 1, 63] = 9.0
    centre = roi_to_image(heatmaps_to_graph(logits, use_type=False)[:, 1:2, :2], rois)
    assert (centre - kps[:, 1:2, :2]).abs().max() < 2.1  # within half a cell (4 x 2 px)
    assert script.HeatmapNet(width=8)(torch.rand(2, 3, 32, 32)).shape == (2, 14, 16, 16)


def test_heatmap_script_cross_fitting_keeps_groups_in_one_fold(repo_root) -> None:
    """Cross-fitting folds of scripts/occnet_heatmaps.py: ``sequence`` and ``car`` never split a
    group across folds (a held-out car must be unseen, as the test cars are); ``instance``
    does, which is why its held-out graphs were easier than the test ones."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "occnet_heatmaps", repo_root / "scripts" / "occnet_heatmaps.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    cars = [("a", 0), ("a", 1), ("b", 0), ("a", 0), ("c", 2), ("b", 0), ("a", 1), ("c", 2)]
    by_seq = script.fold_of(cars, 3, "sequence").tolist()
    assert by_seq == [0, 0, 1, 0, 2, 1, 0, 2]  # one sequence per fold
    by_car = script.fold_of(cars, 2, "car").tolist()
    for car in set(cars):
        assert len({f for c, f in zip(cars, by_car, strict=True) if c == car}) == 1
    assert len(set(by_car)) == 2
    by_inst = script.fold_of(cars, 2, "instance").tolist()
    assert by_inst[0] != by_inst[3]  # the same car in both folds: the leak of the old recipe
    with pytest.raises(ValueError, match="cannot fill"):
        script.fold_of(cars, 4, "sequence")


def test_heatmap_graph_mirror_keeps_nodes_and_ground_truth_aligned() -> None:
    """``flip_nodes``: a mirrored heatmap graph is the mirror image of the same instance: in the
    ROI frame node ``k`` of the flipped item is node ``FLIP_PERMUTATION[k]`` with ``x -> -x``,
    and so is its ground truth (so each node's error is mirrored with it); the box too."""
    from occaist.data.carfusion_graph import KeypointGraphDataset
    from occaist.models.occlusion_net.kgnn import image_to_roi

    g = torch.Generator().manual_seed(0)
    kps = torch.cat([torch.rand(1, 14, 2, generator=g) * 50 + 20, torch.ones(1, 14, 1)], -1)
    kps[0, :7, 2] = 2.0
    box = torch.tensor([[22.0, 21.0, 69.0, 68.0]])
    roi = torch.tensor([[15.0, 18.0, 75.0, 66.0]])  # jittered: not centred on the box
    nodes = torch.cat([torch.rand(1, 14, 2, generator=g) * 2 - 1, torch.rand(1, 14, 1)], -1)
    plain = KeypointGraphDataset(kps.numpy(), box.numpy(), 0.0, nodes.numpy(), roi.numpy())[0]
    flipped = KeypointGraphDataset(kps.numpy(), box.numpy(), 1.0, nodes.numpy(), roi.numpy())[0]
    perm = list(FLIP_PERMUTATION)
    mirror = torch.tensor([-1.0, 1.0])
    gt_plain = image_to_roi(plain["keypoints"][None, :, :2], roi)[0]
    gt_flip = image_to_roi(flipped["keypoints"][None, :, :2], roi)[0]
    assert torch.allclose(gt_flip, gt_plain[perm] * mirror, atol=1e-5)
    assert torch.allclose(flipped["nodes"][:, :2], plain["nodes"][perm, :2] * mirror)
    assert torch.equal(flipped["nodes"][:, 2], plain["nodes"][perm, 2])
    assert torch.equal(flipped["keypoints"][:, 2], plain["keypoints"][perm, 2])
    assert torch.equal(flipped["roi"], roi[0])
    box_roi = image_to_roi(flipped["box"].view(1, 2, 2), roi)[0]  # (x0, y0), (x1, y1)
    plain_box = image_to_roi(box.view(1, 2, 2), roi)[0]
    assert torch.allclose(box_roi[:, 0], -plain_box.flip(0)[:, 0], atol=1e-5)
    assert torch.allclose(box_roi[:, 1], plain_box[:, 1])


@pytest.mark.parametrize("nodes", ["occluded", "labelled"])
def test_graph_module_refine_loss_over_occluded_or_all_labelled_nodes(nodes: str) -> None:
    """``refine_loss_nodes``: ``loss_occluded`` is the mean squared ROI-frame distance of V' to
    the ground truth over the occluded nodes (upstream) or over every labelled node (ours);
    unlabelled nodes never count."""
    from functools import partial

    from occaist.models.occlusion_net.graph_module import OcclusionGraphNet

    head = KeypointGraphNet(encoder_hidden=8, decoder_hidden=8, use_3d=False)
    module = OcclusionGraphNet(
        head, partial(torch.optim.Adam), refine_loss_nodes=nodes,
        loss_weights={"loss_edges": 1.0, "loss_occluded": 1.0},
    )  # fmt: skip
    roi = torch.tensor([[0.0, 0.0, 20.0, 10.0]])
    kps = torch.zeros(1, 14, 3)
    kps[0, :, :2] = torch.tensor([10.0, 5.0])  # ROI centre: (0, 0) in the ROI frame
    kps[0, :5, 2] = 2.0  # visible
    kps[0, 5:9, 2] = 1.0  # occluded; 9..13 unlabelled
    refined = torch.zeros(1, 14, 3)
    refined[0, :5, 0] = 0.5  # visible nodes off by 0.5: counted only with "labelled"
    refined[0, 5:9, 1] = 0.2  # occluded nodes off by 0.2
    refined[0, 9:, 0] = 9.0  # unlabelled: never counted
    out = {"refined": refined, "edge_logits": torch.zeros(1, 182, 2)}
    loss = module.losses(out, {"keypoints": kps}, roi)["loss_occluded"]
    expect = 0.04 if nodes == "occluded" else (5 * 0.25 + 4 * 0.04) / 9
    assert torch.isclose(loss, torch.tensor(expect))
    with pytest.raises(ValueError, match="refine_loss_nodes"):
        OcclusionGraphNet(head, partial(torch.optim.Adam), refine_loss_nodes="visible")


def test_shape_resampling_keeps_errors_and_labels_and_changes_the_car() -> None:
    """``shape_augment``: the new ground truth is another car of the basis under the same
    camera (fitting it again gives a residual as small as before), each node keeps its error
    in the ROI frame, labels and unlabelled points stay, and probability 0 is the identity."""
    from occaist.geometry.quaternion import quaternion_rotate
    from occaist.geometry.shape_fit import fit_shape_basis
    from occaist.models.occlusion_net.kgnn import image_to_roi
    from occaist.models.occlusion_net.stand_in import resample_shapes

    g = torch.Generator().manual_seed(0)
    mean = torch.randn(14, 3, generator=g)
    basis = torch.linalg.qr(torch.randn(42, 3, generator=g))[0].T.reshape(3, 14, 3)
    sigma = torch.tensor([0.3, 0.2, 0.1])
    shape = mean + torch.einsum(
        "b,bkc->kc", torch.randn(3, generator=g), basis * sigma[:, None, None]
    )
    quat = torch.nn.functional.normalize(torch.randn(4, 4, generator=g), dim=-1)
    xy = 20 * quaternion_rotate(shape.expand(4, 14, 3), quat)[..., :2] + 100
    kps = torch.cat([xy, torch.full((4, 14, 1), 2.0)], -1)
    kps[:, 5, 2] = 1.0
    kps[:, 6] = 0.0  # unlabelled
    rois = torch.tensor([[50.0, 60.0, 150.0, 140.0]]).expand(4, 4)
    nodes = image_to_roi(xy, rois) + 0.1 * torch.randn(4, 14, 2, generator=g)
    new_kps, new_nodes = resample_shapes(kps, nodes, rois, mean, basis, sigma, 1.0, g)
    assert torch.equal(new_kps[..., 2], kps[..., 2])
    assert torch.equal(new_kps[:, 6], kps[:, 6]) and torch.equal(new_nodes[:, 6], nodes[:, 6])
    err_old = nodes - image_to_roi(kps[..., :2], rois)
    err_new = new_nodes - image_to_roi(new_kps[..., :2], rois)
    labelled = kps[..., 2] > 0
    assert torch.allclose(err_new[labelled], err_old[labelled], atol=1e-4)
    moved = (new_kps[..., :2] - kps[..., :2]).norm(dim=-1)[labelled]
    assert moved.mean() > 0.5  # another car (pixels; the car is about 40 px wide)
    w = labelled.double().numpy()
    refit = fit_shape_basis(new_kps[..., :2].double().numpy(), w, mean, basis, sigma)
    assert refit["residual"].max() < 0.2  # px: in the basis (up to the ridge), same camera model
    same_kps, same_nodes = resample_shapes(kps, nodes, rois, mean, basis, sigma, 0.0, g)
    assert torch.equal(same_kps, kps) and torch.equal(same_nodes, nodes)


def test_graph_module_shape_augment_needs_the_basis_and_moves_training_graphs(tmp_path) -> None:
    """``shape_augment`` refuses a graph head without the shape basis; with it, a training
    batch of heatmap graphs gets other ground truths with the nodes moved alike."""
    from functools import partial

    from occaist.geometry.shape_basis import ShapeBasis
    from occaist.models.occlusion_net.graph_module import OcclusionGraphNet

    with pytest.raises(ValueError, match="shape basis"):
        OcclusionGraphNet(
            KeypointGraphNet(encoder_hidden=8, decoder_hidden=8, use_3d=False),
            partial(torch.optim.Adam), shape_augment=0.5,
        )  # fmt: skip
    rng = np.random.default_rng(0)
    shapes = rng.normal(size=(30, 14, 3)) * 0.1 + rng.normal(size=(1, 14, 3))
    path = tmp_path / "basis.npz"
    ShapeBasis.fit(shapes, 3, FLIP_PERMUTATION, 2).save(path)
    head = KeypointGraphNet(encoder_hidden=8, decoder_hidden=8, hidden_3d=8, shape_basis=path)
    module = OcclusionGraphNet(head, partial(torch.optim.Adam), shape_augment=1.0)
    kps = torch.cat([torch.rand(2, 14, 2) * 50 + 25, torch.full((2, 14, 1), 2.0)], -1)
    rois = torch.tensor([[20.0, 20.0, 80.0, 80.0]] * 2)
    nodes = torch.cat([torch.rand(2, 14, 2) * 2 - 1, torch.rand(2, 14, 1)], -1)
    batch = {"keypoints": kps, "box": rois, "roi": rois, "nodes": nodes}
    out = module._augment(batch)
    delta_kp = (out["keypoints"] - kps)[..., :2] * 2 / 60  # in ROI units
    assert delta_kp.abs().max() > 1e-3
    assert torch.allclose(out["nodes"][..., :2] - nodes[..., :2], delta_kp, atol=1e-5)
    assert torch.equal(out["nodes"][..., 2], nodes[..., 2])
