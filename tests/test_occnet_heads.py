"""The torchvision RoIHeads subclass: loss modes, inference outputs, weights from local files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from occaist.geometry.multiview import project, trifocal_tensor
from occaist.models.occlusion_net.heads import (
    MissingCamerasError,
    build_occlusion_rcnn,
    keypoints_on_boxes,
)
from occaist.models.occlusion_net.kgnn import KeypointGraphNet
from occaist.models.occlusion_net.losses import trifocal_loss, trifocal_transfer
from tests.test_carfusion import _datamodule, _three_cams, write_tiny_carfusion


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return write_tiny_carfusion(tmp_path_factory.mktemp("occ_heads"))


@pytest.fixture(scope="module")
def batch(world: Path):
    dm = _datamodule(world, multiview=True, flip_prob=0.5)
    dm.setup("fit")
    image, target = dm.datasets["train"][0]
    return [image], [target]


def _model(world: Path, **kw):
    torch.manual_seed(0)
    head = KeypointGraphNet(
        encoder_hidden=16, decoder_hidden=16, hidden_3d=16,
        shape_basis=str(world / "shapenet_renders" / "synthetic" / "shape_basis.npz"),
    )  # fmt: skip
    args = dict(backbone="resnet18", min_size=96, max_size=128, box_batch_size_per_image=16)
    args.update(kw)
    return build_occlusion_rcnn(head, **args)


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("annotated", "algebraic"),
        ("triangulated", "algebraic"),
        ("trifocal", "algebraic"),
        ("trifocal", "transfer"),
    ],
)
def test_training_losses_per_mode(world: Path, batch, mode: str, error: str) -> None:
    model = _model(world, occluded_loss=mode, trifocal_error=error).train()
    losses = model(*batch)
    assert {"loss_keypoint", "loss_edges", "loss_occluded", "loss_reprojection"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss_occluded"].backward()
    grads = [p.grad for p in model.roi_heads.graph_head.decoder.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_trifocal_without_cameras_raises(world: Path, batch) -> None:
    images, targets = batch
    bare = [{k: targets[0][k] for k in ("boxes", "labels", "keypoints")}]
    with pytest.raises(MissingCamerasError, match="annotated"):
        _model(world, occluded_loss="trifocal").train()(images, bare)


def test_heatmap_loss_visible_only_differs_from_all(world: Path, batch) -> None:
    torch.manual_seed(1)
    vis = _model(world, heatmap_loss="visible").train()(*batch)["loss_keypoint"]
    torch.manual_seed(1)
    every = _model(world, heatmap_loss="all").train()(*batch)["loss_keypoint"]
    assert not torch.isclose(vis, every)


def test_inference_outputs_deterministic(world: Path, batch) -> None:
    model = _model(world, box_detections_per_img=5).eval()
    images, targets = batch
    with torch.no_grad():
        out = model(images)[0]
    for key in ("keypoints", "keypoints_heatmap", "keypoints_kgnn3d"):
        assert out[key].shape[1:] == (14, 3)
    first = keypoints_on_boxes(model, images, [targets[0]["boxes"]])[0]
    second = keypoints_on_boxes(model, images, [targets[0]["boxes"]])[0]
    assert first["keypoints"].shape == (len(targets[0]["boxes"]), 14, 3)
    assert torch.equal(first["keypoints"], second["keypoints"])
    # heatmap keypoints lie in their box (cell centres of the 56x56 grid, original pixels)
    box = targets[0]["boxes"][:, None]
    xy = first["keypoints_heatmap"][..., :2]
    assert ((xy >= box[..., :2] - 1e-3) & (xy <= box[..., 2:] + 1e-3)).all()


def test_backbone_weights_from_local_file(world: Path, tmp_path: Path) -> None:
    ref = resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    model = _model(world, weights_backbone=str(path))
    assert torch.equal(model.backbone.body.conv1.weight, ref.conv1.weight)
    with pytest.raises(FileNotFoundError, match="resnet18"):
        _model(world, weights_backbone=str(tmp_path / "missing.pth"))


def test_trifocal_loss_zero_at_truth() -> None:
    P1, P2, P3 = _three_cams()
    X = torch.tensor([[[0.2, 0.5, -0.3], [1.0, 0.8, 0.4]]], dtype=torch.float64)  # (1, 2, 3)
    s = 160.0
    norm = torch.diag(torch.tensor([1 / s, 1 / s, 1.0], dtype=torch.float64))
    cams = [norm @ P for P in (P1, P2, P3)]
    x1, x2, x3 = (project(P, X) for P in cams)
    mask = torch.tensor([[True, True]])
    P23 = [P.expand(1, 2, 3, 4) for P in cams[1:]]
    exact = trifocal_loss(x1, cams[0][None], *P23, x2, x3, mask)
    pred = (x1 + 0.05).requires_grad_(True)
    wrong = trifocal_loss(pred, cams[0][None], *P23, x2, x3, mask)
    assert exact < 1e-12 < wrong
    wrong.backward()
    assert pred.grad.abs().sum() > 0
    # point transfer recovers view 1 exactly; the transfer error is the squared distance to it
    T = trifocal_tensor(cams[0].expand(2, 3, 4), cams[1].expand(2, 3, 4), cams[2].expand(2, 3, 4))
    assert torch.allclose(trifocal_transfer(T, x2[0], x3[0]), x1[0], atol=1e-9)
    transfer = trifocal_loss(x1 + 0.05, cams[0][None], *P23, x2, x3, mask, error="transfer")
    assert torch.isclose(transfer, torch.tensor(2 * 0.05**2, dtype=torch.float64))


def test_trifocal_error_modes_give_different_losses(world: Path, batch) -> None:
    """``trifocal_error`` reaches the loss: the same model and input, two different values."""
    values = {}
    for error in ("algebraic", "transfer"):
        model = _model(world, occluded_loss="trifocal", trifocal_error=error).train()
        torch.manual_seed(1)
        values[error] = model(*batch)["loss_occluded"].item()
    assert values["algebraic"] > 0 and values["transfer"] > 0
    assert abs(values["algebraic"] - values["transfer"]) > 1e-3 * values["transfer"]


def test_reprojection_target_modes() -> None:
    """``refined`` pulls to V' everywhere (upstream, not detached), ``kgnn2d`` to the replaced
    prediction, ``ground_truth`` to labelled points; exhaust and centre never count."""
    from occaist.models.occlusion_net.losses import reprojection_loss

    proj = torch.zeros(1, 14, 2)
    refined = torch.ones(1, 14, 3, requires_grad=True)
    out = {"keypoints_3d": proj, "refined": refined, "keypoints_2d": torch.full((1, 14, 2), 2.0)}
    gt = torch.full((1, 14, 2), 3.0)
    lab = torch.zeros(1, 14, dtype=torch.bool)
    lab[0, :3] = True
    assert float(reprojection_loss(out, gt, lab, "refined")) == pytest.approx(2.0)
    assert float(reprojection_loss(out, gt, lab, "kgnn2d")) == pytest.approx(8.0)
    assert float(reprojection_loss(out, gt, lab, "ground_truth")) == pytest.approx(18.0)
    reprojection_loss(out, gt, lab, "refined").backward()
    assert refined.grad[0, 0, 0] != 0 and refined.grad[0, 8].abs().sum() == 0
    refined.grad = None
    assert not reprojection_loss(out, gt, lab, "refined", detach=True).requires_grad
